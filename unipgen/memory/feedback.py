"""Feedback: a user's thumbs up/down on generated outputs and choices between two of them.

Feedback is a behavior about artifacts rather than catalog items, so it has its own table
(`models.Feedback`) whose rows point at the outputs judged; forgetting an output takes the
judgements of it along. Preference training (`unipgen.orchestrator.training`, method ``dpo``)
reads them back with `feedback`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.lookups import tenant_id_of, user_id_of
from unipgen.memory.models import Artifact, Feedback, utcnow
from unipgen.memory.parsing import parse_rows
from unipgen.schema.memory import FeedbackIn

if TYPE_CHECKING:
    from unipgen.memory.store import MemoryStore


class FeedbackMixin:
    def add_feedback(self: MemoryStore, tenant: str, feedback: Iterable[FeedbackIn | dict[str, Any]]) -> int:
        """Record judgements of outputs in one transaction (all or none); returns how many.

        Each names outputs (artifacts of kind ``output``) of its own user; anything else is
        refused with an error naming the artifact.
        """
        parsed: list[FeedbackIn] = parse_rows(feedback, FeedbackIn, "feedback")
        with self._write() as w:
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

    def feedback(self: MemoryStore, tenant: str, user: str) -> list[FeedbackIn]:
        """A user's judgements, oldest first."""
        chosen, rejected = aliased(Artifact), aliased(Artifact)
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.execute(
                select(Feedback, chosen.key, rejected.key)
                .join(chosen, chosen.id == Feedback.artifact_id)
                .outerjoin(rejected, rejected.id == Feedback.rejected_id)
                .where(Feedback.user_id == user_id).order_by(Feedback.ts, Feedback.id)
            ).all()
            return [FeedbackIn(user=user, type=f.type, output=out, rejected=other, ts=f.ts, meta=f.meta)
                    for f, out, other in rows]


def _output_id(outputs: dict[str, Artifact], key: str, user_id: int, user: str, number: int) -> int:
    artifact = outputs.get(key)
    if artifact is None or artifact.user_id != user_id:
        raise NotFoundError(f"feedback #{number}: user {user!r} has no output {key!r}")
    if artifact.kind != "output":
        raise InvalidInputError(f"feedback #{number}: {key!r} is not a generated output (its kind is {artifact.kind!r})")
    return artifact.id
