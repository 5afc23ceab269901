"""What the service holds while it runs: the store, the user model, the executor and its job
runner, the rate limiter, the encoder pool of uploads, the chat and the describer. Built in the app's lifespan, closed when
it stops."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from unipgen.errors import RateLimitedError
from unipgen.settings import Settings

log = logging.getLogger("unipgen.api")


class RateLimiter:
    """At most `per_minute` requests per key in any 60-second window (sliding log, in this
    process: several service processes each allow that many)."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(key, deque())
            while seen and now - seen[0] >= self.window_s:
                seen.popleft()
            if len(seen) >= self.per_minute:
                wait = self.window_s - (now - seen[0])
                raise RateLimitedError(f"API key {key!r} made {self.per_minute} requests in the last minute "
                                       f"(the limit): retry in {wait:.0f} s", wait)
            seen.append(now)


class AuthThrottle:
    """Failed logins per client address, at most `per_minute` in any 60-second window.

    An address over the limit is refused before its key is even looked at: answering 401 or 200
    would still let it test keys at full speed. So a right key from that address waits too, for
    at most a minute. Behind a proxy, run uvicorn with `--proxy-headers` (and
    `--forwarded-allow-ips`) so that the address is the client's, not the proxy's.
    """

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """Raise `RateLimitedError` if `address` is over its failed logins."""
        now = time.monotonic()
        with self._lock:
            failures = self._expire(address, now)
            if len(failures) >= self.per_minute:
                wait = self.window_s - (now - failures[0])
                raise RateLimitedError(f"{self.per_minute} failed logins from {address} in the last minute "
                                       f"(UNIPGEN_AUTH_FAILURES_PER_MINUTE): retry in {wait:.0f} s", wait)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # many addresses: drop the quiet ones, memory stays bounded
                for seen in list(self._failures):
                    self._expire(seen, now)
            self._failures.setdefault(address, deque()).append(now)

    def _expire(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address, deque())
        while failures and now - failures[0] >= self.window_s:
            failures.popleft()
        if not failures:
            self._failures.pop(address, None)
        return failures


class JobRunner:
    """Runs queued jobs in a background thread of the service (the embedded default). Jobs
    live in the store, so jobs queued when the service stops run when it starts again."""

    def __init__(self, executor: Any, poll_s: float = 0.5) -> None:
        self.executor = executor
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="unipgen-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.executor.run_pending(limit=4)  # a few at a time: stop stays prompt
            except Exception:
                log.exception("job runner: run_pending failed")
                ran = []
            if not ran:
                self._wake.wait(self.poll_s)
                self._wake.clear()


@dataclass
class Service:
    """The running service's parts (see the module doc)."""

    settings: Settings
    store: Any
    model: Any
    executor: Any
    limiter: RateLimiter
    auth_throttle: AuthThrottle
    runner: JobRunner | None = None
    pool: Any = None  # the EncoderPool of uploads (None: encoded in this process)
    chat: Any = None  # the Chat of `/chat` turns (its text model loads on the first turn)
    describer: Any = None  # the Describer of `/descriptions` (shares the chat's text model; loads on first use)

    @classmethod
    def start(cls, settings: Settings, *, profile: Any = "tiny", run_jobs: bool = True) -> Service:
        from unipgen.core.encoderpool import EncoderPool, apply_input_limits
        from unipgen.core.usermodel import UserModel
        from unipgen.memory import MemoryStore
        from unipgen.orchestrator import Chat, Describer, make_executor
        from unipgen.schema.profiles import load_profile

        store = MemoryStore.open(settings)
        limited = apply_input_limits(load_profile(profile) if isinstance(profile, str) else profile, settings)
        pool = (EncoderPool(limited, settings.encoder_workers, timeout_s=settings.encoder_timeout_s)
                if settings.encoder_workers else None)
        model = UserModel(store, limited, cache_dir=settings.home / "cache", pool=pool)
        executor = make_executor(model, settings)
        chat = Chat(model)
        service = cls(settings, store, model, executor, RateLimiter(settings.rate_limit_per_minute),
                      AuthThrottle(settings.auth_failures_per_minute), pool=pool, chat=chat,
                      describer=Describer(model, chat=chat))
        if run_jobs:
            service.runner = JobRunner(executor)
            service.runner.start()
        return service

    def queued(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        self.executor.shutdown()
        if self.pool is not None:
            self.pool.close()
        self.store.close()
