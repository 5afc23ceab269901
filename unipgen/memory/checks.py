"""Find stored rows that break the data rules of `unipgen.schema.rules`.

The rules are enforced on every write, but rows written before them may break them: an id with a
'/' that no URL reaches, an infinite rating that makes every context of its user fail. This
check lists them (`MemoryStore.check_data`, `unipgen check`) so that an operator can forget or
delete them (`unipgen users forget`, `unipgen events delete`). It reads in batches and writes
nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Document,
    Face,
    Item,
    Job,
    ProfileAttribute,
    Subject,
    Tenant,
    User,
    VoiceSample,
)
from unipgen.schema.rules import id_problem, json_problem

#: The id columns the rule covers: (table model, column name, what the id names).
ID_COLUMNS: tuple[tuple[Any, str, str], ...] = (
    (Tenant, "key", "tenant"), (User, "key", "user"), (Item, "key", "item"), (Document, "key", "document"),
    (Face, "key", "face"), (Subject, "key", "subject"), (VoiceSample, "key", "voice sample"),
    (Artifact, "key", "artifact"), (Job, "key", "job"), (ProfileAttribute, "name", "profile attribute"),
)

_BATCH = 10_000


@dataclass(frozen=True)
class RuleViolation:
    """One stored value that breaks a data rule: where it is, what it is, and why it is refused."""

    table: str
    row_id: int
    column: str
    value: str  # repr of the stored value
    problem: str

    def __str__(self) -> str:
        return f"{self.table}#{self.row_id}.{self.column} = {self.value}: {self.problem}"


def find_violations(session: Session) -> list[RuleViolation]:
    """Every stored id that breaks the id rule, and every non-finite event value or profile value."""
    found = [v for model, column, what in ID_COLUMNS for v in _bad_ids(session, model, column, what)]
    return found + list(_non_finite_events(session)) + list(_bad_profile_values(session))


def _bad_ids(session: Session, model: Any, column: str, what: str) -> Iterator[RuleViolation]:
    rows = session.execute(select(model.id, getattr(model, column)).execution_options(yield_per=_BATCH))
    for row_id, value in rows:
        problem = id_problem(value)
        if problem is not None:
            yield RuleViolation(model.__tablename__, row_id, column, _shown(value), f"{what} id {problem}")


def _non_finite_events(session: Session) -> Iterator[RuleViolation]:
    # Beyond the largest float is ±infinity; PostgreSQL also orders NaN above every number
    # (SQLite stores NaN as NULL, so it holds none).
    biggest = sys.float_info.max
    rows = session.execute(select(BehaviorEvent.id, BehaviorEvent.value).where(
        or_(BehaviorEvent.value > biggest, BehaviorEvent.value < -biggest)))
    for row_id, value in rows:
        yield RuleViolation("behavior_events", row_id, "value", repr(value), "value must be a finite number")


def _bad_profile_values(session: Session) -> Iterator[RuleViolation]:
    rows = session.execute(select(ProfileAttribute.id, ProfileAttribute.value)
                           .where(ProfileAttribute.value_type.in_(("float", "list", "dict")))
                           .execution_options(yield_per=_BATCH))
    for row_id, value in rows:
        problem = json_problem(value)
        if problem is not None:
            yield RuleViolation("profile_attributes", row_id, "value", _shown(value), problem)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["ID_COLUMNS", "RuleViolation", "find_violations"]
