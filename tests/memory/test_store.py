"""Tenants, users, profile history, and bad input that must change nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from unipgen.errors import ConflictError, InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import ProfileAttribute, User


def test_users_and_profile_history(populated: MemoryStore) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    t1 = datetime(2024, 6, 1, tzinfo=timezone.utc)
    populated.users.set_profile("acme", "alice", "city", "Paris", at=t0)
    populated.users.set_profile("acme", "alice", "city", "Lyon", at=t1)
    populated.users.set_profile("acme", "alice", "age", 31)
    assert populated.users.list_users("acme") == ["alice", "bob"]
    assert populated.users.profile("acme", "alice") == {"age": 31, "city": "Lyon"}
    assert populated.users.profile_history("acme", "alice", "city") == [("Paris", t0), ("Lyon", t1)]
    assert populated.users.profile("acme", "bob") == {}


def test_profile_values_keep_their_type(populated: MemoryStore) -> None:
    for name, value in [("vip", True), ("score", 0.5), ("tags", ["a", "b"]), ("prefs", {"k": 1})]:
        populated.users.set_profile("acme", "alice", name, value)
    profile = populated.users.profile("acme", "alice")
    assert profile["vip"] is True and profile["score"] == 0.5
    assert profile["tags"] == ["a", "b"] and profile["prefs"] == {"k": 1}


def test_summary_counts_and_top_items(populated: MemoryStore) -> None:
    summary = populated.users.user_summary("acme", "alice")
    assert summary.counts["behavior_events"] == 2
    assert summary.top_items[0] == "movie 1"  # the rated one comes first
    assert summary.first_event_at == datetime.fromtimestamp(1_000_000_000, tz=timezone.utc)


def test_duplicate_user_is_a_conflict_and_adds_nobody(populated: MemoryStore) -> None:
    with pytest.raises(ConflictError, match="'bob' already exists"):
        populated.users.create_users("acme", ["carol", "bob"])
    with pytest.raises(ConflictError, match="duplicate user ids"):
        populated.users.create_users("acme", ["dave", "dave"])
    assert populated.users.list_users("acme") == ["alice", "bob"]


def test_duplicate_tenant_is_a_conflict(populated: MemoryStore) -> None:
    with pytest.raises(ConflictError, match="tenant 'acme' already exists"):
        populated.users.create_tenant("acme")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.users.create_user("nope", "x"), "unknown tenant 'nope'"),
        (lambda s: s.users.set_profile("acme", "zed", "city", "Rome"), "unknown user 'zed'"),
        (lambda s: s.users.set_profile("nope", "alice", "city", "Rome"), "unknown tenant 'nope'"),
        (lambda s: s.users.user_summary("acme", "zed"), "unknown user 'zed'"),
        (lambda s: s.events.events("acme", "zed"), "unknown user 'zed'"),
    ],
)
def test_unknown_ids_are_named(populated: MemoryStore, call, message) -> None:
    with pytest.raises(NotFoundError, match=message):
        call(populated)
    assert populated.count_rows(ProfileAttribute) == 0
    assert populated.count_rows(User) == 2


def test_bad_ids_and_values_are_refused(populated: MemoryStore) -> None:
    with pytest.raises(InvalidInputError, match="user id .* is not a valid id: it must not be blank"):
        populated.users.create_user("acme", "   ")
    with pytest.raises(InvalidInputError, match="unsupported value type"):
        populated.users.set_profile("acme", "alice", "when", datetime.now(timezone.utc))
    assert populated.count_rows(ProfileAttribute) == 0


def test_store_reopens_with_its_data(settings) -> None:
    with MemoryStore.open(settings) as first:
        first.users.create_tenant("t")
        first.users.create_user("t", "u")
    with MemoryStore.open(settings) as again:  # migrating twice is a no-op
        assert again.users.list_users("t") == ["u"]
