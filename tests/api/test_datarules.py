"""The data rules through the live service (SQLite and PostgreSQL): non-finite numbers refused
the same way everywhere, events deleted with what was derived from them, no id that can be
written but not reached, and awkward-but-legal ids round-tripping through the SDK."""

from __future__ import annotations

import io
import json
import math
import zipfile
from datetime import datetime, timezone

import httpx
import pytest

from tests.api.conftest import Live
from unipgen.client import Client
from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import BehaviorEvent, Item, User
from unipgen.schema.rules import NOT_FINITE

ITEMS = [{"key": "m1", "text": "Warrior (2011) drama about two brothers who fight"},
         {"key": "m2", "text": "Toy Story (1995) animation adventure comedy"}]

FACE = (PERSONA_SAMPLE / "faces" / "s1-1.pgm").read_bytes()

#: Ids the rule allows that need percent-encoding in a URL, or look like URL syntax.
AWKWARD = ["a b", "100%", "what?x=1", "#frag", "ünï 😀", "a+b&c=d", "...", "%2F", "x" * 255]


@pytest.fixture(scope="module")
def api(live: Live) -> Client:
    with live.client() as client:
        client.add_items(ITEMS)
        client.create_user("alice")
        client.add_events([{"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": 1_700_000_000}])
        yield client


def _raw(live: Live, method: str, path: str, body: str) -> httpx.Response:
    """A request with a JSON body written by hand: `Infinity` and `NaN` are what JavaScript and
    Python's json module send for non-finite numbers, and no SDK would write them."""
    headers = {"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"}
    return httpx.request(method, live.url + path, content=body, headers=headers, timeout=60)


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused_everywhere_the_same_way(live: Live, api: Client, number: str) -> None:
    before = len(api.events("alice"))
    requests = [
        ("POST", "/v1/events", f'{{"user": "alice", "type": "rate", "item": "m1", "value": {number}, "ts": 1}}'),
        ("POST", "/v1/events/bulk", f'{{"events": [{{"user": "alice", "type": "rate", "item": "m1", '
                                    f'"value": {number}, "ts": 1}}]}}'),
        ("PUT", "/v1/users/alice/profile/score", f'{{"value": {number}}}'),
        ("PUT", "/v1/users/alice/profile/scores", f'{{"value": [1, {number}]}}'),
        ("POST", "/v1/items", f'{{"items": [{{"key": "n1", "text": "t", "meta": {{"x": {number}}}}}]}}'),
        ("POST", "/v1/users/alice/documents", f'{{"documents": [{{"key": "n1", "text": "t", "meta": {{"x": {number}}}}}]}}'),
        ("POST", "/v1/users/alice/generations", f'{{"modality": "text", "instruction": "hi", '
                                                f'"options": {{"guidance_scale": {number}}}}}'),
    ]
    for method, path, body in requests:
        response = _raw(live, method, path, body)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["code"] == "invalid_input"
        assert NOT_FINITE in response.text, (path, response.text)
    assert len(api.events("alice")) == before and api.profile("alice") == {}


def test_the_ids_of_the_issue_are_refused_on_every_write_path(live: Live, api: Client) -> None:
    attempts = [
        lambda: api.add_events([{"user": "../../slash/user", "type": "like", "item": "m1", "ts": 1}],
                               create_users=True),
        lambda: api.create_user("a/b"),
        lambda: api.add_face("alice", "a/b", FACE, consent=True),
        lambda: api.add_documents("alice", [{"key": "d/1", "text": "text"}]),
        lambda: api.add_items([{"key": "i/1", "text": "text"}]),
        lambda: api.generate("alice", "text", "hello", job_id="j/1"),
        lambda: api.create_user(".."),
        lambda: api.create_user("tab\there"),
        lambda: api.create_user(" padded"),
        lambda: live.admin.create_tenant("t/1"),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInputError, match="is not a valid id"):
            attempt()
    assert api.list_users() == ["alice"]
    assert api.faces("alice") == [] and api.documents("alice") == []
    assert api.jobs() == []


