"""Engine creation and schema migration (Alembic) for the store's database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from unipgen.errors import InvalidInputError
from unipgen.memory.private import private_dir, private_file, touch_private

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets foreign keys (for cascades), WAL (readers beside a writer)
    and secure delete (a deleted row's bytes are zeroed, not left in free space), and its file
    is made 0600 before SQLite first opens it (the -wal and -shm files take the database
    file's mode). On both, text holding a NUL character or a lone surrogate is refused before it
    reaches the database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(url, pool_pre_ping=True)
    else:
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "before_cursor_execute", _refuse_bad_text)
    return engine


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (in a folder made 0700 if missing) and tighten the files of
    an existing one: SQLite gives its -wal and -shm files the database file's mode."""
    if not path.parent.exists():
        private_dir(path.parent)
    touch_private(path)
    for suffix in ("-wal", "-shm", "-journal"):
        private_file(path.with_name(path.name + suffix))


def sqlite_files(engine: Engine) -> list[Path]:
    """The files of a file-backed SQLite database (the database, its -wal and -shm, those that
    exist); empty for other databases."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return []
    path = Path(url.database)
    return [p for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]


def checkpoint_sqlite(engine: Engine) -> None:
    """Copy the WAL into the database file and truncate it to zero bytes, so that rows deleted
    (and zeroed: secure_delete) are not still readable in older WAL frames. A no-op elsewhere.
    A reader holding an old snapshot blocks the truncation; it is retried for a few seconds."""
    if engine.url.get_backend_name() != "sqlite":
        return
    import time

    deadline = time.monotonic() + 5.0
    while True:
        with engine.connect() as conn:
            busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
        if not busy or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _refuse_bad_text(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any, _many: bool) -> None:
    """Refuse, as invalid input, text that no database here can store: a NUL character (U+0000)
    or a lone surrogate (not encodable as UTF-8), in any statement's parameters.

    PostgreSQL cannot store NUL in a text column (psycopg raises DataError, even for a lookup:
    ``WHERE key = 'a\\x00b'``); SQLite would store it, so both refuse it, alike. A lone surrogate
    fails in either driver's encoder. Every id, name and text a caller sends reaches the database
    as a parameter, so this one check covers them all, reads included. JSON values are sent
    serialized (escaped) and are checked by the schemas instead (`schema.memory.check_json`).
    """
    if not parameters:
        return
    # One row's parameters are a dict or a tuple; several rows' (executemany) a list or tuple of
    # those; a value may be a list (an array parameter). One flat loop, no call per value: bulk
    # ingest sends 10,000 rows in one statement.
    rows = parameters if isinstance(parameters, (list, tuple)) and isinstance(parameters[0], (dict, list, tuple)) \
        else (parameters,)
    for row in rows:
        for value in row.values() if isinstance(row, dict) else row if isinstance(row, (list, tuple)) else (row,):
            if value.__class__ is str:
                _check_text(value)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if item.__class__ is str:
                        _check_text(item)


def _check_text(value: str) -> None:
    if "\x00" in value:
        raise InvalidInputError(f"text must not contain NUL characters (\\x00): {_shown(value)!r}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidInputError(f"text must be valid Unicode (a lone surrogate found): {_shown(value)!r}") from None


def _shown(value: str) -> str:
    return value if len(value) <= 40 else value[:40] + "..."


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA secure_delete=ON")  # forget must not leave the deleted bytes in free pages
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB: bulk ingest touches three B-trees
    cursor.close()


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema to `revision` (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


@contextmanager
def temporary_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (optionally a copy of `template`) for tests and benchmarks.

    Yields its URL and drops it afterwards, closing any connection still open to it.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
