"""Bulk behavior ingest: one transaction, all or nothing, with errors that name the bad row."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import get_args

import pytest

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import BehaviorEvent, User
from unipgen.schema import EVENT_TYPES, EventIn
from unipgen.schema.memory import EventType


def _events(n: int, user: str = "alice") -> list[dict]:
    return [{"user": user, "type": "view", "item": f"m{i % 5}", "ts": 1_600_000_000 + i} for i in range(n)]


def test_event_type_literal_names_exactly_the_event_types() -> None:
    # EventType is spelled out for type checkers; pydantic validates against it, the user model signs by EVENT_TYPES.
    assert get_args(EventType) == tuple(EVENT_TYPES)


def test_bulk_ingest_writes_every_event_in_order(populated: MemoryStore) -> None:
    before = populated.count_rows(BehaviorEvent)
    assert populated.events.ingest_events("acme", _events(1000)) == 1000
    assert populated.count_rows(BehaviorEvent) == before + 1000
    events = populated.events.events("acme", "alice")
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert EventIn(**events[0].model_dump(exclude={"id"})) == EventIn(
        user="alice", type="rate", item="m1", value=4.5, ts=1_000_000_000)
    assert len({e.id for e in events}) == len(events)  # each listed event has its own id


def test_timestamps_are_stored_in_utc(populated: MemoryStore) -> None:
    clicked = next(e for e in populated.events.events("acme", "alice") if e.type == "click")
    assert clicked.ts == datetime(2020, 1, 1, 8, 0, tzinfo=timezone.utc)
    assert clicked.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "bad, error, message",
    [
        ({"item": "missing"}, NotFoundError, "unknown item 'missing'"),
        ({"user": "zed"}, NotFoundError, "unknown user 'zed'"),
        ({"ts": "yesterday"}, InvalidInputError, r"event #999 is invalid: ts"),
        ({"ts": "2020-01-01T00:00:00"}, InvalidInputError, "event #999 is invalid: ts.*timezone"),
        ({"type": "teleport"}, InvalidInputError, "event #999 is invalid: type: Input should be 'view'"),
        ({"value": "lots"}, InvalidInputError, "event #999 is invalid: value"),
        ({"extra": 1}, InvalidInputError, "event #999 is invalid: extra"),
    ],
)
def test_a_bad_event_anywhere_rolls_back_the_whole_batch(populated: MemoryStore, bad, error, message) -> None:
    events = _events(1000)
    events[-1] = {**events[-1], **bad}
    before = populated.count_rows(BehaviorEvent)
    with pytest.raises(error, match=message):
        populated.events.ingest_events("acme", events)
    assert populated.count_rows(BehaviorEvent) == before


_FAIL_TRIGGER = {
    "sqlite": [("CREATE TRIGGER fail_marked BEFORE INSERT ON behavior_events WHEN NEW.value = -999 "
               "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")],
    "postgresql": [
        ("CREATE FUNCTION fail_marked() RETURNS trigger AS $$ BEGIN IF NEW.value = -999 THEN "
        "RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"),
        "CREATE TRIGGER fail_marked BEFORE INSERT ON behavior_events FOR EACH ROW EXECUTE FUNCTION fail_marked()",
    ],
}


def test_database_failure_on_the_last_row_leaves_nothing(populated: MemoryStore) -> None:
    """A trigger makes the database itself refuse the last row, after whole chunks went in."""
    from sqlalchemy import text

    from unipgen.errors import StoreError
    from unipgen.memory import bulk

    with populated.engine.begin() as conn:
        for statement in _FAIL_TRIGGER[conn.dialect.name]:
            conn.execute(text(statement))
    events = _events(bulk._CHUNK + 10)
    events[-1] = events[-1] | {"value": -999}
    before = populated.count_rows(BehaviorEvent)
    with pytest.raises(StoreError, match="injected failure"):
        populated.events.ingest_events("acme", events)
    assert populated.count_rows(BehaviorEvent) == before


def test_metadata_must_be_json(populated: MemoryStore) -> None:
    events = _events(3)
    events[1] = events[1] | {"meta": {"score": float("nan")}}
    with pytest.raises(InvalidInputError, match="event #1 is invalid: meta"):
        populated.events.ingest_events("acme", events)


def test_created_users_roll_back_with_the_events(populated: MemoryStore) -> None:
    events = _events(10, user="newcomer") + [{"user": "other", "type": "view", "item": "nope", "ts": 5}]
    with pytest.raises(NotFoundError, match="unknown item 'nope'"):
        populated.events.ingest_events("acme", events, create_users=True)
    assert populated.count_rows(User) == 2
    assert populated.events.ingest_events("acme", _events(10, user="newcomer"), create_users=True) == 10
    assert "newcomer" in populated.users.list_users("acme")


def test_events_of_another_tenant_do_not_resolve(populated: MemoryStore) -> None:
    populated.users.create_tenant("other")
    with pytest.raises(NotFoundError, match="unknown user 'alice' in tenant 'other'"):
        populated.events.ingest_events("other", _events(1))


def test_items_bulk_add(populated: MemoryStore) -> None:
    assert populated.catalog.add_items("acme", [{"key": "m1", "text": "x"}, {"key": "m9", "text": "new"}], exist_ok=True) == 1
    from unipgen.errors import ConflictError

    with pytest.raises(ConflictError, match="item 'm1' already exists"):
        populated.catalog.add_items("acme", [{"key": "m1", "text": "x"}])
    with pytest.raises(ConflictError, match="duplicate item id 'z'"):
        populated.catalog.add_items("acme", [{"key": "z", "text": "x"}, {"key": "z", "text": "y"}])
