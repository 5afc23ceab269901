"""Forget: rows, vectors, blobs and derived artifacts go; a shared blob stays; the residue is empty."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import png_bytes, unit, wav_bytes
from unipgen.errors import NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Blob,
    Embedding,
    Lineage,
    ProfileAttribute,
    User,
)
from unipgen.memory.vectors import VectorIndex


@pytest.fixture
def rich(populated: MemoryStore) -> MemoryStore:
    """alice and bob share one photo; artifacts derive from each other across users."""
    rng = np.random.default_rng(2)
    s = populated
    shared = png_bytes("green")
    s.users.set_profile("acme", "alice", "city", "Paris")
    s.content.add_document("acme", "alice", "d1", "I love westerns")
    s.content.add_embeddings("acme", "text", "document", [("d1", unit(rng.normal(size=8)))], user="alice")
    s.content.add_face("acme", "alice", "f1", shared, consent=True, embedding=unit(rng.normal(size=8)))
    s.content.add_face("acme", "bob", "f1", shared, consent=True, embedding=unit(rng.normal(size=8)))
    s.content.add_voice("acme", "alice", "v1", wav_bytes(), consent=True, embedding=unit(rng.normal(size=8)))
    s.content.add_subject("acme", "alice", "rex", name="Rex", class_noun="dog", images=[png_bytes("red")])
    s.users.set_training_consent("acme", "alice", True)  # the adapter learned from her subject
    s.artifacts.add_artifact("acme", "adapter", kind="adapter", media_type="application/octet-stream", data=b"lora",
                   user="alice", derived_from=[("subject", "rex")])
    s.artifacts.add_artifact("acme", "alice-out", kind="output", media_type="image/png", data=png_bytes("blue"),
                   user="alice", derived_from=[("artifact", "adapter"), ("user", "alice")])
    # bob's output used alice's adapter: it is derived from her data and must go with her.
    s.artifacts.add_artifact("acme", "bob-out", kind="output", media_type="text/plain", data=b"bob's",
                   user="bob", derived_from=[("artifact", "adapter")])
    s.artifacts.add_artifact("acme", "bob-own", kind="output", media_type="text/plain", data=b"bob only",
                   user="bob", derived_from=[("user", "bob")])
    s.content.add_embeddings("acme", "text", "item", [("m1", unit(rng.normal(size=8)))])
    return s


def test_forget_user_leaves_zero_residue(rich: MemoryStore) -> None:
    shared_sha = __import__("hashlib").sha256(png_bytes("green")).hexdigest()
    report = rich.privacy.forget_user("acme", "alice")
    assert report.residue == []
    assert report.deleted["users"] == 1 and report.deleted["artifacts"] == 3  # adapter, alice-out, bob-out
    assert rich.users.list_users("acme") == ["bob"]
    with rich.session() as session:
        assert {a.key for a in session.query(Artifact)} == {"bob-own"}
        assert session.query(User).filter_by(key="alice").count() == 0
        assert session.query(ProfileAttribute).count() == 0
        assert session.query(BehaviorEvent).count() == 1  # bob's like
        assert session.query(Embedding).filter(Embedding.user_id.is_(None)).count() == 1  # catalog vector stays
        assert session.query(Lineage).count() == 1  # bob-own <- bob
    blobs = set(rich.blobs.list())
    assert shared_sha in blobs  # bob's face still needs the shared photo
    assert blobs == {shared_sha, __import__("hashlib").sha256(b"bob only").hexdigest()}
    assert rich.count_rows(Blob) == 2
    with pytest.raises(NotFoundError):
        rich.users.user_summary("acme", "alice")


def test_forgotten_vectors_are_gone_from_memory_and_files(rich: MemoryStore) -> None:
    with rich.session() as session:
        alice_id = session.query(User.id).filter_by(key="alice").scalar()
        before = {e.id for e in session.query(Embedding).filter_by(user_id=alice_id)}
    assert len(before) == 3
    rich.privacy.forget_user("acme", "alice")
    for space in ("text", "face", "voice"):
        index, _ = VectorIndex.load(rich.indexes.path(1, space))
        assert not any(i in index for i in before)
        assert alice_id not in index.user_ids()
    assert rich.content.search("acme", "face", unit(np.ones(8)), k=5, user="bob")[0].key == "f1"


def test_forget_one_face_keeps_the_rest(rich: MemoryStore) -> None:
    rich.artifacts.add_artifact("acme", "from-face", kind="output", media_type="text/plain", data=b"f", user="alice",
                      derived_from=[("face", "f1")])
    report = rich.privacy.forget_item("acme", "face", "f1", user="alice")
    assert report.residue == []
    # the artifact's blob goes; the photo stays, bob's face shares it
    assert report.deleted == {"embeddings": 1, "lineage": 1, "artifacts": 1, "faces": 1, "blobs": 1}
    assert rich.content.search("acme", "face", unit(np.ones(8)), k=5, user="alice") == []
    assert rich.users.user_summary("acme", "alice").counts["faces"] == 0
    assert rich.users.user_summary("acme", "bob").counts["faces"] == 1


def test_forget_catalog_item_drops_its_events(rich: MemoryStore) -> None:
    report = rich.privacy.forget_item("acme", "item", "m1")
    assert report.residue == [] and report.deleted["events"] == 2 and report.deleted["items"] == 1
    assert [e.item for e in rich.events.events("acme", "alice")] == ["m2"]


def test_forget_unknown_changes_nothing(rich: MemoryStore) -> None:
    rows = rich.count_rows(Embedding), rich.count_rows(Artifact)
    with pytest.raises(NotFoundError, match="unknown user 'zed'"):
        rich.privacy.forget_user("acme", "zed")
    with pytest.raises(NotFoundError, match="unknown face 'nope'"):
        rich.privacy.forget_item("acme", "face", "nope", user="alice")
    assert (rich.count_rows(Embedding), rich.count_rows(Artifact)) == rows


def test_residue_scan_finds_what_is_left(rich: MemoryStore) -> None:
    """The scan is real: a blob file written behind the store's back is reported."""
    rich.blobs.put(b"stray file")
    report = rich.privacy.forget_user("acme", "bob")
    assert report.residue == [f"blob {__import__('hashlib').sha256(b'stray file').hexdigest()} (file without a row)"]
