"""Issue 14, points 1 and 2, against a live server: no upload can crash or exhaust the service.

Every file of the adversarial corpus (unipgen/bench/upload_corpus.py: pixel and audio bombs,
extreme dimensions, truncated, corrupt and disguised files, oversized JSON bodies) is refused
with its status, code and the setting that refused it, nothing is stored, and the server still
answers, for this tenant and another. A face encoder that dies of a real SIGSEGV proves that a
native crash in the encoder process costs one request (503 `encoder_failed` naming the file)
and that the next request gets a fresh process.

The encoders run in the service's encoder process (`UNIPGEN_ENCODER_WORKERS=1`, the default):
a crash there cannot take pytest (which runs the server in a thread) with it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, live_service
from tests.api.crashing_encoder import HANG, MARKER
from unipgen.bench import upload_corpus
from unipgen.client import Client
from unipgen.core.encoders import ENCODERS, register_encoder
from unipgen.schema.profiles import ComponentSpec, load_profile
from unipgen.settings import Settings

SETTINGS = {"max_blob_bytes": 2_000_000, "max_audio_seconds": 30.0, "max_request_bytes": 64 * 1024,
            "max_bulk_request_bytes": 1024 * 1024, "max_document_chars": 10_000, "rate_limit_per_minute": 100_000}


class Server:
    def __init__(self, url: str, app: object, http: httpx.Client, other: httpx.Client) -> None:
        self.url, self.app, self.http, self.other = url, app, http, other

    @property
    def service(self):  # type: ignore[no-untyped-def]
        return self.app.state.service  # type: ignore[attr-defined]

    def alive(self) -> None:
        """The server answers, and another tenant's requests work."""
        assert self.http.get("/v1/health").status_code == 200
        assert self.other.get("/v1/users").json() == ["bystander"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    saved = dict(ENCODERS)
    register_encoder("crashing-face", "tests.api.crashing_encoder:CrashingFaceEncoder")
    tiny = load_profile("tiny")
    profile = tiny.model_copy(update={"encoders": tiny.encoders | {"face": ComponentSpec(type="crashing-face")}})
    settings = Settings(home=tmp_path_factory.mktemp("hardening"), admin_key=ADMIN_KEY, **SETTINGS)
    try:
        with live_service(settings, profile=profile) as (url, app):
            with Client(url, api_key=ADMIN_KEY) as admin:
                keys = []
                for tenant in ("acme", "other"):
                    admin.create_tenant(tenant)
                    keys.append(admin.create_api_key(tenant, "tests").key)
            with (httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[0]}"}, timeout=120) as http,
                  httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys[1]}"}, timeout=30) as other):
                assert http.post("/v1/users", json={"key": "target"}).status_code == 201
                assert other.post("/v1/users", json={"key": "bystander"}).status_code == 201
                yield Server(url, app, http, other)
    finally:
        ENCODERS.clear()
        ENCODERS.update(saved)


CASES = {case.name: case for case in upload_corpus.corpus(Settings(**SETTINGS))}


@pytest.mark.parametrize("name", list(CASES))
def test_each_adversarial_file_is_refused_and_the_server_survives(server: Server, name: str) -> None:
    case = CASES[name]
    response = upload_corpus.send(server.http, "target", case)
    assert response.status_code in case.expect, response.text
    if case.code is not None:
        body = response.json()
        assert body["code"] == case.code and case.words in body["message"], body
    if response.status_code >= 400 and case.path in ("faces", "voices", "subjects"):
        stored = [m["key"] for m in server.http.get(f"/v1/users/target/{case.path}").json()]
        assert name not in stored
    server.alive()


def test_a_native_crash_in_the_encoder_costs_one_request(server: Server) -> None:
    face = upload_corpus.FACE.read_bytes()
    restarts = server.service.pool.restarts
    crashed = server.http.post("/v1/users/target/faces", data={"key": "boom", "consent": "true"},
                               files={"file": ("boom.pgm", face + MARKER, "image/x-portable-anymap")})
    body = crashed.json()
    assert (crashed.status_code, body["code"]) == (503, "encoder_failed"), body
    assert "face 'boom'" in body["message"] and "'boom.pgm'" in body["message"]
    assert server.service.pool.restarts >= restarts + 1  # the dead process was replaced
    server.alive()
    # the next upload gets a fresh encoder process and is stored; the crashed one was not
    fine = server.http.post("/v1/users/target/faces", data={"key": "after-crash", "consent": "true"},
                            files={"file": ("face.pgm", face, "image/x-portable-anymap")})
    assert fine.status_code == 201, fine.text
    keys = [m["key"] for m in server.http.get("/v1/users/target/faces").json()]
    assert "after-crash" in keys and "boom" not in keys


def test_the_39000000x1_png_is_refused_from_its_header_before_any_decoder(server: Server) -> None:
    """The issue's file: refused by the side limit in the service process, not handed to dlib."""
    restarts = server.service.pool.restarts
    wide = upload_corpus.png(39_000_000, 1)
    response = server.http.post("/v1/users/target/faces", data={"key": "wide", "consent": "true"},
                                files={"file": ("wide.png", wide, "image/png")})
    assert response.status_code == 413
    assert response.json()["message"] == ("face 'wide' is 39000000x1 pixels: a side is over the limit of 12000 "
                                          "pixels (UNIPGEN_MAX_IMAGE_SIDE)")
    assert server.service.pool.restarts == restarts
    server.alive()


def test_a_declared_body_over_the_limit_is_refused_without_reading_it(server: Server) -> None:
    """Content-Length over the budget: 413 before the route parses anything."""
    huge = b"[" + b"0," * 600_000 + b"0]"  # 1.2 MB, over the 1 MiB bulk budget
    response = server.http.post("/v1/events/bulk", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["message"] == (f"the request body is {len(huge)} bytes, over the limit of 1048576 bytes "
                                          "for this route (UNIPGEN_MAX_BULK_REQUEST_BYTES)")
    server.alive()


def test_an_encoder_stuck_past_its_timeout_is_stopped(server: Server) -> None:
    """A decoder in a loop: the encoder process is killed after `UNIPGEN_ENCODER_TIMEOUT_S`, the
    request answers 503, and the next upload gets a fresh process (with the usual timeout)."""
    pool = server.service.pool
    face = upload_corpus.FACE.read_bytes()
    warm = server.http.post("/v1/users/target/faces", data={"key": "before-hang", "consent": "true"},
                            files={"file": ("face.pgm", face, "image/x-portable-anymap")})
    assert warm.status_code == 201  # the process is up and dlib loaded: the short timeout is for the hang only
    pool.timeout_s = 2.0
    try:
        hung = server.http.post("/v1/users/target/faces", data={"key": "hang", "consent": "true"},
                                files={"file": ("hang.pgm", face + HANG, "image/x-portable-anymap")})
    finally:
        pool.timeout_s = server.service.settings.encoder_timeout_s
    body = hung.json()
    assert (hung.status_code, body["code"]) == (503, "encoder_failed"), body
    assert "took more than 2 s on face 'hang'" in body["message"] and "UNIPGEN_ENCODER_TIMEOUT_S" in body["message"]
    server.alive()
    fine = server.http.post("/v1/users/target/faces", data={"key": "after-hang", "consent": "true"},
                            files={"file": ("face.pgm", face, "image/x-portable-anymap")})
    assert fine.status_code == 201, fine.text
