"""Export one user to a zip and import it: the round trip is exact."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import png_bytes, unit, wav_bytes
from unipgen.errors import ConflictError, InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.settings import Settings


@pytest.fixture
def alice(populated: MemoryStore) -> MemoryStore:
    s = populated
    rng = np.random.default_rng(3)
    s.users.set_profile("acme", "alice", "city", "Paris")
    s.users.set_profile("acme", "alice", "city", "Lyon")
    s.catalog.add_items("acme", [{"key": "poster", "text": "with image", "image": png_bytes("yellow")}])
    s.events.ingest_events("acme", [{"user": "alice", "type": "purchase", "item": "poster", "ts": 5, "meta": {"qty": 2}}])
    s.content.add_document("acme", "alice", "d1", "A review of m1", kind="review")
    s.content.add_embeddings("acme", "text", "document", [("d1", unit(rng.normal(size=8)))], user="alice")
    s.content.add_documents("acme", "alice", [{"key": "reply", "text": "You reviewed m1.", "kind": "message"}],
                            derived_from={"reply": [("document", "d1"), ("user", "alice")]})  # a chat reply
    s.content.add_face("acme", "alice", "f1", png_bytes("green"), consent=True, embedding=unit(rng.normal(size=4)))
    s.content.add_voice("acme", "alice", "v1", wav_bytes(), consent=True)
    s.content.add_subject("acme", "alice", "rex", name="Rex", class_noun="dog", images=[png_bytes("red"), png_bytes("blue")])
    s.users.set_training_consent("acme", "alice", True)  # the adapter learned from her subject
    s.artifacts.add_artifact("acme", "lora", kind="adapter", media_type="application/octet-stream", data=b"w", user="alice",
                   derived_from=[("subject", "rex"), ("user", "alice"), ("item", "m1")])
    return s


def test_export_import_export_is_byte_identical(alice: MemoryStore, tmp_path: Path) -> None:
    first = tmp_path / "first.zip"
    counts = alice.privacy.export_user("acme", "alice", first)
    assert counts["events"] == 3 and counts["blobs"] == 6
    with MemoryStore.open(Settings(home=tmp_path / "empty")) as empty:
        assert empty.privacy.import_user(first) == ("acme", "alice")
        second = tmp_path / "second.zip"
        empty.privacy.export_user("acme", "alice", second)
        assert first.read_bytes() == second.read_bytes()
        assert empty.users.profile_history("acme", "alice", "city") == alice.users.profile_history("acme", "alice", "city")
        query = unit(np.ones(8))
        assert empty.content.search("acme", "text", query, user="alice") == alice.content.search("acme", "text", query, user="alice")
        assert empty.artifacts.artifact_blob("acme", "lora") == (b"w", "application/octet-stream")


def test_a_derived_documents_lineage_travels(alice: MemoryStore, tmp_path: Path) -> None:
    archive = tmp_path / "alice.zip"
    alice.privacy.export_user("acme", "alice", archive)
    manifest = json.loads(zipfile.ZipFile(archive).read("manifest.json"))
    assert {d["key"]: d["derived_from"] for d in manifest["documents"]}["reply"] == [["document", "d1"], ["user", "alice"]]
    with MemoryStore.open(Settings(home=tmp_path / "empty")) as empty:
        empty.privacy.import_user(archive)
        empty.privacy.forget_item("acme", "document", "d1", user="alice")
        assert [d.key for d in empty.content.documents("acme", "alice")] == []  # the reply went with its source


def test_export_holds_only_that_user(alice: MemoryStore, tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    alice.privacy.export_user("acme", "alice", path)
    manifest = json.loads(zipfile.ZipFile(path).read("manifest.json"))
    assert manifest["user"]["key"] == "alice"
    assert "bob" not in json.dumps(manifest)
    assert {i["key"] for i in manifest["items"]} == {"m1", "m2", "poster"}


def test_import_over_an_existing_user_is_refused(alice: MemoryStore, tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    alice.privacy.export_user("acme", "alice", path)
    blobs = set(alice.blobs.list())
    with pytest.raises(ConflictError, match="user 'alice' already exists"):
        alice.privacy.import_user(path)
    assert set(alice.blobs.list()) == blobs
    assert alice.privacy.import_user(path, tenant="elsewhere") == ("elsewhere", "alice")


def test_broken_archives_are_named(alice: MemoryStore, tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InvalidInputError, match="junk.zip is not a readable unipgen export"):
        alice.privacy.import_user(junk)
    good = tmp_path / "a.zip"
    alice.privacy.export_user("acme", "alice", good)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b"evil" if info.filename.startswith("blobs/") else data)
    with MemoryStore.open(Settings(home=tmp_path / "fresh")) as fresh:
        with pytest.raises(InvalidInputError, match="does not match its content"):
            fresh.privacy.import_user(tampered)
        assert fresh.users.list_tenants() == [] and list(fresh.blobs.list()) == []
