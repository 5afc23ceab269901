"""Tenant isolation: for every route that takes an id, tenant B's key with tenant A's ids
answers 404 (not 403: B must not learn that the id exists), and A's data is unchanged."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.api.conftest import Live
from unipgen.client import Client
from unipgen.demo import PERSONA_SAMPLE

FACE = PERSONA_SAMPLE / "faces" / "s1-1.pgm"
VOICE = PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac"
DOG = PERSONA_SAMPLE / "subject" / "dog-00.jpg"

#: A valid request body for each (method, path) that needs one, so that only the ids are wrong.
JSON_BODIES = {
    ("PUT", "/v1/users/{user}/profile/{name}"): {"value": "x"},
    ("POST", "/v1/users/{user}/documents"): {"documents": [{"key": "d9", "text": "hello"}]},
    ("POST", "/v1/users/{user}/messages"): {"messages": [{"key": "m9", "speaker": "Ann", "text": "hello"}]},
    ("POST", "/v1/users/{user}/context"): {"modality": "text", "instruction": "hello"},
    ("POST", "/v1/users/{user}/chat"): {"text": "hello"},
    ("POST", "/v1/users/{user}/judgements"): {"first": "m1", "second": "m2"},
    ("POST", "/v1/users/{user}/synthetic-preferences"): {},
    ("POST", "/v1/users/{user}/recommendations"): {"k": 3},
    ("POST", "/v1/users/{user}/generations"): {"modality": "text", "instruction": "hello"},
    ("POST", "/v1/users/{user}/trainings"): {"method": "text-lora", "steps": 1},
    ("POST", "/v1/users/{user}/protections"): {"subject": "rex"},
    ("PUT", "/v1/users/{user}/training-consent"): {"granted": True},
}
FORMS = {
    ("POST", "/v1/users/{user}/faces"): ({"key": "f9", "consent": "true"}, [("file", ("f.pgm", FACE.read_bytes(), "image/x-portable-anymap"))]),
    ("POST", "/v1/users/{user}/voices"): ({"key": "v9", "consent": "true"}, [("file", ("v.flac", VOICE.read_bytes(), "audio/flac"))]),
    ("POST", "/v1/users/{user}/subjects"): ({"key": "s9", "name": "Rex", "class_noun": "dog"}, [("files", ("d.jpg", DOG.read_bytes(), "image/jpeg"))]),
    ("POST", "/v1/users/{user}/descriptions"): ({"question": "what is it?"}, [("file", ("d.jpg", DOG.read_bytes(), "image/jpeg"))]),
}


#: Routes whose path names a new id of the caller's own tenant (checked apart, below).
CREATES = {("POST", "/v1/items/{item}")}


@pytest.fixture(scope="module")
def tenant_a(live: Live) -> dict[str, str]:
    """Tenant A's user with one of everything; the ids the routes take."""
    with live.client() as a:
        a.add_items([{"key": "m1", "text": "Heat (1995) crime thriller"}])
        a.create_user("alice")
        a.add_events([{"user": "alice", "type": "like", "item": "m1", "ts": 1_700_000_000}])
        a.add_documents("alice", [{"key": "d1", "text": "I like crime films"}])
        a.add_face("alice", "me", FACE, consent=True)
        a.add_voice("alice", "hi", VOICE, consent=True)
        a.add_subject("alice", "rex", name="Rex", class_noun="dog", images=[DOG])
        job = a.wait(a.generate("alice", "text", "hello", options={"max_new_tokens": 3}, job_id="job-a").key)
        [artifact] = job.result["artifacts"]
        event_id = str(a.events("alice")[0].id)
    return {"user": "alice", "name": "city", "job": "job-a", "artifact": artifact, "event_id": event_id}


@pytest.fixture(scope="module")
def tenant_b_key(live: Live) -> str:
    live.admin.create_tenant("other")
    key = live.admin.create_api_key("other", "b").key
    with live.client(key) as b:
        b.create_user("alice-b")  # B has data of its own, but none of A's ids
    return key


def _id_routes(app: object) -> list[tuple[str, str]]:
    """(method, path) of every tenant route with a path parameter, from the app's OpenAPI."""
    paths = app.openapi()["paths"]  # type: ignore[attr-defined]
    return [(method.upper(), path) for path, operations in sorted(paths.items())
            if "{" in path and not path.startswith("/v1/tenants") for method in sorted(operations)
            if (method.upper(), path) not in CREATES]


def _fill(path: str, ids: dict[str, str]) -> str:
    if "/jobs/" in path:
        return path.replace("{key}", ids["job"])
    if "/artifacts/" in path:
        return path.replace("{key}", ids["artifact"])
    special = {"/faces/{key}": "/faces/me", "/voices/{key}": "/voices/hi", "/{kind}/{key}": "/faces/me",
               "/subjects/{key}/photos/{position}": "/subjects/rex/photos/0"}
    for pattern, value in special.items():
        path = path.replace(pattern, value)
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


def test_every_id_route_hides_other_tenants_data(live: Live, tenant_a: dict[str, str], tenant_b_key: str) -> None:
    routes = _id_routes(live.app)
    assert len(routes) >= 20  # the whole surface, not a sample
    headers = {"Authorization": f"Bearer {tenant_b_key}"}
    answers = {}
    with httpx.Client(base_url=live.url, headers=headers, timeout=60) as b:
        for method, path in routes:
            url = _fill(path, tenant_a)
            if (method, path) in FORMS:
                data, files = FORMS[(method, path)]
                response = b.request(method, url, data=data, files=files)
            else:
                response = b.request(method, url, json=JSON_BODIES.get((method, path)))
            answers[(method, path)] = (response.status_code, response.json().get("code"))
    wrong = {route: answer for route, answer in answers.items() if answer != (404, "not_found")}
    assert wrong == {}
    with live.client() as a:  # A's data is all still there
        assert [f.key for f in a.faces("alice")] == ["me"] and [v.key for v in a.voices("alice")] == ["hi"]
        assert [s.key for s in a.subjects("alice")] == ["rex"] and a.job("job-a").status == "succeeded"
        assert a.artifact(tenant_a["artifact"]).kind == "output" and a.profile("alice") == {}
        assert a.training_consent("alice").granted is False and a.artifacts("alice", kind="protected") == []
    with live.client(tenant_b_key) as b:
        assert b.list_users() == ["alice-b"] and b.jobs() == []


def test_list_routes_show_only_the_callers_tenant(live: Live, tenant_a: dict[str, str], tenant_b_key: str) -> None:
    with live.client(tenant_b_key) as b:
        assert "alice" not in b.list_users()
        assert all(entry.user != "alice" for entry in b.audit())


def test_admin_routes_need_the_admin_key(live: Live, tenant_b_key: str) -> None:
    from unipgen.errors import UnauthorizedError

    with live.client(tenant_b_key) as b, pytest.raises(UnauthorizedError, match="admin key"):
        b.list_api_keys("acme")
    with Client(live.url, api_key=live.key) as a, pytest.raises(UnauthorizedError, match="admin key"):
        a.create_tenant("mine")


def test_an_item_uploaded_under_another_tenants_id_is_that_tenants_own(
        live: Live, tenant_a: dict[str, str], tenant_b_key: str) -> None:
    service = live.app.state.service  # type: ignore[attr-defined]
    with live.client(tenant_b_key) as b:
        assert b.add_item("m1", "B's own m1") == 1
    assert service.store.catalog.item_texts(live.tenant, ["m1"]) == {"m1": "Heat (1995) crime thriller"}
    assert service.store.catalog.item_texts("other", ["m1"]) == {"m1": "B's own m1"}
