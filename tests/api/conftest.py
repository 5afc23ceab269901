"""A live service for the API tests: uvicorn on a loopback port in a thread, over SQLite (blobs in
its folder) or a fresh PostgreSQL database with blobs on the S3 server, with one tenant (`acme`,
key in `.key`) ready, and the tiny profile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from unipgen.client import Client  # noqa: E402
from unipgen.memory.db import temporary_database  # noqa: E402
from unipgen.settings import Settings  # noqa: E402

ADMIN_KEY = "admin-secret-for-tests"


@dataclass
class Live:
    """A running service: its URL, its app (for the OpenAPI spec), the admin client, and the
    first tenant's key."""

    url: str
    app: object
    admin: Client
    tenant: str
    key: str
    settings: Settings

    def client(self, key: str | None = None) -> Client:
        return Client(self.url, api_key=key or self.key, timeout=120)


@contextmanager
def live_service(settings: Settings, **options: object) -> Iterator[tuple[str, object]]:
    """uvicorn serving `create_app(settings)` on 127.0.0.1 (a free port), until the block ends."""
    import uvicorn

    from unipgen.api import create_app

    app = create_app(settings, **options)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the listening
    # socket says TCP, and without it every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def _database(backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    if backend == "sqlite":
        yield None
        return
    admin_url, template = request.getfixturevalue("postgres_template")
    with temporary_database(admin_url, "unipgen_api", template) as url:
        yield url


@pytest.fixture(scope="module")
def live_profile() -> str:
    """The model profile `live` serves; a test module overrides it to serve another."""
    return "tiny"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres+s3",
                                                                marks=[pytest.mark.postgres, pytest.mark.scale])])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home: Path = tmp_path_factory.mktemp("service")
    blob_url = request.getfixturevalue("s3").blob_url() if request.param == "postgres+s3" else None
    with _database(request.param, request) as database_url:
        settings = Settings(home=home, database_url=database_url, blob_url=blob_url, admin_key=ADMIN_KEY,
                            max_blob_bytes=300_000,
                            max_audio_seconds=30.0, rate_limit_per_minute=100_000,
                            auth_failures_per_minute=100_000)  # the fuzz sends many keyless requests
        with live_service(settings, profile=request.getfixturevalue("live_profile")) as (url, app):
            admin = Client(url, api_key=ADMIN_KEY)
            admin.create_tenant("acme")
            key = admin.create_api_key("acme", "tests").key
            yield Live(url, app, admin, "acme", key, settings)
            admin.close()
