"""Schemathesis against the service's own OpenAPI schema: every operation, fuzzed with a valid
tenant API key (the admin routes with the admin key), never answers 5xx, every 4xx is the error
contract (JSON with string `code` and `message`), and responses conform to the schema.

Derandomized, with a bounded number of examples per operation (plus schemathesis's coverage
cases: boundary values, missing and mistyped fields, unsupported methods), so CI replays the
same requests. On SQLite always, on PostgreSQL when `UNIPGEN_TEST_POSTGRES_URL` is set (the
`live` fixture). The tenant is seeded first, and path ids are drawn from the generated values
or the seeded ones, so that some requests reach existing users, jobs, artifacts and media.

The schema is taken at collection time from `create_app()` (its routes do not depend on
settings) because schemathesis makes one pytest item per operation then;
`test_the_fuzzed_schema_is_the_services` checks it is what the live service serves.
(`schemathesis.pytest.from_fixture` would load it from the live service, but its lazy runner
does not work with pytest 9: it reads `Node._nodeid`, which pytest 9 no longer has.)
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

import jsonschema_rs  # a dependency of schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from tests.api.conftest import ADMIN_KEY, Live
from unipgen.api import create_app
from unipgen.demo import PERSONA_SAMPLE

FACE = PERSONA_SAMPLE / "faces" / "s1-1.pgm"
ADMIN = r"^/v1/tenants"
#: Each accepted request runs a model (a queued job, a chat turn, a description; tiny models): fewer examples.
JOBS = r"^/v1/users/\{user\}/(generations|trainings|chat|descriptions)$"

SPEC = create_app().openapi()
schema = schemathesis.openapi.from_dict(SPEC)

#: The running backend's keys and seeded ids, set by the `seeded` fixture before any case is drawn.
SEEDED: dict[str, Any] = {}


@pytest.fixture(scope="module")
def live_profile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny profile with a tiny random BERT as its text encoder: the fuzz checks the API's
    contract, and its largest bodies (10,000 catalog items, the schema's maximum) are embedded on
    the way in, ~35 s each by the packaged MiniLM on one thread, ~3 s by this one."""
    from unipgen.eval.text_metrics import tiny_bert_dir
    from unipgen.schema.profiles import PROFILES_DIR

    tiny = (PROFILES_DIR / "tiny.toml").read_text()
    minilm = 'ref = "sentence-transformers/all-MiniLM-L6-v2"'
    assert tiny.count(minilm) == 1
    path = tmp_path_factory.mktemp("profile") / "tiny-text.toml"
    path.write_text(tiny.replace(minilm, f"ref = {str(tiny_bert_dir())!r}"))
    return str(path)


@pytest.fixture(scope="module")
def seeded(live: Live) -> None:
    """The tenant's users `alice` (items, events, a profile attribute, a document, a face, a
    finished job and its artifact) and `bob`."""
    with live.client() as api:
        api.add_items([{"key": "m1", "text": "Heat (1995) crime thriller"},
                       {"key": "m2", "text": "Toy Story (1995) animation"}])
        api.create_user("alice")
        api.create_user("bob")
        api.add_events([{"user": "alice", "type": "like", "item": "m1", "ts": 1_700_000_000},
                        {"user": "alice", "type": "rate", "item": "m2", "value": 4, "ts": 1_700_000_100}])
        api.set_profile("alice", "city", "Lyon")
        api.add_documents("alice", [{"key": "d1", "text": "I like crime films"}])
        api.add_face("alice", "me", FACE, consent=True)
        job = api.wait(api.generate("alice", "text", "hello", options={"max_new_tokens": 3}, job_id="job-a").key)
        [artifact] = job.result["artifacts"]
    SEEDED.clear()
    SEEDED.update(tenant_key=live.key, ids={"user": "alice", "tenant": "acme", "name": "city", "kind": "faces",
                                            "job": "job-a", "artifact": artifact, "media": "me"})


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """The generated path ids, or the seeded ones (half the draws)."""
    if not path_parameters or not SEEDED:
        return st.just(path_parameters)
    ids, operation = SEEDED["ids"], context.operation
    known = {}
    for name in path_parameters:
        if name == "user":  # DELETE forgets `bob`, so that `alice` stays for the other operations
            known[name] = "bob" if operation.method.upper() == "DELETE" else ids["user"]
        elif name == "key":
            known[name] = ids["job"] if operation.path.startswith("/v1/jobs/") else \
                ids["artifact"] if operation.path.startswith("/v1/artifacts/") else ids["media"]
        elif name in ids:
            known[name] = ids[name]
    return st.sampled_from([path_parameters, {**path_parameters, **known}])


