"""`store.reads`: what one request reads, each in one transaction or on one connection: a
user's snapshot for context building, and a recommendation's events and item vectors."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import BindParameter, bindparam, extract, func, select

from unipgen.errors import NotFoundError
from unipgen.memory.embeddings import lookup_statements
from unipgen.memory.fits import fit_in_use
from unipgen.memory.indexes import IndexManager
from unipgen.memory.lookups import tenant_id_of
from unipgen.memory.models import BehaviorEvent, Item, User
from unipgen.memory.snapshot import TasteEvent, TasteRead, UserSnapshot, read_snapshots
from unipgen.memory.transaction import Database


class Reads:
    """A request's reads: `user_snapshot(s)` for `ContextBuilder`, `taste_read` then
    `item_vectors` / `search_items` for recommendations (vectors from the index in memory)."""

    def __init__(self, db: Database, indexes: IndexManager) -> None:
        self.db = db
        self.indexes = indexes

    def user_snapshot(self, tenant: str, user: str, item_spaces: Sequence[str] = ("text", "image")) -> UserSnapshot:
        """Everything `ContextBuilder` reads about `user`, in one read transaction."""
        found = self.user_snapshots(tenant, [user], item_spaces)[user]
        if isinstance(found, Exception):
            raise found
        return found

    def user_snapshots(self, tenant: str, users: Sequence[str],
                       item_spaces: Sequence[str] = ("text", "image")) -> dict[str, UserSnapshot | Exception]:
        """`user_snapshot` of several users with the same dozen queries as one (jobs prepared
        together). An unknown user gets a `NotFoundError` in its place; an unknown tenant raises."""
        with self.db.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            tenant_id = tenant_id_of(session, tenant)
            ids = dict(session.execute(select(User.key, User.id).where(User.tenant_id == tenant_id,
                                                                       User.key.in_(set(users)))).all())
            found: dict[str, UserSnapshot | Exception] = {
                user: NotFoundError(f"unknown user {user!r} in tenant {tenant!r}") for user in users if user not in ids}
            if ids:
                found |= read_snapshots(session, tenant, tenant_id, ids, item_spaces)
        return found

    def taste_read(self, tenant: str, user: str, space: str | None, *, events: bool = True) -> TasteRead:
        """What a recommendation reads of the database, on one connection: the space's
        generation, the version of the user's events (how many, the newest id: any write or
        delete changes it) and, with `events`, the events themselves (oldest first). `space`
        None: the space recommendations rank in, the tenant's fitted behavior space when it has
        a fit in use (then in `fit`), else ``text``. Vectors then come from the index in memory
        (`item_vectors`, `search_items`)."""
        with self.db.engine.connect() as conn:
            fit = None
            if space is None:
                found = fit_in_use(conn, tenant)
                fit = found[2] if found else None
                space = fit.space if fit else "text"
            row = conn.execute(lookup_statements()["target"], {"tenant": tenant, "user": user, "space": space}).first()
            if row is None:
                raise NotFoundError(f"unknown tenant {tenant!r}")
            if row[1] is None:
                raise NotFoundError(f"unknown user {user!r} in tenant {tenant!r}")
            if not events:
                count, newest = conn.execute(_statements()["version"], {"user_id": row[1]}).one()
                return TasteRead(tenant_id=row[0], generation=row[3], events=[], version=(count, newest or 0),
                                 space=space, fit=fit)
            rows = conn.execute(_statements()["events"], {"user_id": row[1]}).all()  # one fetch, not one per row
            found_events = [TasteEvent(kind, key, float(ts), value) for kind, key, ts, value, _ in rows]
            version = (len(rows), max((r[4] for r in rows), default=0))
        return TasteRead(tenant_id=row[0], generation=row[3], events=found_events, version=version, space=space,
                         fit=fit)

    def item_vectors(self, tenant: str, space: str, keys: Sequence[str], *,
                     read: TasteRead | None = None) -> dict[str, np.ndarray]:
        """Catalog items' vectors in `space` by key, from the space's index in memory (fast);
        empty when the tenant has no such space. `read`: a `taste_read` of this space (saves a query)."""
        if read is None:
            with self.db.engine.connect() as conn:
                row = conn.execute(lookup_statements()["target"], {"tenant": tenant, "user": None, "space": space}).first()
            if row is None:
                raise NotFoundError(f"unknown tenant {tenant!r}")
            read = TasteRead(tenant_id=row[0], generation=row[3], events=[])
        if read.generation is None:
            return {}
        return self.indexes.item_vectors(read.tenant_id, space, list(dict.fromkeys(keys)), read.generation)

    def search_items(self, space: str, query: np.ndarray, k: int, read: TasteRead) -> list[tuple[str, float]]:
        """Top-k catalog items (key, score) of `space` nearest `query` (`read`: a `taste_read`)."""
        if read.generation is None:
            return []
        return self.indexes.search_items(read.tenant_id, space, query, k, read.generation)


@cache
def _statements() -> dict[str, Any]:
    """The recommendation path's statements, built once (building costs more than running)."""
    user_id: BindParameter[int] = bindparam("user_id")
    # Unix seconds computed by the database: parsing thousands of datetimes costs more than the rest
    seconds = extract("epoch", BehaviorEvent.ts)
    return {
        "version": select(func.count(), func.max(BehaviorEvent.id)).where(BehaviorEvent.user_id == user_id),
        "events": select(BehaviorEvent.type, Item.key, seconds, BehaviorEvent.value, BehaviorEvent.id)
        .join(Item, Item.id == BehaviorEvent.item_id).where(BehaviorEvent.user_id == user_id)
        .order_by(BehaviorEvent.ts, BehaviorEvent.id),
    }
