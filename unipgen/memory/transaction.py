"""The one transaction object every part of the store writes through.

`Database` is what the parts share: the engine and the blob store. A read opens a plain
`session()`; a write opens `write()`, which yields a `Transaction`: its session, the blob files
it created (removed again if the transaction fails) and the callbacks that run once it commits
(folding vectors into the in-memory indexes, removing a job's scratch folder). A failure anywhere
in a write leaves nothing written, blob files included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError
from unipgen.memory.blobs import BlobStore
from unipgen.memory.models import Blob

if TYPE_CHECKING:
    from sqlalchemy import CursorResult, Result

log = logging.getLogger("unipgen.memory")


def rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows an UPDATE or DELETE matched. `Session.execute` is typed to return a `Result`, but
    for such a statement it is a `CursorResult`, the one that carries the count."""
    return cast("CursorResult[*tuple[Any, ...]]", result).rowcount


#: Rows written to one table in one write from which PostgreSQL's statistics are refreshed.
BULK_ROWS = 1000


class Transaction:
    """One open write: its session, the blob files it created (removed again on failure) and
    what to run after it commits."""

    def __init__(self, session: Session, blobs: BlobStore) -> None:
        self.session = session
        self._blobs = blobs
        self.new_blobs: list[str] = []
        self.after_commit: list[Callable[[], None]] = []
        self._analyzed: set[str] = set()

    def analyze_after_commit(self, table: str, rows: int) -> None:
        """Refresh PostgreSQL's planner statistics of `table` once this write commits, if it wrote
        `rows` >= `BULK_ROWS` there. Right after a bulk load the planner still takes the table
        for nearly empty (autovacuum analyzes it up to a minute later) and compares every row
        with every key of an IN list: embedding 20k freshly loaded items took 28 s of such
        lookups, 0.8 s once analyzed. SQLite needs nothing (its planner uses the indexes)."""
        engine = self.session.get_bind()
        if rows < BULK_ROWS or engine.dialect.name != "postgresql" or table in self._analyzed:
            return
        self._analyzed.add(table)
        self.after_commit.append(lambda: _analyze(engine, table))

    def put_blob(self, data: bytes, media_type: str) -> str:
        """Store `data` as a blob (file and row) in this transaction; returns its sha256."""
        sha, created = self._blobs.put(data)
        if created:
            self.new_blobs.append(sha)
        # INSERT ... ON CONFLICT DO NOTHING, not read-then-insert: blobs are named by content, so
        # two writers may store the same bytes at once (one output made twice, one photo uploaded
        # twice), and the second would fail on the key. Sent now: rows naming the blob follow it.
        self.session.execute(_insert_new_blob(self.session.get_bind().dialect.name,
                                              {"sha256": sha, "size": len(data), "media_type": media_type}))
        return sha


def _analyze(engine: Any, table: str) -> None:
    """Best effort: the write has committed, and fresh statistics only make later reads faster."""
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"ANALYZE {table}")  # a table name of ours, never input
    except Exception:  # noqa: BLE001  (autovacuum analyzes it later)
        log.warning("ANALYZE %s after a bulk write failed", table, exc_info=True)


def _insert_new_blob(dialect: str, row: dict[str, Any]) -> Any:
    """INSERT of one blob row that skips a sha256 already there, in `dialect`'s spelling."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert(Blob).values(row).on_conflict_do_nothing(index_elements=["sha256"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(Blob).values(row).on_conflict_do_nothing(index_elements=["sha256"])


class Database:
    """The database and the blob store its rows name, as every part of the store reaches them."""

    def __init__(self, engine: Engine, blobs: BlobStore) -> None:
        self.engine = engine
        self.blobs = blobs

    def session(self) -> Session:
        """A new session for reads (the caller owns and closes it)."""
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A transaction; on failure it rolls back and removes the blob files it wrote."""
        write = Transaction(Session(self.engine, expire_on_commit=False), self.blobs)
        try:
            with write.session, write.session.begin():
                yield write
            for callback in write.after_commit:
                callback()
        except IntegrityError as exc:
            self._drop_unreferenced(write.new_blobs)
            raise ConflictError(f"write refused by the database: {exc.orig}") from exc
        except BaseException:
            self._drop_unreferenced(write.new_blobs)
            raise

    def _drop_unreferenced(self, shas: list[str]) -> None:
        if not shas:
            return
        with Session(self.engine) as session:
            kept = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(shas))))
        for sha in set(shas) - kept:
            self.blobs.delete(sha)
