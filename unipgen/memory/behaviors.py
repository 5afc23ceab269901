"""The catalog (items) and behavior events: bulk writes in one transaction each."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError, InvalidInputError, NotFoundError
from unipgen.memory.bulk import insert_events
from unipgen.memory.fits import refit_due
from unipgen.memory.jobs import queue_fit_job
from unipgen.memory.lookups import insert_missing_users, tenant_id_of, user_id_of
from unipgen.memory.media import check_size, image_header, sniff_image
from unipgen.memory.models import BehaviorEvent, Item, User
from unipgen.memory.parsing import parse_rows, refuse_duplicates
from unipgen.schema.memory import EventIn, EventRecord, ItemIn

if TYPE_CHECKING:
    from unipgen.memory.store import MemoryStore

_CHUNK = 20_000  # rows per executemany: bounded memory, few round trips


class BehaviorsMixin:
    def add_items(
        self: MemoryStore, tenant: str, items: Iterable[ItemIn | dict[str, Any]], *, exist_ok: bool = False,
        vectors: Mapping[str, Mapping[str, np.ndarray]] | None = None, decoded: bool = False,
    ) -> int:
        """Add catalog items in one transaction; returns how many were new.

        With `exist_ok`, items whose id is already there are skipped (their content is kept).
        `vectors` ({space: {item key: vector}}) stores the new items' embeddings in the same
        transaction. `decoded`: the caller's encoder decoded the images already, so only their
        headers are checked here (as in `add_face`).
        """
        parsed = parse_rows(items, ItemIn, "item")
        refuse_duplicates([i.key for i in parsed], "item")
        with self._write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            existing = _existing_keys(w.session, Item, tenant_id, [i.key for i in parsed])
            if existing and not exist_ok:
                raise ConflictError(f"item {min(existing)!r} already exists in {tenant!r}")
            new = [i for i in parsed if i.key not in existing]
            rows = [self._item_row(w, tenant_id, i, decoded) for i in new]
            for start in range(0, len(rows), _CHUNK):
                w.session.execute(insert(Item), rows[start : start + _CHUNK])
            if vectors is not None and new:
                self._put_item_vectors(w, tenant_id, parsed, existing, vectors)
            return len(new)

    def _put_item_vectors(
        self: MemoryStore, w: Any, tenant_id: int, parsed: list[ItemIn], existing: set[str],
        vectors: Mapping[str, Mapping[str, np.ndarray]],
    ) -> None:
        new = {i.key for i in parsed} - existing
        for space, by_key in vectors.items():
            unknown = set(by_key) - {i.key for i in parsed}
            if unknown:
                raise InvalidInputError(f"vector given for item {min(unknown)!r}, which is not in the request")
            ids = _ids_by_key(w.session, Item, tenant_id, new & set(by_key), "item", None)
            rows = [(ids[key], None, vector) for key, vector in by_key.items() if key in new]
            if rows:
                self._put_embeddings(w, tenant_id, space, rows, "item")

    def _item_row(self: MemoryStore, w: Any, tenant_id: int, item: ItemIn, decoded: bool) -> dict[str, Any]:
        image_sha = None
        if item.image is not None:
            what = f"image of item {item.key!r}"
            check_size(item.image, self.max_blob_bytes, what)
            check = image_header if decoded else sniff_image
            image_sha = w.put_blob(item.image, check(item.image, what, self.media_limits))
        return {"tenant_id": tenant_id, "key": item.key, "text": item.text,
                "image_sha": image_sha, "meta": item.meta}

    def ingest_events(
        self: MemoryStore, tenant: str, events: Iterable[EventIn | dict[str, Any]], *, create_users: bool = False
    ) -> int:
        """Write behavior events in one transaction: all of them, or on any error none.

        Items must exist; users too, unless `create_users` (then they are created in the same
        transaction). Returns the number of events written.
        """
        with _gc_paused():
            return self._ingest(tenant, parse_rows(events, EventIn, "event"), create_users)

    def _ingest(self: MemoryStore, tenant: str, parsed: list[EventIn], create_users: bool) -> int:
        with self._write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            if create_users:
                wanted = {e.user for e in parsed}
                insert_missing_users(w.session, tenant_id,
                                     sorted(wanted - _existing_keys(w.session, User, tenant_id, list(wanted))))
            users = _ids_by_key(w.session, User, tenant_id, {e.user for e in parsed}, "user", tenant)
            items = _ids_by_key(w.session, Item, tenant_id, {e.item for e in parsed}, "item", tenant)
            rows = [(users[e.user], items[e.item], e.type, e.value, e.ts, e.meta) for e in parsed]
            insert_events(w.session.connection(), rows)
            if self.refit_every_events and refit_due(w.session, tenant_id, self.refit_every_events):
                queue_fit_job(w.session, tenant_id, f"refit policy: {self.refit_every_events} new events")
        return len(rows)

    def events(self: MemoryStore, tenant: str, user: str, limit: int | None = None) -> list[EventRecord]:
        """A user's events, oldest first (the last `limit` if given), each with the `id` that
        `delete_events` takes."""
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            query = (
                select(BehaviorEvent, Item.key)
                .join(Item, Item.id == BehaviorEvent.item_id)
                .where(BehaviorEvent.user_id == user_id)
                .order_by(BehaviorEvent.ts.desc(), BehaviorEvent.id.desc())
                .limit(limit)
            )
            rows = session.execute(query).all()
        return [
            EventRecord.model_construct(id=e.id, user=user, type=e.type, item=key, ts=e.ts, value=e.value, meta=e.meta)
            for e, key in reversed(rows)
        ]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: bulk parsing allocates many objects and no cycles,
    and collections triggered by that allocation alone cost about a fifth of ingest time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _existing_keys(session: Session, model: Any, tenant_id: int, keys: Sequence[str]) -> set[str]:
    return set(_ids_by_key(session, model, tenant_id, set(keys), None, None))


def _ids_by_key(
    session: Session, model: Any, tenant_id: int, keys: set[str], what: str | None, tenant: str | None
) -> dict[str, int]:
    """Row ids of `keys` in the tenant; with `what` set, an unknown key is a `NotFoundError`."""
    found: dict[str, int] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), 900):  # stays under SQLite's bound-parameter limit
        chunk = ordered[start : start + 900]
        found.update(
            session.execute(
                select(model.key, model.id).where(model.tenant_id == tenant_id, model.key.in_(chunk))
            ).all()
        )
    if what is not None and len(found) != len(keys):
        missing = sorted(keys - found.keys())
        raise NotFoundError(
            f"unknown {what} {missing[0]!r} in tenant {tenant!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return found
