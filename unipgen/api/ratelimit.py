"""The service's two sliding-window limits: requests per API key (`RateLimiter`) and failed
logins per client address (`AuthThrottle`), each counted by a `Counter`.

The embedded default counts in this process (`LocalCounter`): several service processes each
allow the limit. With `UNIPGEN_REDIS_URL` set, every process counts in one Redis
(`RedisCounter`): a sorted set per key, changed by one Lua script, so a check and its record
are atomic across processes and timed by one clock (Redis's). A Redis that cannot be reached
is an `UnavailableError` (HTTP 503) within about a second, never a hang, and never a request let
through uncounted.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from unipgen.errors import RateLimitedError, UnavailableError
from unipgen.settings import Settings

#: Seconds a Redis call may take (connecting, then each reply) before it is an `UnavailableError`.
REDIS_TIMEOUT_S = 1.0


class Counter(Protocol):
    """Events per key in a sliding window. `hit` checks and records in one step (a request);
    `wait` only checks and `add` only records (a login is refused before it is tried, and
    counted once it failed)."""

    def hit(self, key: str, limit: int, window_s: float) -> float:
        """Record an event of `key` unless `limit` are in the last `window_s` seconds already:
        0.0 when recorded, else the seconds until the oldest leaves the window (nothing recorded)."""
        ...

    def wait(self, key: str, limit: int, window_s: float) -> float:
        """The seconds until `key` has fewer than `limit` events in the window (0.0: it has)."""
        ...

    def add(self, key: str, window_s: float) -> None:
        """Record an event of `key`."""
        ...

    def close(self) -> None: ...


class LocalCounter:
    """A `Counter` in this process: a log of monotonic times per key. Keys with no event in the
    window are dropped once there are many, so memory stays bounded."""

    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int, window_s: float) -> float:
        with self._lock:
            now = time.monotonic()
            wait = self._wait(key, limit, window_s, now)
            if not wait:
                self._add(key, now)
            return wait

    def wait(self, key: str, limit: int, window_s: float) -> float:
        with self._lock:
            return self._wait(key, limit, window_s, time.monotonic())

    def add(self, key: str, window_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._seen) > self.MAX_KEYS:  # many keys: drop the quiet ones
                for seen in list(self._seen):
                    self._expire(seen, window_s, now)
            self._add(key, now)

    def close(self) -> None:
        """Nothing to release."""

    def _wait(self, key: str, limit: int, window_s: float, now: float) -> float:
        seen = self._expire(key, window_s, now)
        return window_s - (now - seen[0]) if len(seen) >= limit else 0.0

    def _add(self, key: str, now: float) -> None:
        self._seen.setdefault(key, deque()).append(now)

    def _expire(self, key: str, window_s: float, now: float) -> deque[float]:
        seen = self._seen.get(key, deque())
        while seen and now - seen[0] >= window_s:
            seen.popleft()
        if not seen:
            self._seen.pop(key, None)
        return seen


#: KEYS[1]: the key's sorted set (member: a random id, score: Redis's clock in microseconds).
#: ARGV: window (us), limit, mode (`hit`, `wait` or `add`), the new member. Returns 0 when under
#: the limit (recorded, but for `wait`), else the microseconds until the oldest event leaves.
_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[3] ~= 'add' and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
if ARGV[3] ~= 'wait' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
end
return 0
"""


