"""The data rules in the store (SQLite and PostgreSQL): one id rule and finite numbers on every
write path, deleting events with what was derived from them, and the check of stored rows."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.helpers import add_text_artifact, png_bytes, wav_bytes
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import tag_key
from unipgen.memory.models import Artifact, BehaviorEvent, Document, Item, Lineage, User
from unipgen.schema.rules import NOT_FINITE, id_problem

#: Ids the rule refuses, one per reason.
BAD_IDS = ["", " ", "a/b", "../../slash/user", ".", "..", " lead", "trail ", "tab\there", "nul\x00",
           "del\x7f", "c1\x85", "x" * 256, "\ud800"]
#: Awkward ids the rule allows (each must then be reachable through the API: tests/api/test_datarules.py).
GOOD_IDS = ["a b", "100%", "what?", "#hash", "ünï😀", "a+b=c&d", "semi;colon", "...", ".hidden", "x" * 255]


@pytest.mark.parametrize("value", BAD_IDS)
def test_the_rule_refuses(value: str) -> None:
    assert id_problem(value) is not None


@pytest.mark.parametrize("value", GOOD_IDS)
def test_the_rule_allows(value: str) -> None:
    assert id_problem(value) is None


#: Every write path that takes a new id, as (name, call with the id).
WRITES: dict[str, Callable[[MemoryStore, str], Any]] = {
    "tenant": lambda s, k: s.users.create_tenant(k),
    "user": lambda s, k: s.users.create_user("acme", k),
    "bulk user": lambda s, k: s.events.ingest_events("acme", [{"user": k, "type": "like", "item": "m1", "ts": 1}],
                                              create_users=True),
    "item": lambda s, k: s.catalog.add_items("acme", [{"key": k, "text": "t"}]),
    "document": lambda s, k: s.content.add_document("acme", "alice", k, "some text"),
    "face": lambda s, k: s.content.add_face("acme", "alice", k, png_bytes(), consent=True),
    "voice": lambda s, k: s.content.add_voice("acme", "alice", k, wav_bytes(), consent=True),
    "subject": lambda s, k: s.content.add_subject("acme", "alice", k, name="Rex", class_noun="dog", images=[png_bytes()]),
    "artifact": lambda s, k: s.artifacts.add_artifact("acme", k, kind="output", media_type="text/plain", data=b"x"),
    "job": lambda s, k: s.jobs.submit_job("acme", "alice", {"kind": "generate"}, key=k),
    "profile attribute": lambda s, k: s.users.set_profile("acme", "alice", k, 1),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_every_write_path_refuses_the_ids_of_the_issue(populated: MemoryStore, write: str) -> None:
    for bad in ("../../slash/user", "a/b", "..", " x", "c\n"):
        with pytest.raises(InvalidInputError, match="is not a valid id"):
            WRITES[write](populated, bad)
    assert populated.check_data() == []  # nothing was written


@pytest.mark.parametrize("write", sorted(WRITES))
def test_every_write_path_takes_awkward_legal_ids(populated: MemoryStore, write: str) -> None:
    WRITES[write](populated, "a b?#100%ü")


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "Infinity", "NaN"])
def test_non_finite_numbers_are_refused_everywhere_with_one_message(populated: MemoryStore, value: Any) -> None:
    writes = [
        lambda: populated.events.ingest_events("acme", [{"user": "alice", "type": "rate", "item": "m1", "value": value,
                                                  "ts": 1}]),
        lambda: populated.catalog.add_items("acme", [{"key": "n1", "text": "t", "meta": {"score": float(value)}}]),
        lambda: populated.content.add_documents("acme", "alice", [{"key": "n1", "text": "t", "meta": {"x": [float(value)]}}]),
        lambda: populated.users.set_profile("acme", "alice", "score", float(value)),
        lambda: populated.users.set_profile("acme", "alice", "scores", {"a": [1.0, float(value)]}),
    ]
    for write in writes:
        with pytest.raises(InvalidInputError, match=r"must be a finite number \(not NaN or infinity\)"):
            write()
    assert NOT_FINITE == "must be a finite number (not NaN or infinity)"
    assert populated.users.profile("acme", "alice") == {}
    assert len(populated.events.events("acme", "alice")) == 2


# -- deleting events ---------------------------------------------------------------------------


@pytest.fixture
def history(populated: MemoryStore) -> MemoryStore:
    """alice has outputs derived from her history (one of them refined into another), one
    derived from a document only; bob has an output derived from his own history."""
    s = populated
    s.events.ingest_events("acme", [{"user": "alice", "type": "skip", "item": "m3", "ts": 1_200_000_000},
                             {"user": "alice", "type": "skip", "item": "m4", "ts": 1_300_000_000}])
    s.content.add_document("acme", "alice", "d1", "I love westerns")
    add_text_artifact(s, "from-history", b"a", user="alice", derived_from=[("user", "alice"), ("item", "m1")])
    add_text_artifact(s, "refined", b"b", user="alice", derived_from=[("artifact", "from-history")])
    add_text_artifact(s, "from-document", b"c", user="alice", derived_from=[("document", "d1")])
    add_text_artifact(s, "bob-out", b"d", user="bob", derived_from=[("user", "bob")])
    return s


def _artifacts(store: MemoryStore) -> set[str]:
    with store.session() as session:
        return set(session.scalars(Artifact.__table__.select().with_only_columns(Artifact.key)))


def test_listed_events_carry_the_id_that_deletes_them(history: MemoryStore) -> None:
    events = history.events.events("acme", "alice")
    clicked = next(e for e in events if e.type == "click")
    report = history.privacy.delete_events("acme", "alice", ids=[clicked.id])
    assert report.residue == []
    assert report.deleted["events"] == 1
    assert clicked.id not in {e.id for e in history.events.events("acme", "alice")}
    assert len(history.events.events("acme", "alice")) == len(events) - 1
    assert len(history.events.events("acme", "bob")) == 1


def test_deleting_events_deletes_what_was_derived_from_the_history(history: MemoryStore) -> None:
    report = history.privacy.delete_events("acme", "alice", type="skip")
    assert report.residue == []
    assert report.deleted["events"] == 2 and report.deleted["artifacts"] == 2
    assert _artifacts(history) == {"from-document", "bob-out"}
    assert {e.type for e in history.events.events("acme", "alice")} == {"rate", "click"}
    with history.session() as session:  # no edge names a deleted artifact
        assert session.query(Lineage).count() == 2  # from-document <- d1, bob-out <- bob


def test_filters_combine_and_a_range_is_half_open(history: MemoryStore) -> None:
    at = datetime.fromtimestamp(1_200_000_000, timezone.utc)
    until = datetime.fromtimestamp(1_300_000_000, timezone.utc)
    report = history.privacy.delete_events("acme", "alice", type="skip", since=at, until=until)
    assert report.deleted["events"] == 1
    assert [e.item for e in history.events.events("acme", "alice") if e.type == "skip"] == ["m4"]
    report = history.privacy.delete_events("acme", "alice", item="m1")
    assert report.deleted["events"] == 1
    assert "m1" not in {e.item for e in history.events.events("acme", "alice")}


def test_no_match_deletes_nothing_and_no_filter_deletes_all(history: MemoryStore) -> None:
    report = history.privacy.delete_events("acme", "alice", type="purchase")
    assert report.deleted == {} and report.residue == []
    assert _artifacts(history) == {"from-history", "refined", "from-document", "bob-out"}
    report = history.privacy.delete_events("acme", "alice")
    assert report.deleted["events"] == 4
    assert history.events.events("acme", "alice") == []
    assert len(history.events.events("acme", "bob")) == 1
    assert _artifacts(history) == {"from-document", "bob-out"}


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"ids": [10**9]}, NotFoundError, "unknown event 1000000000"),
    ({"ids": [1, 2**64]}, NotFoundError, f"unknown event {2**64}"),  # beyond SQL's integers (found by fuzzing)
    ({"type": "poke"}, InvalidInputError, "unknown event type 'poke'"),
    ({"item": "nope"}, NotFoundError, "unknown item 'nope'"),
    ({"since": datetime(2020, 1, 1)}, InvalidInputError, "aware datetimes"),
    ({"since": datetime(2021, 1, 1, tzinfo=timezone.utc), "until": datetime(2020, 1, 1, tzinfo=timezone.utc)},
     InvalidInputError, "must be before until"),
])
def test_bad_deletions_are_refused_and_delete_nothing(history: MemoryStore, options, error, message) -> None:
    with pytest.raises(error, match=message):
        history.privacy.delete_events("acme", "alice", **options)
    assert len(history.events.events("acme", "alice")) == 4
    assert len(_artifacts(history)) == 4


def test_an_event_of_another_user_is_not_found(history: MemoryStore) -> None:
    bobs = history.events.events("acme", "bob")[0].id
    with pytest.raises(NotFoundError, match=f"unknown event {bobs}"):
        history.privacy.delete_events("acme", "alice", ids=[bobs])


# -- stored rows that break the rules ------------------------------------------------------------


def _legacy_rows(store: MemoryStore) -> None:
    """Rows as the store wrote them before the rules: a user, an item and a document with a '/',
    and an infinite rating."""
    with store.session() as session, session.begin():
        tenant_id = session.scalar(User.__table__.select().with_only_columns(User.tenant_id).limit(1))
        user = User(tenant_id=tenant_id, key="../../slash/user")
        session.add(user)
        session.add(Item(tenant_id=tenant_id, key="i/1", text="t"))
        session.flush()
        alice = session.scalar(User.__table__.select().with_only_columns(User.id).where(User.key == "alice"))
        session.add(Document(user_id=alice, key="d/1", kind="note", text="t", ts=datetime.now(timezone.utc)))
        item = session.scalar(Item.__table__.select().with_only_columns(Item.id).where(Item.key == "m1"))
        session.add(BehaviorEvent(user_id=alice, item_id=item, type="rate", value=math.inf,
                                  ts=datetime.now(timezone.utc)))


def test_the_check_lists_stored_rows_that_break_the_rules(populated: MemoryStore) -> None:
    assert populated.check_data() == []
    _legacy_rows(populated)
    found = {(v.table, v.column, v.value) for v in populated.check_data()}
    assert found == {("users", "key", "'../../slash/user'"), ("items", "key", "'i/1'"),
                     ("documents", "key", "'d/1'"), ("behavior_events", "value", "inf")}
    assert [d.key for d in populated.content.documents("acme", "alice")] == ["d/1"]  # still listed, to be found


def test_a_legacy_infinite_rating_is_listed_and_deleted(populated: MemoryStore) -> None:
    _legacy_rows(populated)
    bad = next(v for v in populated.check_data() if v.table == "behavior_events")
    listed = {e.id: e for e in populated.events.events("acme", "alice")}
    assert listed[bad.row_id].value is None or math.isinf(listed[bad.row_id].value)
    assert listed[bad.row_id].model_dump(mode="json")["value"] is None  # JSON has no infinity
    populated.privacy.delete_events("acme", "alice", ids=[bad.row_id])
    assert not any(v.table == "behavior_events" for v in populated.check_data())
    populated.privacy.forget_user("acme", "../../slash/user")  # a bad id is still forgotten through the store
    assert "../../slash/user" not in populated.users.list_users("acme")


def test_movielens_tag_keys_obey_the_rule() -> None:
    for tag in ("sci-fi/horror", "  padded ", "new\nline", "x" * 400, "", "../.."):
        assert id_problem(tag_key("42", tag)) is None
    assert tag_key("42", "dark comedy") == "tag:42:dark comedy"
