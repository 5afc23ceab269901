"""`store.fits`: fits of a tenant's behavior space: what a fit reads, how it is stored, and when
it goes stale.

A fit (`unipgen.core.behavior_space`) is derived from every user's events. The store keeps:

* the item vectors of the current fit as the embeddings of one space (``behavior``), replaced
  whole by the next fit in the same transaction that records it;
* a `BehaviorFit` row per fit: settings, figures, the text → factors mapping that places new
  items, and lineage edges ``fit <- user`` to every user whose events it read;
* the staleness that forget proves: deleting a user, some events or a catalog item with events
  marks the current fit `stale` in the forget's own transaction, and the forget report lists
  the stale fit as residue until a refit (`save_fit`, usually the job a forget queues) replaces it.

Refit policy: `fit_due` says whether the current fit has seen fewer events than the tenant now
has by `refit_every_events` (the part's setting), so writers can queue a refit job.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from unipgen.errors import NotFoundError
from unipgen.memory.indexes import IndexManager
from unipgen.memory.lookups import tenant_id_of
from unipgen.memory.models import (
    BehaviorEvent,
    BehaviorFit,
    Embedding,
    EmbeddingSpace,
    Item,
    Lineage,
    Tenant,
    User,
    utcnow,
)
from unipgen.memory.transaction import Database, Transaction
from unipgen.schema.memory import FitRecord

_CHUNK = 20_000  # embedding rows per executemany


@dataclass(frozen=True)
class FitData:
    """A tenant's events as a fit reads them: parallel arrays over events (`user_idx` indexes
    `user_ids`, `item_idx` indexes `items`; `values` NaN where an event has none), every catalog
    item's key in row order, and the newest event id read."""

    user_idx: np.ndarray
    item_idx: np.ndarray
    types: np.ndarray
    values: np.ndarray
    items: list[str]
    user_ids: np.ndarray
    last_event_id: int


@dataclass(frozen=True)
class FitOutput:
    """What a fit job stores (`save_fit`): the item vectors by key, the mapping, the settings and
    figures, the users it read (row ids, for lineage) and the newest event id it saw."""

    space: str
    items: list[str]
    vectors: np.ndarray
    mapping: np.ndarray
    config: dict[str, Any]
    stats: dict[str, Any]
    user_ids: list[int]
    last_event_id: int


