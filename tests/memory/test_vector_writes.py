"""Writing many vectors at once: ids are looked up per batch, not per vector, and a bulk load
leaves PostgreSQL's planner statistics fresh (else the lookups that follow compare every row
with every key)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import event, text

from tests.helpers import unit
from unipgen.errors import NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.transaction import BULK_ROWS


def _lookups(store: MemoryStore, write: object) -> int:
    """How many SELECT statements `write()` sends (the id lookups; SQLite inserts a row per
    statement when the new ids are returned, in process)."""
    count = 0

    def counted(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        nonlocal count
        count += statement.lstrip().upper().startswith("SELECT")

    event.listen(store.db.engine, "before_cursor_execute", counted)
    try:
        write()  # type: ignore[operator]
    finally:
        event.remove(store.db.engine, "before_cursor_execute", counted)
    return count


@pytest.fixture
def loaded(store: MemoryStore) -> MemoryStore:
    store.users.create_tenant("t")
    store.users.create_users("t", ["u"])
    store.catalog.add_items("t", [{"key": f"i{j}", "text": f"item {j}"} for j in range(400)])
    store.content.add_documents("t", "u", [{"key": f"d{j}", "text": f"doc {j}"} for j in range(400)])
    return store


@pytest.mark.parametrize(("kind", "user"), [("item", None), ("document", "u")])
def test_the_lookups_of_a_vector_write_do_not_grow_with_its_size(loaded: MemoryStore, kind: str,
                                                                     user: str | None) -> None:
    rng = np.random.default_rng(0)
    prefix = "i" if kind == "item" else "d"

    def write(start: int, n: int) -> int:
        rows = [(f"{prefix}{j}", unit(rng.normal(size=8))) for j in range(start, start + n)]
        return _lookups(loaded, lambda: loaded.content.add_embeddings("t", "text", kind, rows, user=user))

    small, large = write(0, 10), write(10, 390)
    assert large <= small + 2, (small, large)  # was one or two lookups per vector: 20 vs 780
    assert set(loaded.content.vectors("t", "text", kind, user=user)) == {f"{prefix}{j}" for j in range(400)}
    if kind == "document":  # each vector belongs to its document's user
        assert loaded.content.search("t", "text", unit(rng.normal(size=8)), k=3, user="u")


def test_a_vector_write_naming_an_unknown_item_stores_nothing(loaded: MemoryStore) -> None:
    rows = [("i1", unit(np.ones(8))), ("nope", unit(np.ones(8)))]
    with pytest.raises(NotFoundError, match="nope"):
        loaded.content.add_embeddings("t", "text", "item", rows)
    assert loaded.content.vectors("t", "text", "item") == {}


@pytest.mark.postgres
def test_a_bulk_load_refreshes_postgres_planner_statistics(postgres_database: str, tmp_path: object) -> None:
    from pathlib import Path

    from unipgen.settings import Settings

    with MemoryStore.open(Settings(home=Path(str(tmp_path)) / "home", database_url=postgres_database)) as store:
        store.users.create_tenant("t")

        def analyzed(table: str) -> int:
            with store.db.engine.connect() as conn:
                return int(conn.execute(text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = :t"),
                                        {"t": table}).scalar_one())

        store.catalog.add_items("t", [{"key": f"s{j}", "text": "x"} for j in range(10)])
        assert analyzed("items") == 0  # a small write leaves it to autovacuum
        store.catalog.add_items("t", [{"key": f"i{j}", "text": f"item {j}"} for j in range(BULK_ROWS)])
        store.content.add_embeddings("t", "text", "item", [(f"i{j}", unit(np.ones(4))) for j in range(BULK_ROWS)])
        assert analyzed("items") >= 1
        assert analyzed("embeddings") >= 1
