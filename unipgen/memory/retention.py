"""Retention: delete data older than a per-kind limit, with everything derived from it.

`purge_expired` runs across all tenants (`unipgen purge`, from a cron job). An item's age is
its creation time: `created_at` for faces, voice samples and outputs; documents and behavior
events have no such column, so their `ts` (when the text was written or the event happened,
which defaults to when it was stored) counts, and imported history older than the limit goes
at the next purge.

Faces, voices, documents and outputs go the way `forget_item` removes them: rows, embeddings
and vectors, blobs no other row uses, and every artifact derived from them through lineage. That
runs in chunks of `CHUNK` items, each one transaction, so a failure leaves any item either
whole or gone. Events are no lineage node: nothing records being derived from one event, only
from a user's whole history, ``("user", key)``. An artifact derived from the history at time C
can only hold events up to C, so once C is older than the event limit everything it was built
from has expired too, and it is purged with its own derivatives; newer ones mix fresh and
expired events and stay until they age past the limit themselves. Events are then deleted in
bulk (no other row points at an event, so none is orphaned).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.orm import Session

from unipgen.errors import InvalidInputError
from unipgen.memory.forget import Forget, Plan, add_derived
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Document,
    Face,
    Lineage,
    Tenant,
    User,
    VoiceSample,
    utcnow,
)
from unipgen.memory.transaction import Database, rowcount

log = logging.getLogger(__name__)

#: The kinds a retention policy may limit.
KINDS = ("face", "voice", "document", "event", "output")

#: Items deleted per transaction: bounds each transaction and each query's list of ids.
CHUNK = 500

#: Each kind of purge target: its table and its row kind in a forget plan. ``history`` are the
#: artifacts derived from a user's whole history before the event cutoff.
_TARGETS: dict[str, tuple[Any, str]] = {
    "face": (Face, "face"), "voice": (VoiceSample, "voice"), "document": (Document, "document"),
    "output": (Artifact, "artifact"), "history": (Artifact, "artifact"),
}

#: The table whose deleted-row count `Forget.run` reports, of each kind purged as a forget target.
_TABLES = {"face": "faces", "voice": "voice_samples", "document": "documents"}


@dataclass(frozen=True)
class PurgeReport:
    """What a purge removed (or, dry, would remove). `residue` lists anything the forget scan
    found left behind (empty when clean; see `ForgetReport.residue`)."""

    cutoffs: dict[str, datetime]
    purged: dict[str, int]
    derived: int
    residue: tuple[str, ...] = ()


class Retention:
    """The purge of expired data (`purge_expired`), forgetting through `forget` in chunks."""

    def __init__(self, db: Database, forget: Forget) -> None:
        self.db = db
        self.forget = forget

    def purge_expired(self, retention_days: Mapping[str, float], *, now: datetime | None = None,
                      dry_run: bool = False) -> PurgeReport:
        """Delete, in every tenant, the items of each kind in `retention_days` older than that many
        days before `now`, and what was derived from them. Kinds not listed are kept.

        With `dry_run`, count what would go and delete nothing.
        """
        cutoffs = _cutoffs(retention_days, now or utcnow())
        with self.db.session() as session:
            targets = _expired(session, cutoffs)
            if dry_run:
                return _dry_report(session, cutoffs, targets)
        deleted, residue = self._purge_items(targets)
        purged = _target_counts(cutoffs, targets)
        purged.update({kind: deleted.get(table, 0) for kind, table in _TABLES.items() if kind in cutoffs})
        if "event" in cutoffs:
            purged["event"] = self._purge_events(cutoffs["event"])
        # Every expired output is deleted once, as a target or as derived from an earlier chunk.
        derived = max(deleted.get("artifacts", 0) - purged.get("output", 0), 0)
        return PurgeReport(cutoffs=cutoffs, purged=purged, derived=derived, residue=tuple(residue))

    def _purge_items(self, targets: dict[int, dict[str, set[int]]]) -> tuple[dict[str, int], list[str]]:
        """Forget the targets, tenant by tenant, `CHUNK` items per transaction; the summed
        counts of deleted rows, and any residue."""
        with self.db.session() as session:
            tenants = dict(session.execute(select(Tenant.id, Tenant.key).where(Tenant.id.in_(targets))).all())
        deleted: dict[str, int] = defaultdict(int)
        residue: list[str] = []
        for tenant_id, by_kind in targets.items():
            for chunk in _chunks(by_kind):
                plan = self._live_plan(tenant_id, chunk)
                if not plan.nodes():
                    continue  # all of it went earlier, derived from a previous chunk
                report = self.forget.run(plan, f"{len(plan.nodes())} expired items", tenants[tenant_id])
                for table, count in report.deleted.items():
                    deleted[table] += count
                residue += report.residue
        if residue:
            log.warning("purge left residue: %s", residue)
        return dict(deleted), residue

    def _live_plan(self, tenant_id: int, chunk: list[tuple[str, int]]) -> Plan:
        """A forget plan of the items of `chunk` that still exist."""
        plan = Plan(tenant_id)
        with self.db.session() as session:
            for kind in {kind for kind, _ in chunk}:
                model, row_kind = _TARGETS[kind]
                ids = [i for k, i in chunk if k == kind]
                plan.rows[row_kind].update(session.scalars(select(model.id).where(model.id.in_(ids))))
        return plan

    def _purge_events(self, cutoff: datetime) -> int:
        """Delete every event older than `cutoff`, in one transaction."""
        with self.db.write() as w:
            return rowcount(w.session.execute(delete(BehaviorEvent).where(BehaviorEvent.ts < cutoff)))


def _cutoffs(retention_days: Mapping[str, float], now: datetime) -> dict[str, datetime]:
    """kind -> the time before which items of that kind have expired; the policy checked."""
    if now.tzinfo is None:
        raise InvalidInputError("now must be an aware datetime (UTC)")
    unknown = sorted(set(retention_days) - set(KINDS))
    if unknown:
        raise InvalidInputError(f"unknown retention kind {unknown[0]!r}; expected one of {list(KINDS)}")
    cutoffs = {}
    for kind, days in retention_days.items():
        if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or days < 0:
            raise InvalidInputError(f"retention of {kind!r} must be a finite number of days ≥ 0, not {days!r}")
        try:
            cutoffs[kind] = now - timedelta(days=days)
        except OverflowError:
            raise InvalidInputError(f"retention of {kind!r} is too long: {days!r} days") from None
    return cutoffs


def _expired(session: Session, cutoffs: dict[str, datetime]) -> dict[int, dict[str, set[int]]]:
    """tenant id -> target kind -> ids of the expired items (events aside)."""
    queries: list[tuple[str, Select[int, int]]] = []
    for kind in ("face", "voice", "document"):
        if kind in cutoffs:
            model = _TARGETS[kind][0]
            age = model.ts if model is Document else model.created_at  # documents have no created_at
            queries.append((kind, select(User.tenant_id, model.id).join(User, User.id == model.user_id)
                            .where(age < cutoffs[kind])))
    if "output" in cutoffs:
        queries.append(("output", select(Artifact.tenant_id, Artifact.id)
                        .where(Artifact.kind == "output", Artifact.created_at < cutoffs["output"])))
    if "event" in cutoffs:
        queries.append(("history", select(Artifact.tenant_id, Artifact.id)
                        .join(Lineage, (Lineage.derived_kind == "artifact") & (Lineage.derived_id == Artifact.id))
                        .where(Lineage.source_kind == "user", Artifact.created_at < cutoffs["event"])))
    targets: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for kind, query in queries:
        for tenant_id, row_id in session.execute(query):
            targets[tenant_id][kind].add(row_id)
    for by_kind in targets.values():  # an old output derived from old history counts as an expired output
        by_kind["history"] -= by_kind.get("output", set())
    return targets


def _target_counts(cutoffs: dict[str, datetime], targets: dict[int, dict[str, set[int]]]) -> dict[str, int]:
    """kind -> how many expired items of that kind `targets` holds (events aside)."""
    return {kind: sum(len(by_kind.get(kind, ())) for by_kind in targets.values()) for kind in cutoffs
            if kind != "event"}


def _dry_report(session: Session, cutoffs: dict[str, datetime], targets: dict[int, dict[str, set[int]]]) -> PurgeReport:
    """The report a purge of `targets` would give, read without deleting anything."""
    purged = _target_counts(cutoffs, targets)
    if "event" in cutoffs:
        purged["event"] = session.scalar(select(func.count()).select_from(BehaviorEvent)
                                         .where(BehaviorEvent.ts < cutoffs["event"])) or 0
    return PurgeReport(cutoffs=cutoffs, purged=purged, derived=_count_derived(session, targets))


def _count_derived(session: Session, targets: dict[int, dict[str, set[int]]]) -> int:
    """How many artifacts a purge of `targets` deletes besides the expired outputs."""
    derived = 0
    for by_kind in targets.values():
        artifacts: set[int] = set()
        for chunk in _chunks(by_kind):
            plan = Plan(0)  # only its rows are read: lineage ids are global
            for kind, row_id in chunk:
                plan.rows[_TARGETS[kind][1]].add(row_id)
            add_derived(session, plan)
            artifacts |= plan.rows["artifact"]
        derived += len(artifacts) - len(by_kind.get("output", ()))
    return derived


def _chunks(by_kind: dict[str, set[int]]) -> Iterator[list[tuple[str, int]]]:
    """(kind, id) pairs of all kinds, `CHUNK` at a time."""
    pairs = iter([(kind, i) for kind, ids in by_kind.items() for i in sorted(ids)])
    while chunk := list(islice(pairs, CHUNK)):
        yield chunk


__all__ = ["CHUNK", "KINDS", "PurgeReport", "Retention"]