@schemathesis.hook  # `before_call` hooks are global only: this one leaves other schemas alone
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every request carries a valid key: the admin key on admin routes, the tenant's elsewhere.
    Schemathesis reads the bearer security scheme as an `Authorization` header, and its negative
    cases drop or mangle it; put back here, in `before_call`, it also makes schemathesis send it
    (a header set on the case before `call` would still be dropped from a negative case). So
    the whole fuzz runs authenticated; missing and wrong keys are tested in test_service and
    test_isolation."""
    if case.operation.schema.raw_schema is not schema.raw_schema:
        return
    key = ADMIN_KEY if case.operation.path.startswith("/v1/tenants") else SEEDED["tenant_key"]
    case.headers = {**{k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"},
                    "Authorization": f"Bearer {key}"}


def error_contract(ctx: Any, response: Any, case: Any) -> None:
    """A 4xx body is JSON `{"code": str, "message": str, ...}` (unipgen.api.errors)."""
    if not 400 <= response.status_code < 500:
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} with a non-JSON body: {response.text[:200]!r}") from None
    assert isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str), \
        f"{response.status_code} body is not the error contract {{code, message}}: {body!r}"


def _uses_prefix_items(node: Any) -> bool:
    if isinstance(node, dict):
        if "$ref" in node:
            return _uses_prefix_items(SPEC["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
        return "prefixItems" in node or any(_uses_prefix_items(v) for v in node.values())
    return isinstance(node, list) and any(_uses_prefix_items(v) for v in node)


#: Operations whose responses hold a tuple (`prefixItems`, e.g. `ArtifactPublic.derived_from`):
#: schemathesis 4.32 rewrites it to draft-4 `items: [...]` and then rejects its own rewrite
#: against the 3.1 meta-schema ("InvalidSchema ... is not of types boolean, object"), so these
#: are checked by `response_conforms_2020_12` below, against the schema as written.
TUPLE_RESPONSES = {f"{method.upper()} {path}" for path, operations in SPEC["paths"].items()
                   for method, operation in operations.items() if _uses_prefix_items(operation["responses"])}


def response_conforms_2020_12(ctx: Any, response: Any, case: Any) -> None:
    """A JSON response validates against its documented schema (JSON Schema 2020-12, the
    dialect of OpenAPI 3.1)."""
    documented = SPEC["paths"][case.operation.path][case.operation.method.lower()]["responses"]
    content = documented.get(str(response.status_code), {}).get("content", {}).get("application/json")
    if content is None:
        return
    validator = jsonschema_rs.Draft202012Validator({**content["schema"], "components": SPEC["components"]})
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert not errors, f"{case.operation.label} {response.status_code} does not conform to its schema: {errors[:3]}"


def _checks(case: Any) -> list[Any]:
    conformance = response_conforms_2020_12 if case.operation.label in TUPLE_RESPONSES else response_schema_conformance
    return [not_a_server_error, error_contract, conformance, content_type_conformance]


FUZZ = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _fuzz(case: Any, live: Live) -> None:
    # 180 s: generous for the largest bodies (10,000 catalog items to embed) on 2 shared cores.
    case.call_and_validate(base_url=live.url, checks=_checks(case), timeout=180)


def test_the_fuzzed_schema_is_the_services(live: Live) -> None:
    assert httpx.get(f"{live.url}/openapi.json").json() == SPEC
    assert len(TUPLE_RESPONSES) == 2  # the artifact routes; a new one needs a look at the comment above


@schema.exclude(path_regex=ADMIN).exclude(path_regex=JOBS).parametrize()
@FUZZ
def test_tenant_routes(case: Any, live: Live, seeded: None) -> None:
    _fuzz(case, live)


@schema.include(path_regex=JOBS).parametrize()
@settings(FUZZ, max_examples=10)
def test_job_routes(case: Any, live: Live, seeded: None) -> None:
    _fuzz(case, live)


@schema.include(path_regex=ADMIN).parametrize()
@FUZZ
def test_admin_routes(case: Any, live: Live, seeded: None) -> None:
    _fuzz(case, live)


#: Requests the fuzzer (or a probe of the same kind) answered with a 500, now refused as 422.
REGRESSIONS = {
    # Found by the fuzzer on PostgreSQL (psycopg DataError: text fields cannot contain NUL):
    # events/bulk and documents with a NUL character in a text field.
    "bulk event user with NUL": ("POST", "/v1/events/bulk", {"json": {"create_users": False, "events": [
        {"ts": "1233-02-26T07:44:08Z", "type": "like", "value": -0.99999, "user": "Hu\u00e3\u00c4\u00a9\u0000\U00065fd0\u00f2-\u00f3",
         "item": "m1"}]}}),
    "document text with NUL": ("POST", "/v1/users/alice/documents", {"json": {"documents": [
        {"key": "nul-doc", "text": "\u0000\u0004\u0086+"}]}}),
    # The same NUL in ids reaching a lookup (path, query, form), on PostgreSQL.
    "user path id with NUL": ("GET", "/v1/users/a%00b", {}),
    "job id with NUL": ("GET", "/v1/jobs/a%00b", {}),
    "audit query with NUL": ("GET", "/v1/audit?action=a%00b", {}),
    "new user key with NUL": ("POST", "/v1/users", {"json": {"key": "a\u0000b"}}),
    "profile name with NUL": ("PUT", "/v1/users/alice/profile/a%00b", {"json": {"value": 1}}),
    "job_id with NUL": ("POST", "/v1/users/alice/trainings", {"json": {"method": "text-lora", "job_id": "a\u0000b"}}),
    "upload key with NUL": ("POST", "/v1/users/alice/faces", {"data": {"key": "a\u0000b", "consent": "true"},
                                                              "files": [("file", ("f.pgm", FACE.read_bytes(), "image/x-portable-anymap"))]}),
    # OverflowError on both backends: a time that UTC cannot hold (year 1 at +23:59).
    "event time out of range": ("POST", "/v1/events", {"json": {"user": "alice", "type": "rate", "item": "m1",
                                                                "ts": "0001-01-01T00:00:00+23:59"}}),
    "document time out of range": ("POST", "/v1/users/alice/documents", {"json": {"documents": [
        {"key": "d-time", "text": "x", "ts": "0001-01-01T00:00:00+23:59"}]}}),
    # A profile value that JSON text can spell but no response can carry back (500 on the reply).
    "profile value lone surrogate": ("PUT", "/v1/users/alice/profile/x", {"content": '{"value": "\\ud800"}'}),
    "profile value NaN": ("PUT", "/v1/users/alice/profile/x", {"content": '{"value": {"a": NaN}}'}),
    "document text lone surrogate": ("POST", "/v1/users/alice/documents",
                                     {"content": '{"documents": [{"key": "s1", "text": "a \\ud800 b"}]}'}),
    "event meta lone surrogate": ("POST", "/v1/events", {"content": '{"user": "alice", "type": "click", "item": "m1", '
                                                                    '"ts": 1700000000, "meta": {"note": "\\udfff"}}'}),
    "user key lone surrogate": ("POST", "/v1/users", {"content": '{"key": "x\\ud800"}'}),
}
ADMIN_REGRESSIONS = {
    "tenant key with NUL": ("POST", "/v1/tenants", {"json": {"key": "a\u0000b"}}),
    "api key name with NUL": ("POST", "/v1/tenants/acme/api-keys", {"json": {"name": "a\u0000b"}}),
    "revoked prefix with NUL": ("DELETE", "/v1/tenants/acme/api-keys/a%00b", {}),
}


@pytest.mark.parametrize("name", [*REGRESSIONS, *ADMIN_REGRESSIONS])
def test_found_500s_are_now_invalid_input(live: Live, seeded: None, name: str) -> None:
    method, path, request = REGRESSIONS.get(name) or ADMIN_REGRESSIONS[name]
    key = ADMIN_KEY if name in ADMIN_REGRESSIONS else live.key
    headers = {"Authorization": f"Bearer {key}"}
    if "content" in request:
        headers["Content-Type"] = "application/json"
    with httpx.Client(base_url=live.url, headers=headers, timeout=60) as client:
        response = client.request(method, path, **request)
    assert (response.status_code, response.json()["code"]) == (422, "invalid_input"), response.text
