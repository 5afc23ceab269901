"""`unipgen check` lists stored rows that break the data rules; `unipgen events list|delete`
finds and deletes them (and any event), with what was derived from the user's history."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

from tests.cli.test_cli import as_json, run
from unipgen.memory import MemoryStore
from unipgen.memory.models import BehaviorEvent, Item, User
from unipgen.settings import Settings


def _legacy_store(home: Path) -> None:
    """alice with two events, and rows written before the rules: an infinite rating, a user
    whose id has a '/'."""
    with MemoryStore.open(Settings(home=home)) as store:
        store.users.create_tenant("default")
        store.users.create_user("default", "alice")
        store.catalog.add_items("default", [{"key": "m1", "text": "a film"}])
        store.events.ingest_events("default", [{"user": "alice", "type": "like", "item": "m1", "ts": 1_600_000_000},
                                        {"user": "alice", "type": "click", "item": "m1", "ts": 1_600_000_100}])
        store.artifacts.add_artifact("default", "out", kind="output", media_type="text/plain", data=b"x", user="alice",
                           derived_from=[("user", "alice")])
        with store.session() as session, session.begin():
            tenant_id = session.query(User.tenant_id).filter(User.key == "alice").scalar()
            session.add(User(tenant_id=tenant_id, key="../../slash/user"))
            session.add(BehaviorEvent(user_id=session.query(User.id).filter(User.key == "alice").scalar(),
                                      item_id=session.query(Item.id).filter(Item.key == "m1").scalar(),
                                      type="rate", value=math.inf, ts=datetime.now(timezone.utc)))


def test_check_finds_the_bad_rows_and_events_delete_removes_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _legacy_store(home)
    found = run(home, "check", "--json", ok=False)
    assert found.returncode == 1
    violations = as_json(found)["violations"]
    assert {(v["table"], v["value"]) for v in violations} == {("users", "'../../slash/user'"),
                                                              ("behavior_events", "inf")}
    bad = next(v["row_id"] for v in violations if v["table"] == "behavior_events")
    listed = as_json(run(home, "events", "list", "alice", "--json"))["events"]
    assert [e["type"] for e in listed] == ["like", "click", "rate"] and listed[-1]["id"] == bad
    report = as_json(run(home, "events", "delete", "alice", "--id", str(bad), "--json"))
    assert report["deleted"]["events"] == 1 and report["deleted"]["artifacts"] == 1 and report["residue"] == []
    report = as_json(run(home, "events", "delete", "alice", "--type", "click", "--since",
                         "2020-09-13T12:28:00+00:00", "--json"))
    assert report["deleted"] == {"events": 1}
    run(home, "users", "forget", "../../slash/user")
    assert "no stored row breaks" in run(home, "check").stdout
    assert [e["type"] for e in as_json(run(home, "events", "list", "alice", "--json"))["events"]] == ["like"]
    refused = run(home, "events", "delete", "alice", "--until", "yesterday", ok=False)
    assert refused.returncode == 2 and "--until must be an ISO 8601 time" in refused.stderr
