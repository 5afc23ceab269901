"""`GET /v1/users/{u}/export` builds its zip in a temp folder; no request leaves one behind,
whether it fails (unknown user, a blob gone missing) or succeeds (sent from an open handle,
the folder removed before the response)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.api.conftest import Live
from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import NotFoundError, UnipgenError
from unipgen.memory import BlobStore

FACE = PERSONA_SAMPLE / "faces" / "s1-1.pgm"


@pytest.fixture
def tmpdir_of_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp dir of its own for the service (it runs in this process): what is left there is
    what the requests left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def leftovers(folder: Path, wait_s: float = 0.0) -> list[str]:
    deadline = time.monotonic() + wait_s
    while True:
        left = sorted(p.name for p in folder.glob("unipgen-export-*"))
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def test_failed_exports_leave_no_temp_folder(live: Live, tmpdir_of_service: Path) -> None:
    with live.client() as client:
        for _ in range(5):
            with pytest.raises(NotFoundError):
                client.export_user("nobody-here")
        assert leftovers(tmpdir_of_service) == []
        client.create_user("leaky")
        blobs = BlobStore(live.settings.resolved_blob_url())  # a folder, or a prefix on the S3 server
        before = set(blobs.list())
        client.add_face("leaky", "f1", FACE, consent=True)
        [photo] = set(blobs.list()) - before
        blobs.delete(photo)  # lost behind the store's back
        with pytest.raises(UnipgenError):  # the zip cannot be finished: a server error
            client.export_user("leaky")
        assert leftovers(tmpdir_of_service) == []


def test_a_sent_export_leaves_no_temp_folder(live: Live, tmpdir_of_service: Path) -> None:
    with live.client() as client:
        client.create_user("exported")
        assert client.export_user("exported")[:2] == b"PK"
        assert leftovers(tmpdir_of_service) == []  # gone before the response was sent