@pytest.mark.parametrize("key", AWKWARD)
def test_awkward_legal_ids_round_trip_through_the_sdk(live: Live, api: Client, key: str) -> None:
    assert live.admin.create_tenant(key).key == key
    created = live.admin.create_api_key(key, "k")
    assert [k.tenant for k in live.admin.list_api_keys(key)] == [key]
    assert live.admin.revoke_api_key(key, created.prefix).revoked_at is not None
    assert api.create_user(key).key == key
    assert key in api.list_users()
    assert api.user(key).user == key
    assert api.set_profile(key, key, 1) == {key: 1}
    assert api.add_events([{"user": key, "type": "like", "item": "m1", "ts": 1}]) == 1
    assert api.add_documents(key, [{"key": key, "text": "my text"}]) == 1
    assert [d.key for d in api.documents(key)] == [key]
    assert api.add_face(key, key, FACE, consent=True).key == key
    assert api.face(key, key)[0] == FACE
    with zipfile.ZipFile(io.BytesIO(api.export_user(key))) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["user"]["key"] == key and [d["key"] for d in manifest["documents"]] == [key]
    job = api.generate(key, "text", "hello", job_id=key)
    assert job.key == key and api.job(key).key == key
    api.cancel(key)  # queued, running or already over: the id reaches it either way
    assert api.forget(key, "faces", key).deleted["faces"] == 1
    assert api.forget(key, "documents", key).deleted["documents"] == 1
    assert api.forget_user(key).residue == []
    with pytest.raises(NotFoundError):
        api.user(key)


def test_a_user_broken_by_an_infinite_rating_recovers_by_deleting_it(live: Live, api: Client) -> None:
    """The issue's case: a stored Infinity rating made every context of its user fail (422)."""
    api.create_user("bob")
    api.add_events([{"user": "bob", "type": "like", "item": "m2", "ts": 1_700_000_000}])
    _store_infinite_rating(live, "bob", "m1")  # as the service stored it before the rule
    with pytest.raises(InvalidInputError, match="NaN or infinity"):
        api.context("bob", "text", "a film for tonight")
    bad = next(e for e in api.events("bob") if e.type == "rate")
    assert bad.value is None  # JSON has no infinity; `unipgen check` names the row
    report = api.delete_event("bob", bad.id)
    assert report.deleted["events"] == 1 and report.residue == []
    assert api.context("bob", "text", "a film for tonight").user == "bob"
    assert [e.type for e in api.events("bob")] == ["like"]
    with pytest.raises(NotFoundError, match=f"unknown event {bad.id}"):
        api.delete_event("bob", bad.id)


def _store_infinite_rating(live: Live, user: str, item: str) -> None:
    with MemoryStore.open(live.settings) as store, store.session() as session, session.begin():
        user_id = session.query(User.id).filter(User.key == user).scalar()
        item_id = session.query(Item.id).filter(Item.key == item).scalar()
        session.add(BehaviorEvent(user_id=user_id, item_id=item_id, type="rate", value=math.inf,
                                  ts=datetime.now(timezone.utc)))


def test_events_are_deleted_by_type_item_and_time(api: Client) -> None:
    api.create_user("carol")
    api.add_events([{"user": "carol", "type": t, "item": i, "ts": ts} for t, i, ts in [
        ("click", "m1", 1_600_000_000), ("click", "m2", 1_600_000_100), ("skip", "m2", 1_600_000_200),
        ("like", "m1", 1_700_000_000)]])
    report = api.delete_events("carol", type="click", item="m2")
    assert report.deleted["events"] == 1
    report = api.delete_events("carol", since=datetime.fromtimestamp(1_600_000_000, timezone.utc),
                               until=datetime.fromtimestamp(1_700_000_000, timezone.utc))
    assert report.deleted["events"] == 2  # the click on m1 and the skip; the like is at `until`
    assert [(e.type, e.item) for e in api.events("carol")] == [("like", "m1")]
    assert api.audit(user="carol", action="delete_events")[0].detail == {"until": "2023-11-14 22:13:20+00:00",
                                                                        "since": "2020-09-13 12:26:40+00:00"}
    with pytest.raises(InvalidInputError, match="unknown event type 'poke'"):
        api.delete_events("carol", type="poke")
    assert api.delete_events("carol").deleted["events"] == 1
    assert api.events("carol") == []