class RedisCounter:
    """A `Counter` that every service process shares: one sorted set per key in Redis, under
    `prefix` (`<prefix>:<key>`), expiring a window after its last event."""

    def __init__(self, url: str, prefix: str) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as exc:
            from unipgen.errors import MissingDependencyError

            raise MissingDependencyError("UNIPGEN_REDIS_URL needs the redis package: pip install 'unipgen[scale]'") \
                from exc
        self.url = url
        self.prefix = prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        # One retry: a pooled connection that Redis closed (a restart) is reopened once, not waited on.
        self._client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                            socket_timeout=REDIS_TIMEOUT_S, retry=Retry(NoBackoff(), 1))
        self._script = self._client.register_script(_WINDOW_LUA)

    def ping(self) -> None:
        """Reach Redis now (the service checks at start that its counter is there)."""
        self._call(self._client.ping)

    def hit(self, key: str, limit: int, window_s: float) -> float:
        return self._run(key, limit, window_s, "hit")

    def wait(self, key: str, limit: int, window_s: float) -> float:
        return self._run(key, limit, window_s, "wait")

    def add(self, key: str, window_s: float) -> None:
        self._run(key, 0, window_s, "add")

    def close(self) -> None:
        self._client.close()

    def _run(self, key: str, limit: int, window_s: float, mode: str) -> float:
        args: list[str | int] = [round(window_s * 1_000_000), limit, mode, uuid.uuid4().hex]
        waited = self._call(lambda: self._script(keys=[f"{self.prefix}:{key}"], args=args))
        return int(waited) / 1_000_000

    def _call(self, call: Any) -> Any:
        try:
            return call()
        except self._errors as exc:
            raise UnavailableError(f"the shared rate-limit counter at {redacted(self.url)} (UNIPGEN_REDIS_URL) "
                                   f"cannot be reached: {type(exc).__name__}: {exc}") from exc


def redacted(url: str) -> str:
    """`url` without its password (error messages and logs may show it)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RateLimiter:
    """At most `per_minute` requests per key in any `window_s`-second window (a sliding log;
    in this process unless given a shared `counter`)."""

    def __init__(self, per_minute: int, window_s: float = 60.0, counter: Counter | None = None) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self.counter: Counter = counter or LocalCounter()

    def check(self, key: str) -> None:
        """Count a request of `key`, or raise `RateLimitedError` (not counted) if it is over."""
        wait = self.counter.hit(f"rate:{key}", self.per_minute, self.window_s)
        if wait:
            raise RateLimitedError(f"API key {key!r} made {self.per_minute} requests in the last minute "
                                   f"(the limit): retry in {wait:.0f} s", wait)


class AuthThrottle:
    """Failed logins per client address, at most `per_minute` in any 60-second window.

    An address over the limit is refused before its key is even looked at: answering 401 or 200
    would still let it test keys at full speed. So a right key from that address waits too, for
    at most a minute. Behind a proxy, run uvicorn with `--proxy-headers` (and
    `--forwarded-allow-ips`) so that the address is the client's, not the proxy's. With a shared
    `counter` the failures are counted across service processes: a guesser spread over them by a
    load balancer gets the same budget as against one.
    """

    def __init__(self, per_minute: int, window_s: float = 60.0, counter: Counter | None = None) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self.counter: Counter = counter or LocalCounter()

    def check(self, address: str) -> None:
        """Raise `RateLimitedError` if `address` is over its failed logins."""
        wait = self.counter.wait(f"authfail:{address}", self.per_minute, self.window_s)
        if wait:
            raise RateLimitedError(f"{self.per_minute} failed logins from {address} in the last minute "
                                   f"(UNIPGEN_AUTH_FAILURES_PER_MINUTE): retry in {wait:.0f} s", wait)

    def failed(self, address: str) -> None:
        self.counter.add(f"authfail:{address}", self.window_s)


def make_limits(settings: Settings) -> tuple[RateLimiter, AuthThrottle]:
    """The service's limits over one counter: Redis's when `settings.redis_url` is set (reached
    once now, so that a wrong URL stops the start), else this process's."""
    counter: Counter = LocalCounter()
    if settings.redis_url:
        shared = RedisCounter(settings.redis_url, settings.redis_prefix)
        shared.ping()
        counter = shared
    return (RateLimiter(settings.rate_limit_per_minute, counter=counter),
            AuthThrottle(settings.auth_failures_per_minute, counter=counter))


__all__ = ["AuthThrottle", "Counter", "LocalCounter", "RateLimiter", "RedisCounter", "make_limits", "redacted"]
