"""Fast bulk insert of behavior events, per database driver.

Behavior logs are the store's largest table, so ingest skips SQLAlchemy's per-row parameter
processing where the driver offers a faster path: SQLite gets a plain ``executemany`` with
timestamps pre-formatted as SQLAlchemy stores them; PostgreSQL gets ``COPY``. Any other
database goes through SQLAlchemy Core. All run inside the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table

from unipgen.errors import StoreError
from unipgen.memory.models import BehaviorEvent

COLUMNS = ("user_id", "item_id", "type", "value", "ts", "meta")
_CHUNK = 20_000  # rows per executemany: bounded memory, few round trips


def insert_events(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert rows of `COLUMNS` (ts an aware UTC datetime, meta a dict or None)."""
    dialect = connection.dialect.name
    driver = connection.dialect.driver
    fast = {("sqlite", "pysqlite"): _sqlite, ("postgresql", "psycopg"): _postgres_copy}.get((dialect, driver))
    if fast is not None:
        try:
            fast(connection, rows)
        except connection.dialect.loaded_dbapi.Error as exc:  # raw driver calls: SQLAlchemy did not wrap it
            raise StoreError(f"bulk insert of behavior events failed: {exc}") from exc
    else:
        table = cast(Table, BehaviorEvent.__table__)  # declared a FromClause; a mapped class's is its Table
        for start in range(0, len(rows), _CHUNK):
            connection.execute(table.insert(), [dict(zip(COLUMNS, r)) for r in rows[start : start + _CHUNK]])


def _sqlite(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    # Same text form as SQLAlchemy's SQLite DATETIME ("YYYY-MM-DD HH:MM:SS.ffffff", UTC, naive).
    sql = f"INSERT INTO behavior_events ({', '.join(COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)"
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]  # None only once closed
    for start in range(0, len(rows), _CHUNK):
        cursor.executemany(sql, [
            (u, i, t, v, ts.replace(tzinfo=None).isoformat(" ", "microseconds"),
             None if m is None else json.dumps(m))
            for u, i, t, v, ts, m in rows[start : start + _CHUNK]
        ])


def _postgres_copy(connection: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]  # None only once closed
    with cursor.copy(f"COPY behavior_events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for u, i, t, v, ts, m in rows:
            copy.write_row((u, i, t, v, ts, None if m is None else json.dumps(m)))
