"""Embeddings in the store: per-user and catalog search, index files rebuilt when missing or stale."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.helpers import unit
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import Embedding


@pytest.fixture
def with_vectors(populated: MemoryStore) -> MemoryStore:
    rng = np.random.default_rng(1)
    for user in ("alice", "bob"):
        for i in range(4):
            populated.content.add_document("acme", user, f"{user}-d{i}", f"text {i} by {user}")
        populated.content.add_embeddings("acme", "text", "document",
                                 [(f"{user}-d{i}", unit(rng.normal(size=16))) for i in range(4)], user=user)
    populated.content.add_embeddings("acme", "text", "item", [(f"m{i}", unit(rng.normal(size=16))) for i in range(5)])
    return populated


def _vector(store: MemoryStore, kind: str, key: str) -> np.ndarray:
    from unipgen.memory.lookups import OWNER_MODELS

    model = OWNER_MODELS[kind][0]
    with store.session() as session:
        row = session.query(Embedding).join(model, model.id == Embedding.owner_id).filter(
            Embedding.owner_kind == kind, model.key == key).one()
        return np.frombuffer(row.vector, dtype=np.float32)


def test_user_search_returns_only_that_users_items(with_vectors: MemoryStore) -> None:
    query = _vector(with_vectors, "document", "bob-d2")
    alice = with_vectors.content.search("acme", "text", query, k=10, user="alice")
    assert {h.key for h in alice} == {f"alice-d{i}" for i in range(4)}
    bob = with_vectors.content.search("acme", "text", query, k=2, user="bob")
    assert bob[0].key == "bob-d2" and bob[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(bob) == 2


def test_catalog_search_sees_items_only(with_vectors: MemoryStore) -> None:
    hits = with_vectors.content.search("acme", "text", _vector(with_vectors, "item", "m3"), k=10)
    assert [h.kind for h in hits] == ["item"] * 5 and hits[0].key == "m3"


def test_replacing_an_embedding_keeps_one_vector(with_vectors: MemoryStore) -> None:
    before = with_vectors.count_rows(Embedding)
    new = unit(np.ones(16))
    with_vectors.content.add_embeddings("acme", "text", "document", [("alice-d0", new)], user="alice")
    assert with_vectors.count_rows(Embedding) == before
    assert with_vectors.content.search("acme", "text", new, k=1, user="alice")[0].key == "alice-d0"


def test_wrong_dimension_and_unknown_space_are_named(with_vectors: MemoryStore) -> None:
    before = with_vectors.count_rows(Embedding)
    with pytest.raises(InvalidInputError, match="dimension 8, but space 'text' holds 16-d"):
        with_vectors.content.add_embeddings("acme", "text", "item", [("m0", np.ones(8))])
    with pytest.raises(InvalidInputError, match="query has dimension 3"):
        with_vectors.content.search("acme", "text", np.ones(3))
    with pytest.raises(NotFoundError, match="no embedding space 'image'"):
        with_vectors.content.search("acme", "image", np.ones(16))
    with pytest.raises(InvalidInputError, match="uses metric 'ip', not 'l2'"):
        with_vectors.content.add_embeddings("acme", "text", "item", [("m0", np.ones(16))], metric="l2")
    assert with_vectors.count_rows(Embedding) == before


def test_index_file_rebuilt_when_missing(settings, with_vectors: MemoryStore) -> None:
    query = _vector(with_vectors, "document", "alice-d1")
    expected = with_vectors.content.search("acme", "text", query, k=3, user="alice")
    with_vectors.close()
    path = with_vectors.indexes.path(1, "text")
    assert path.exists()
    shutil.rmtree(path)
    with MemoryStore.open(settings) as reopened:
        assert reopened.content.search("acme", "text", query, k=3, user="alice") == expected
        assert path.exists()  # rebuilt and saved


def test_index_of_another_process_is_stale_after_a_write(settings, with_vectors: MemoryStore) -> None:
    """Two stores on one database: a write through one makes the other's cached index stale."""
    query = unit(np.arange(16, dtype=np.float32))
    with_vectors.content.search("acme", "text", query, k=1, user="alice")  # warm the cache
    with MemoryStore.open(settings) as other:
        other.content.add_document("acme", "alice", "late", "written elsewhere")
        other.content.add_embeddings("acme", "text", "document", [("late", query)], user="alice")
    assert with_vectors.content.search("acme", "text", query, k=1, user="alice")[0].key == "late"


def test_index_file_older_than_the_database_is_rebuilt(settings, with_vectors: MemoryStore) -> None:
    """A process that wrote vectors and died before saving leaves a stale file behind."""
    with_vectors.close()  # file saved at the current generation
    crashed = MemoryStore.open(settings)
    crashed.content.add_document("acme", "bob", "unsaved", "never saved to the index file")
    query = unit(np.arange(16, dtype=np.float32))
    crashed.content.add_embeddings("acme", "text", "document", [("unsaved", query)], user="bob")
    crashed.engine.dispose()  # no close(): the index file keeps the old generation
    with MemoryStore.open(settings) as fresh:
        assert fresh.content.search("acme", "text", query, k=1, user="bob")[0].key == "unsaved"
