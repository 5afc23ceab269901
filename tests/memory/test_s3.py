"""Blobs on an S3-compatible server (moto on loopback, `tests/s3server.py`) through the product's
own path: `UNIPGEN_BLOB_URL=s3://...`, fsspec and s3fs. The store's whole suite runs so too (the
`postgres+s3` leg of the `settings` fixture); these tests cover what only a shared object store
has: other clients writing and deleting in the same bucket, objects written in place, a forget
checked on the server itself, and users moved between S3 and local stores."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.helpers import png_bytes, unit, wav_bytes
from tests.s3server import S3Server
from unipgen.memory import BlobStore, MemoryStore
from unipgen.settings import Settings

if TYPE_CHECKING:
    import s3fs

pytestmark = pytest.mark.scale


@pytest.fixture
def other(s3: S3Server) -> s3fs.S3FileSystem:
    """Another client of the bucket, as another process has: its own connection, its own caches."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def objects(client: s3fs.S3FileSystem, url: str) -> set[str]:
    """The objects under a store's prefix, as the server lists them (`ab/abcd...`)."""
    prefix = url.removeprefix("s3://").rstrip("/") + "/"
    return {name.removeprefix(prefix) for name in client.find(url)}


def key_of(data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    return f"{sha[:2]}/{sha}"


@pytest.fixture
def s3_store(tmp_path: Path, s3: S3Server) -> Iterator[MemoryStore]:
    """SQLite in a folder, blobs on S3."""
    with MemoryStore.open(Settings(home=tmp_path / "s3-home", blob_url=s3.blob_url())) as store:
        yield store


def fill(store: MemoryStore) -> None:
    """alice with a face (shared with bob), a voice, a subject and an adapter; bob with an output."""
    rng = np.random.default_rng(5)
    store.users.create_tenant("acme")
    store.users.create_users("acme", ["alice", "bob"])
    store.content.add_face("acme", "alice", "f1", png_bytes("green"), consent=True, embedding=unit(rng.normal(size=4)))
    store.content.add_face("acme", "bob", "f1", png_bytes("green"), consent=True, embedding=unit(rng.normal(size=4)))
    store.content.add_voice("acme", "alice", "v1", wav_bytes(), consent=True)
    store.content.add_subject("acme", "alice", "rex", name="Rex", class_noun="dog", images=[png_bytes("red")])
    store.users.set_training_consent("acme", "alice", True)  # the adapter learned from her subject
    store.artifacts.add_artifact("acme", "lora", kind="adapter", media_type="application/octet-stream",
                                 data=b"weights", user="alice", derived_from=[("subject", "rex")])
    store.artifacts.add_artifact("acme", "bob-out", kind="output", media_type="text/plain", data=b"bob only",
                                 user="bob", derived_from=[("user", "bob")])


def test_blobs_another_client_writes_or_deletes_are_seen(s3: S3Server, other: s3fs.S3FileSystem) -> None:
    blobs = BlobStore(s3.blob_url())
    sha, created = blobs.put(b"photo")
    assert created and blobs.put(b"photo") == (sha, False)
    assert objects(other, blobs.url) == {key_of(b"photo")}  # written in place: no scratch object, ever
    assert blobs.location(sha) == f"{blobs.url}/{key_of(b'photo')}"
    assert list(blobs.list()) == [sha]  # this client has listed the prefix...
    other.rm_file(f"{blobs.url}/{key_of(b'photo')}")  # ...then another process deletes the object
    assert not blobs.exists(sha)
    assert blobs.put(b"photo") == (sha, True) and blobs.get(sha) == b"photo"  # written again, not skipped
    other.pipe_file(f"{blobs.url}/{key_of(b'stray')}", b"stray")  # another process writes one
    stray = hashlib.sha256(b"stray").hexdigest()
    assert blobs.exists(stray) and set(blobs.list()) == {sha, stray}
    blobs.delete(stray)
    blobs.delete(stray)  # already gone: no error
    assert objects(other, blobs.url) == {key_of(b"photo")}
    with pytest.raises(FileNotFoundError):
        blobs.get(stray)


def test_forget_deletes_the_objects_and_its_scan_finds_a_planted_one(
        s3_store: MemoryStore, other: s3fs.S3FileSystem) -> None:
    fill(s3_store)
    url = s3_store.blobs.url
    assert len(objects(other, url)) == 5
    report = s3_store.privacy.forget_user("acme", "alice")
    assert report.residue == [] and report.deleted["blobs"] == 3  # voice, rex, adapter; the face is bob's too
    assert objects(other, url) == {key_of(png_bytes("green")), key_of(b"bob only")}  # as the server lists them
    other.pipe_file(f"{url}/{key_of(b'left behind')}", b"left behind")  # a leftover no row names
    report = s3_store.privacy.forget_user("acme", "bob")
    assert report.residue == [f"blob {hashlib.sha256(b'left behind').hexdigest()} (file without a row)"]
    assert objects(other, url) == {key_of(b"left behind")}


def test_a_user_moves_between_s3_and_local_stores_byte_for_byte(
        s3_store: MemoryStore, s3: S3Server, other: s3fs.S3FileSystem, tmp_path: Path) -> None:
    fill(s3_store)
    from_s3 = tmp_path / "from-s3.zip"
    assert s3_store.privacy.export_user("acme", "alice", from_s3)["blobs"] == 4
    with MemoryStore.open(Settings(home=tmp_path / "local")) as local:
        assert local.privacy.import_user(from_s3) == ("acme", "alice")
        from_local = tmp_path / "from-local.zip"
        local.privacy.export_user("acme", "alice", from_local)
        assert from_local.read_bytes() == from_s3.read_bytes()
        assert all(Path(str(local.blobs.local_path(sha))).is_file() for sha in local.blobs.list())
    with MemoryStore.open(Settings(home=tmp_path / "s3-again", blob_url=s3.blob_url())) as again:
        again.privacy.import_user(from_local)
        back = tmp_path / "back.zip"
        again.privacy.export_user("acme", "alice", back)
        assert back.read_bytes() == from_s3.read_bytes()
        assert len(objects(other, again.blobs.url)) == 4
        assert again.artifacts.artifact_blob("acme", "lora") == (b"weights", "application/octet-stream")


def test_processes_share_the_bucket_through_unipgen_blob_url(
        tmp_path: Path, s3: S3Server, other: s3fs.S3FileSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line forgets a user in another process, reading UNIPGEN_BLOB_URL and the AWS
    variables; this process, which had listed the bucket before, then imports the user again."""
    monkeypatch.setenv("UNIPGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("UNIPGEN_BLOB_URL", s3.blob_url())
    with MemoryStore.open(Settings()) as store:
        assert store.blobs.url == os.environ["UNIPGEN_BLOB_URL"] and not store.blobs.is_local
        fill(store)
        archive = tmp_path / "alice.zip"
        store.privacy.export_user("acme", "alice", archive)
        listed = set(store.blobs.list())
        done = subprocess.run([sys.executable, "-m", "unipgen.cli", "users", "forget", "alice", "--tenant", "acme",
                               "--json"], capture_output=True, text=True, env=os.environ, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["residue"] == [] and len(objects(other, store.blobs.url)) == 2
        store.privacy.import_user(archive)  # its objects were deleted by the other process: written again
        assert {key.rsplit("/", 1)[1] for key in objects(other, store.blobs.url)} == listed
        assert store.content.media_blob("acme", "alice", "voice", "v1")[0] == wav_bytes()
