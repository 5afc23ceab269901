"""`store.events`: what users did, as behavior events on catalog items (bulk writes in one
transaction each) and as feedback on generated outputs.

Feedback is a behavior about artifacts rather than catalog items, so it has its own table
(`models.Feedback`) whose rows point at the outputs judged; forgetting an output takes the
judgements of it along. Preference training (`unipgen.orchestrator.training`, method ``dpo``)
reads them back with `feedback`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.bulk import insert_events
from unipgen.memory.fits import refit_due
from unipgen.memory.jobs import queue_fit_job
from unipgen.memory.lookups import (
    existing_keys,
    ids_by_key,
    insert_missing_users,
    tenant_id_of,
    user_id_of,
)
from unipgen.memory.models import Artifact, BehaviorEvent, Feedback, Item, User, utcnow
from unipgen.memory.parsing import parse_rows
from unipgen.memory.transaction import Database
from unipgen.schema.memory import EventIn, EventRecord, FeedbackIn


class Events:
    """Behavior events (ingested, listed) and feedback on outputs (recorded, listed).

    `refit_every_events` is the refit policy (`Fits.fit_due`): ingest queues a refit job once the
    current fit has seen that many events fewer than are stored; 0 leaves refits to demand.
    """

    def __init__(self, db: Database, refit_every_events: int = 0) -> None:
        self.db = db
        self.refit_every_events = refit_every_events

    def ingest_events(
        self, tenant: str, events: Iterable[EventIn | dict[str, Any]], *, create_users: bool = False
    ) -> int:
        """Write behavior events in one transaction: all of them, or on any error none.

        Items must exist; users too, unless `create_users` (then they are created in the same
        transaction). Returns the number of events written.
        """
        with _gc_paused():
            return self._ingest(tenant, parse_rows(events, EventIn, "event"), create_users)

    def _ingest(self, tenant: str, parsed: list[EventIn], create_users: bool) -> int:
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            if create_users:
                wanted = {e.user for e in parsed}
                insert_missing_users(w.session, tenant_id,
                                     sorted(wanted - existing_keys(w.session, User, tenant_id, list(wanted))))
            users = ids_by_key(w.session, User, tenant_id, {e.user for e in parsed}, "user", tenant)
            items = ids_by_key(w.session, Item, tenant_id, {e.item for e in parsed}, "item", tenant)
            rows = [(users[e.user], items[e.item], e.type, e.value, e.ts, e.meta) for e in parsed]
            insert_events(w.session.connection(), rows)
            if self.refit_every_events and refit_due(w.session, tenant_id, self.refit_every_events):
                queue_fit_job(w.session, tenant_id, f"refit policy: {self.refit_every_events} new events")
        return len(rows)

    def events(self, tenant: str, user: str, limit: int | None = None) -> list[EventRecord]:
        """A user's events, oldest first (the last `limit` if given), each with the `id` that
        `Privacy.delete_events` takes."""
        with self.db.session() as session:
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

    def add_feedback(self, tenant: str, feedback: Iterable[FeedbackIn | dict[str, Any]]) -> int:
        """Record judgements of outputs in one transaction (all or none); returns how many.

        Each names outputs (artifacts of kind ``output``) of its own user; anything else is
        refused with an error naming the artifact.
        """
        parsed: list[FeedbackIn] = parse_rows(feedback, FeedbackIn, "feedback")
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            users = {u: user_id_of(w.session, tenant, u) for u in dict.fromkeys(f.user for f in parsed)}
            keys = {k for f in parsed for k in (f.output, f.rejected) if k is not None}
            outputs = {a.key: a for a in w.session.scalars(
                select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.key.in_(keys)))}
            now = utcnow()
            for number, f in enumerate(parsed):
                ids = [_output_id(outputs, key, users[f.user], f.user, number)
                       for key in (f.output, f.rejected) if key is not None]
                w.session.add(Feedback(user_id=users[f.user], type=f.type, artifact_id=ids[0],
                                       rejected_id=ids[1] if len(ids) > 1 else None, ts=f.ts or now, meta=f.meta))
        return len(parsed)

    def feedback(self, tenant: str, user: str) -> list[FeedbackIn]:
        """A user's judgements, oldest first."""
        chosen, rejected = aliased(Artifact), aliased(Artifact)
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.execute(
                select(Feedback, chosen.key, rejected.key)
                .join(chosen, chosen.id == Feedback.artifact_id)
                .outerjoin(rejected, rejected.id == Feedback.rejected_id)
                .where(Feedback.user_id == user_id).order_by(Feedback.ts, Feedback.id)
            ).all()
            return [FeedbackIn(user=user, type=f.type, output=out, rejected=other, ts=f.ts, meta=f.meta)
                    for f, out, other in rows]


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


def _output_id(outputs: dict[str, Artifact], key: str, user_id: int, user: str, number: int) -> int:
    artifact = outputs.get(key)
    if artifact is None or artifact.user_id != user_id:
        raise NotFoundError(f"feedback #{number}: user {user!r} has no output {key!r}")
    if artifact.kind != "output":
        raise InvalidInputError(f"feedback #{number}: {key!r} is not a generated output (its kind is {artifact.kind!r})")
    return artifact.id
