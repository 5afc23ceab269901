"""`MemoryStore.reads.user_snapshot` reads in one transaction what the separate reads return."""

from __future__ import annotations

import numpy as np
import pytest

from unipgen.errors import NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import BehaviorEvent


def _vectors_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_snapshot_matches_the_separate_reads(populated: MemoryStore) -> None:
    store = populated
    rng = np.random.default_rng(0)
    store.content.add_embeddings("acme", "text", "item", [(f"m{i}", rng.normal(size=4).astype(np.float32)) for i in range(5)])
    store.users.set_profile("acme", "alice", "city", "Lyon")
    store.content.add_documents("acme", "alice", [{"key": "d1", "text": "I love quiet films"}],
                        vectors={"text": {"d1": rng.normal(size=4).astype(np.float32)}})
    store.artifacts.add_artifact("acme", "lora-a", kind="adapter", media_type="application/zip", data=b"weights", user="alice",
                       derived_from=[("document", "d1")], meta={"method": "lora"})
    store.artifacts.add_artifact("acme", "out-a", kind="output", media_type="text/plain", data=b"hi", user="alice")

    snap = store.reads.user_snapshot("acme", "alice")
    assert snap.profile == store.users.profile("acme", "alice") == {"city": "Lyon"}
    assert [tuple(e) for e in snap.events] == [(e.user, e.type, e.item, e.ts, e.value, e.meta)
                                               for e in store.events.events("acme", "alice")]
    assert [e.item for e in snap.events] == ["m1", "m2"]
    assert snap.spaces == store.content.spaces("acme")
    assert set(snap.item_vectors) == {"text"}  # no image space in this tenant
    assert _vectors_equal(snap.item_vectors["text"], store.content.vectors("acme", "text", "item", ["m1", "m2"]))
    assert snap.item_texts == store.catalog.item_texts("acme", ["m1", "m2"])
    assert snap.documents == store.content.documents("acme", "alice")
    assert _vectors_equal(snap.document_vectors, store.content.vectors("acme", "text", "document", user="alice"))
    assert snap.adapters == store.artifacts.artifacts("acme", "alice", kind="adapter")
    assert [a.derived_from for a in snap.adapters] == [[("document", "d1")]]
    assert snap.subjects == [] and snap.faces == {} and snap.voices == {}


def test_snapshot_of_a_user_without_memory(populated: MemoryStore) -> None:
    populated.users.create_user("acme", "carol")
    snap = populated.reads.user_snapshot("acme", "carol")
    assert (snap.events, snap.documents, snap.adapters, snap.item_texts) == ([], [], [], {})


def test_snapshot_names_what_is_unknown(populated: MemoryStore) -> None:
    with pytest.raises(NotFoundError, match="unknown user 'zoe'"):
        populated.reads.user_snapshot("acme", "zoe")
    with pytest.raises(NotFoundError, match="unknown tenant 'nope'"):
        populated.reads.user_snapshot("nope", "alice")
    assert populated.count_rows(BehaviorEvent) == 3


def test_snapshots_of_several_users_equal_their_single_snapshots(populated: MemoryStore) -> None:
    store = populated
    store.users.set_profile("acme", "bob", "city", "Oslo")
    store.content.add_documents("acme", "alice", [{"key": "d1", "text": "quiet films"}])
    many = store.reads.user_snapshots("acme", ["alice", "bob", "zoe", "alice"])
    assert set(many) == {"alice", "bob", "zoe"} and isinstance(many["zoe"], NotFoundError)
    for user in ("alice", "bob"):
        assert many[user] == store.reads.user_snapshot("acme", user)
    assert [e.item for e in many["bob"].events] == ["m1"] and many["bob"].profile == {"city": "Oslo"}
    assert [d.key for d in many["alice"].documents] == ["d1"] and many["bob"].documents == []
    with pytest.raises(NotFoundError, match="unknown tenant 'nope'"):
        store.reads.user_snapshots("nope", ["alice"])