class Fits:
    """A tenant's fits: the data a fit reads, the fit stored as current, the current one and
    the history read back, and whether a refit is due (`refit_every_events`; 0: on demand only)."""

    def __init__(self, db: Database, indexes: IndexManager, refit_every_events: int = 0) -> None:
        self.db = db
        self.indexes = indexes
        self.refit_every_events = refit_every_events

    def fit_data(self, tenant: str) -> FitData:
        """Every event of the tenant and every catalog item, as `FitData` (one read transaction)."""
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            item_rows = session.execute(select(Item.id, Item.key).where(Item.tenant_id == tenant_id)
                                        .order_by(Item.id)).all()
            position = {item_id: n for n, (item_id, _) in enumerate(item_rows)}
            rows = session.execute(
                select(BehaviorEvent.user_id, BehaviorEvent.item_id, BehaviorEvent.type, BehaviorEvent.value,
                       BehaviorEvent.id)
                .join(User, User.id == BehaviorEvent.user_id).where(User.tenant_id == tenant_id)
                .execution_options(yield_per=100_000))
            users, items, types, values, last = [], [], [], [], 0
            for chunk in rows.partitions():
                users.append(np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk)))
                items.append(np.fromiter((position[r[1]] for r in chunk), dtype=np.int64, count=len(chunk)))
                types.append(np.array([r[2] for r in chunk], dtype=object))
                values.append(np.fromiter((np.nan if r[3] is None else r[3] for r in chunk), dtype=np.float64,
                                          count=len(chunk)))
                last = max(last, max(r[4] for r in chunk))
        user_ids, user_idx = np.unique(np.concatenate(users) if users else np.zeros(0, np.int64), return_inverse=True)
        return FitData(user_idx=user_idx, item_idx=_joined(items, np.int64), types=_joined(types, object),
                       values=_joined(values, np.float64), items=[key for _, key in item_rows], user_ids=user_ids,
                       last_event_id=last)

    def save_fit(self, tenant: str, fit: FitOutput) -> FitRecord:
        """Store a fit as the tenant's current one (replacing the previous) in one transaction."""
        with self.db.write() as w:
            return self.save(w, tenant_id_of(w.session, tenant), fit)

    def save(self, w: Transaction, tenant_id: int, fit: FitOutput) -> FitRecord:
        """`save_fit` inside the caller's transaction (a fit job stores it as it succeeds)."""
        session: Session = w.session
        _replace_space(session, tenant_id, fit)
        previous = session.scalars(select(BehaviorFit.id).where(BehaviorFit.tenant_id == tenant_id,
                                                                BehaviorFit.status.in_(("current", "stale")))).all()
        session.execute(update(BehaviorFit).where(BehaviorFit.id.in_(previous))
                        .values(status="replaced", mapping=None))
        session.execute(delete(Lineage).where(Lineage.derived_kind == "fit", Lineage.derived_id.in_(previous)))
        generation = (session.scalar(select(func.max(BehaviorFit.generation))
                                     .where(BehaviorFit.tenant_id == tenant_id)) or 0) + 1
        mapping = np.ascontiguousarray(fit.mapping, dtype=np.float32)
        row = BehaviorFit(tenant_id=tenant_id, generation=generation, space=fit.space, status="current",
                          config=fit.config, stats=fit.stats, mapping=mapping.tobytes(),
                          mapping_rows=mapping.shape[0], mapping_cols=mapping.shape[1],
                          last_event_id=fit.last_event_id, created_at=utcnow())
        session.add(row)
        session.flush()
        edges = [{"tenant_id": tenant_id, "derived_kind": "fit", "derived_id": row.id, "source_kind": "user",
                  "source_id": int(u)} for u in fit.user_ids]
        for start in range(0, len(edges), _CHUNK):
            session.execute(insert(Lineage), edges[start : start + _CHUNK])
        w.after_commit.append(lambda: self.indexes.refresh(tenant_id, fit.space))
        return _record(row, events_since=0)

    def current_fit(self, tenant: str, *, count_new: bool = True) -> FitRecord | None:
        """The tenant's fit in use (current or stale), or None before the first fit. With
        `count_new`, `events_since` counts the events written after it (a scan of the tenant's
        newer events: leave it off on a request's hot path)."""
        with self.db.engine.connect() as conn:
            found = fit_in_use(conn, tenant)
            if found is None:
                with self.db.session() as session:
                    tenant_id_of(session, tenant)  # an unknown tenant is an error, not "no fit"
                return None
            tenant_id, last_event_id, record = found
            if not count_new:
                return record
        with self.db.session() as session:
            since = _events_since(session, tenant_id, last_event_id)
        return record.model_copy(update={"events_since": since})

    def fits(self, tenant: str) -> list[FitRecord]:
        """Every fit of the tenant, newest first (replaced ones keep their settings and figures)."""
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            rows = session.scalars(select(BehaviorFit).where(BehaviorFit.tenant_id == tenant_id)
                                   .order_by(BehaviorFit.generation.desc())).all()
            return [_record(r, None) for r in rows]

    def fit_mapping(self, tenant: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The current fit's text → factors mapping and settings (to place new items), or None."""
        with self.db.session() as session:
            row = _current(session, tenant_id_of(session, tenant))
            if row is None or row.mapping is None:
                return None
            mapping = np.frombuffer(row.mapping, dtype=np.float32).reshape(row.mapping_rows, row.mapping_cols)
            return mapping, row.config

    def fit_residue(self, tenant: str) -> list[str]:
        """The residue a stale fit is now (empty once a refit replaced it): what a forget
        reported, scanned again after the queued refit ran."""
        with self.db.session() as session:
            return stale_fit_residue(session, tenant_id_of(session, tenant))

    def fit_due(self, tenant: str) -> str | None:
        """Why the tenant needs a refit now (stale, or `refit_every_events` new events), else None."""
        fit = self.current_fit(tenant)
        if fit is None:
            return None
        if fit.status == "stale":
            return f"fit {fit.generation} is stale: {fit.stale_reason}"
        every = self.refit_every_events
        if every and fit.events_since is not None and fit.events_since >= every:
            return f"{fit.events_since} events since fit {fit.generation} (refit every {every})"
        return None


def mark_fit_stale(session: Session, tenant_id: int, user_ids: list[int], item_ids: list[int], reason: str) -> bool:
    """Inside a forget's transaction: mark the tenant's current fit stale if it read the events of
    `user_ids` or placed one of `item_ids` from events. Returns whether it did."""
    row = session.scalar(select(BehaviorFit).where(BehaviorFit.tenant_id == tenant_id,
                                                   BehaviorFit.status == "current"))
    if row is None:
        return False
    read_users = bool(user_ids) and session.execute(select(func.count()).select_from(Lineage).where(
        Lineage.derived_kind == "fit", Lineage.derived_id == row.id, Lineage.source_kind == "user",
        Lineage.source_id.in_(user_ids))).scalar_one() > 0
    had_events = bool(item_ids) and session.execute(select(func.count()).select_from(BehaviorEvent).where(
        BehaviorEvent.item_id.in_(item_ids))).scalar_one() > 0
    if not (read_users or had_events):
        return False
    row.status, row.stale_reason, row.stale_since = "stale", reason, utcnow()
    return True


def refit_due(session: Session, tenant_id: int, every: int) -> bool:
    """Whether the tenant's current fit has seen `every` or more events fewer than are stored
    (the refit policy). A tenant without a fit is fitted on demand only."""
    row = session.scalar(select(BehaviorFit).where(BehaviorFit.tenant_id == tenant_id,
                                                   BehaviorFit.status == "current"))
    return row is not None and _events_since(session, tenant_id, row.last_event_id) >= every


def stale_fit_residue(session: Session, tenant_id: int) -> list[str]:
    """The residue a stale fit is: item vectors still shaped by forgotten events."""
    row = _current(session, tenant_id)
    if row is None or row.status != "stale":
        return []
    return [(f"behavior fit {row.generation} is stale ({row.stale_reason}): its item vectors still carry the "
             "forgotten events until a refit (`unipgen fit`, or the queued fit job) replaces it")]


@cache
def _fit_in_use_statement() -> Any:
    """Built once: building a statement costs more than running it on a request's hot path."""
    return (select(BehaviorFit.tenant_id, BehaviorFit.last_event_id, BehaviorFit.generation, BehaviorFit.space,
                   BehaviorFit.status, BehaviorFit.config, BehaviorFit.stats, BehaviorFit.created_at,
                   BehaviorFit.stale_reason, BehaviorFit.stale_since)
            .join(Tenant, Tenant.id == BehaviorFit.tenant_id)
            .where(Tenant.key == bindparam("tenant"), BehaviorFit.status.in_(("current", "stale"))))


def fit_in_use(conn: Connection, tenant: str) -> tuple[int, int, FitRecord] | None:
    """(tenant id, last event id the fit read, the fit) of the tenant's fit in use, or None
    (no fit yet, or no such tenant): one query on the caller's connection."""
    row = conn.execute(_fit_in_use_statement(), {"tenant": tenant}).first()
    if row is None:
        return None
    return row[0], row[1], FitRecord(generation=row[2], space=row[3], status=row[4], config=row[5], stats=row[6],
                                     created_at=row[7], stale_reason=row[8], stale_since=row[9])


def _current(session: Session, tenant_id: int) -> BehaviorFit | None:
    return session.scalar(select(BehaviorFit).where(BehaviorFit.tenant_id == tenant_id,
                                                    BehaviorFit.status.in_(("current", "stale"))))


def _events_since(session: Session, tenant_id: int, last_event_id: int) -> int:
    return session.scalar(select(func.count()).select_from(BehaviorEvent).join(User, User.id == BehaviorEvent.user_id)
                          .where(User.tenant_id == tenant_id, BehaviorEvent.id > last_event_id)) or 0


def _replace_space(session: Session, tenant_id: int, fit: FitOutput) -> None:
    """All of the space's vectors replaced by the fit's (its width may change from fit to fit)."""
    ids = dict(session.execute(select(Item.key, Item.id).where(Item.tenant_id == tenant_id)).all())
    missing = [key for key in fit.items if key not in ids]
    if missing:  # an item forgotten while the fit ran: the fit must not bring its vector back
        raise NotFoundError(f"item {missing[0]!r} of the fit is gone; fit again")
    vectors = np.ascontiguousarray(fit.vectors, dtype=np.float32)
    space = session.get(EmbeddingSpace, (tenant_id, fit.space), with_for_update=True)
    if space is None:
        space = EmbeddingSpace(tenant_id=tenant_id, name=fit.space, dim=vectors.shape[1], metric="ip", generation=0)
        session.add(space)
    space.dim, space.generation = int(vectors.shape[1]), space.generation + 1
    session.execute(delete(Embedding).where(Embedding.tenant_id == tenant_id, Embedding.space == fit.space))
    rows = [{"tenant_id": tenant_id, "space": fit.space, "user_id": None, "owner_kind": "item",
             "owner_id": ids[key], "vector": vectors[n].tobytes()} for n, key in enumerate(fit.items)]
    for start in range(0, len(rows), _CHUNK):
        session.execute(insert(Embedding), rows[start : start + _CHUNK])
    session.flush()


def _record(row: BehaviorFit, events_since: int | None) -> FitRecord:
    return FitRecord(generation=row.generation, space=row.space, status=row.status, config=row.config,
                     stats=row.stats, created_at=row.created_at, stale_reason=row.stale_reason,
                     stale_since=row.stale_since, events_since=events_since)


def _joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


__all__ = ["FitData", "FitOutput", "Fits", "fit_in_use", "mark_fit_stale", "refit_due", "stale_fit_residue"]
