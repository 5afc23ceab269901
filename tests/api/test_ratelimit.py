"""The rate limits' counters: the in-process one (the embedded default) and Redis's (shared by
service processes, `UNIPGEN_REDIS_URL`), with the same semantics; atomic under concurrent
clients; keys namespaced and expiring; a Redis that is down or silent is a quick
`UnavailableError` (503 `unavailable` over HTTP), never a hang or a request let through."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY, live_service
from tests.redisserver import free_port, private_redis, shared_redis_url, unique_prefix
from unipgen.api.ratelimit import AuthThrottle, Counter, LocalCounter, RateLimiter, RedisCounter, make_limits
from unipgen.api.service import Service
from unipgen.client import Client
from unipgen.errors import RateLimitedError, UnavailableError
from unipgen.settings import Settings

pytestmark = pytest.mark.scale


@pytest.fixture
def prefix() -> str:
    return unique_prefix("ratelimit")


@pytest.fixture(params=["local", "redis"])
def counter(request: pytest.FixtureRequest, prefix: str) -> Iterator[Counter]:
    made: Counter = LocalCounter() if request.param == "local" else RedisCounter(shared_redis_url(), prefix)
    yield made
    made.close()


def test_a_sliding_window_per_key(counter: Counter) -> None:
    limiter = RateLimiter(2, window_s=1.5, counter=counter)
    limiter.check("k")
    time.sleep(0.5)
    limiter.check("k")
    with pytest.raises(RateLimitedError, match="made 2 requests in the last minute") as refused:
        limiter.check("k")
    assert 0.5 < refused.value.retry_after_s <= 1.0  # the first request leaves the window ~1.5 s after it
    limiter.check("other")  # per key
    time.sleep(refused.value.retry_after_s + 0.05)
    limiter.check("k")  # the first one left; refused requests were not counted
    with pytest.raises(RateLimitedError):
        limiter.check("k")  # the second is still in the window


def test_failed_logins_are_counted_apart_from_requests(counter: Counter) -> None:
    throttle = AuthThrottle(2, counter=counter)
    limiter = RateLimiter(1, counter=counter)
    throttle.check("10.0.0.1")  # checking counts nothing
    throttle.check("10.0.0.1")
    throttle.failed("10.0.0.1")
    throttle.failed("10.0.0.1")
    with pytest.raises(RateLimitedError, match="2 failed logins from 10.0.0.1") as refused:
        throttle.check("10.0.0.1")
    assert 59 < refused.value.retry_after_s <= 60
    throttle.check("10.0.0.2")
    limiter.check("10.0.0.1")  # another kind of key, even with the same name


def test_two_processes_share_one_redis_window_atomically(prefix: str) -> None:
    """Eight clients on two counters (two connection pools, as two service processes have)
    race for 30 requests of one key: exactly 30 pass, and failed logins counted on one are
    refused on the other."""
    counters = [RedisCounter(shared_redis_url(), prefix) for _ in range(2)]
    limiters = [RateLimiter(30, counter=c) for c in counters]
    passed: list[int] = []
    start = threading.Barrier(8)

    def client(number: int) -> None:
        start.wait()
        for _ in range(10):
            try:
                limiters[number % 2].check("shared-key")
                passed.append(number)
            except RateLimitedError:
                pass

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(passed) == 30 and {n % 2 for n in passed} == {0, 1}
    AuthThrottle(3, counter=counters[0]).failed("10.0.0.9")
    AuthThrottle(3, counter=counters[1]).failed("10.0.0.9")
    AuthThrottle(3, counter=counters[0]).failed("10.0.0.9")
    with pytest.raises(RateLimitedError):
        AuthThrottle(3, counter=counters[1]).check("10.0.0.9")
    for made in counters:
        made.close()


def test_redis_keys_are_namespaced_and_expire(prefix: str) -> None:
    import redis

    counter = RedisCounter(shared_redis_url(), prefix)
    RateLimiter(5, window_s=2.0, counter=counter).check("k1")
    AuthThrottle(5, counter=counter).failed("10.0.0.3")
    client = redis.Redis.from_url(shared_redis_url())
    assert sorted(client.scan_iter(match=f"{prefix}:*")) == [f"{prefix}:authfail:10.0.0.3".encode(),
                                                            f"{prefix}:rate:k1".encode()]
    assert 0 < client.pttl(f"{prefix}:rate:k1") <= 2000 and 58_000 < client.pttl(f"{prefix}:authfail:10.0.0.3") <= 60_000
    time.sleep(2.1)
    assert client.exists(f"{prefix}:rate:k1") == 0  # nothing left behind once the window passed
    client.delete(f"{prefix}:authfail:10.0.0.3")
    client.close()
    counter.close()


def test_a_redis_that_is_not_there_is_a_quick_clear_error(prefix: str) -> None:
    dead = f"redis://user:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(UnavailableError, match=r"UNIPGEN_REDIS_URL\) cannot be reached") as refused:
        make_limits(Settings(redis_url=dead, redis_prefix=prefix))
    assert time.monotonic() - started < 3 and refused.value.code == "unavailable"
    assert "hunter2" not in refused.value.message and "user:***@127.0.0.1" in refused.value.message


def test_a_redis_that_never_answers_is_an_error_not_a_hang(prefix: str) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        counter = RedisCounter(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", prefix)
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="Timeout"):
            RateLimiter(5, counter=counter).check("k")
        assert time.monotonic() - started < 5  # REDIS_TIMEOUT_S per try, one retry
        counter.close()


def test_the_service_answers_503_while_its_redis_is_down(tmp_path: Path, prefix: str) -> None:
    """A live service on a Redis of its own: limits hold through it; once that Redis is stopped,
    keyed requests answer 503 `unavailable` at once (not 200 unchecked, not a hang), health
    still answers, and a service cannot start on it."""
    with private_redis() as (url, process):
        settings = Settings(home=tmp_path / "home", admin_key=ADMIN_KEY, redis_url=url,
                            redis_prefix=prefix, rate_limit_per_minute=3, encoder_workers=0)
        with live_service(settings, run_jobs=False) as (base, _), Client(base, api_key=ADMIN_KEY) as admin:
            admin.create_tenant("t")
            key = admin.create_api_key("t", "k").key
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
                codes = [http.get("/v1/users").status_code for _ in range(4)]
                assert codes == [200, 200, 200, 429]
                process.terminate()
                process.wait(10)
                started = time.monotonic()
                down = http.get("/v1/users")
                assert (down.status_code, down.json()["code"]) == (503, "unavailable")
                assert "UNIPGEN_REDIS_URL" in down.json()["message"] and time.monotonic() - started < 5
                assert http.get("/v1/health").status_code == 200
        with pytest.raises(UnavailableError, match="cannot be reached"):
            Service.start(settings, run_jobs=False)  # the limits are made first: nothing else was opened
