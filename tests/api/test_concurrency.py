"""50 clients ingest events at once through the live service: none lost, none duplicated;
the per-key rate limit answers 429 with a code once a key is over it; failed logins are
throttled per client address."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, Live, live_service
from unipgen.client import Client
from unipgen.errors import RateLimitedError
from unipgen.settings import Settings

CLIENTS = 50
EVENTS_EACH = 10


def test_fifty_clients_ingesting_at_once_lose_and_duplicate_nothing(live: Live) -> None:
    with live.client() as api:
        api.add_items([{"key": f"c{i}", "text": f"item {i}"} for i in range(EVENTS_EACH)])
    errors: list[BaseException] = []
    start = threading.Barrier(CLIENTS)

    def one_client(number: int) -> None:
        try:
            with live.client() as api:
                start.wait()
                for i in range(EVENTS_EACH):
                    api.add_event({"user": f"u{number % 5}", "type": "click", "item": f"c{i}",
                                   "ts": 1_700_000_000 + number * 100 + i}) if i else \
                        api.add_events([{"user": f"u{number % 5}", "type": "click", "item": "c0",
                                         "ts": 1_700_000_000 + number * 100}], create_users=True)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with live.client() as api:
        seen = [(u, e.item, e.ts.timestamp()) for u in (f"u{k}" for k in range(5)) for e in api.events(u)]
    expected = {(f"u{n % 5}", f"c{i}", 1_700_000_000 + n * 100 + i) for n in range(CLIENTS) for i in range(EVENTS_EACH)}
    assert len(seen) == CLIENTS * EVENTS_EACH and set(seen) == expected


@contextmanager
def keyed_service(home: Path, key_names: list[str], **limits: Any) -> Iterator[tuple[str, list[str]]]:
    """A live service (no job workers) with `limits` set, and tenant ``t`` with one API key per
    name: (its URL, the keys)."""
    settings = Settings(home=home, admin_key=ADMIN_KEY, **limits)
    with live_service(settings, run_jobs=False) as (url, _):
        with Client(url, api_key=ADMIN_KEY) as admin:
            admin.create_tenant("t")
            keys = [admin.create_api_key("t", name).key for name in key_names]
        yield url, keys


def test_a_key_over_its_rate_limit_gets_429(tmp_path: Path) -> None:
    with keyed_service(tmp_path, ["k", "k2"], rate_limit_per_minute=5) as (url, (key, other)):
        with Client(url, api_key=key) as api:
            for _ in range(5):
                api.list_users()
            with pytest.raises(RateLimitedError, match="made 5 requests in the last minute") as caught:
                api.list_users()
            assert caught.value.status_code == 429  # type: ignore[attr-defined]
        with Client(url, api_key=other) as api:
            assert api.list_users() == []  # the limit is per key


def test_failed_logins_are_throttled_per_client_address(tmp_path: Path) -> None:
    with keyed_service(tmp_path, ["k"], auth_failures_per_minute=3) as (url, [key]):
        wrong = {"Authorization": "Bearer upg_00000000_" + "x" * 43}
        with httpx.Client(base_url=url) as attacker:
            codes = [attacker.get("/v1/users", headers=wrong).status_code for _ in range(3)]
            assert codes == [401, 401, 401]
            refused = attacker.get("/v1/users", headers=wrong)
            assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
            assert "UNIPGEN_AUTH_FAILURES_PER_MINUTE" in refused.json()["message"]
            assert int(refused.headers["Retry-After"]) in range(1, 61)
            # Over the limit, even a right key waits: a 200 would tell the guesser it found one.
            assert attacker.get("/v1/users", headers={"Authorization": f"Bearer {key}"}).status_code == 429
            assert attacker.get("/v1/tenants", headers={"Authorization": "Bearer nope"}).status_code == 429
        # Another client address (127.0.0.2 is loopback too) is not affected.
        elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=url, transport=elsewhere) as honest:
            assert honest.get("/v1/users", headers={"Authorization": f"Bearer {key}"}).json() == []
            assert honest.get("/v1/health").status_code == 200
