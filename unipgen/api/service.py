"""What the service holds while it runs: the store, the user model, the executor and its job
runner, the rate limits (`api/ratelimit.py`), the encoder pool of uploads, the chat and the
describer. Built in the app's lifespan, closed when it stops."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from unipgen.api.ratelimit import AuthThrottle, RateLimiter, make_limits
from unipgen.settings import Settings

log = logging.getLogger("unipgen.api")


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

        limiter, auth_throttle = make_limits(settings)  # first: a Redis that is not there stops the start at once
        store = MemoryStore.open(settings)
        limited = apply_input_limits(load_profile(profile) if isinstance(profile, str) else profile, settings)
        pool = (EncoderPool(limited, settings.encoder_workers, timeout_s=settings.encoder_timeout_s)
                if settings.encoder_workers else None)
        model = UserModel(store, limited, cache_dir=settings.home / "cache", pool=pool)
        executor = make_executor(model, settings)
        chat = Chat(model)
        service = cls(settings, store, model, executor, limiter, auth_throttle, pool=pool, chat=chat,
                      describer=Describer(model, chat=chat))
        if run_jobs:
            service.runner = JobRunner(executor)
            service.runner.start()
        return service

    def queued(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def queue(self, tenant: str, actor: str, user: str | None, spec: Any, key: str | None, action: str,
              detail: dict[str, Any] | None = None) -> Any:
        """Submit `spec` as a job of `user` (None: the tenant's), audit it as `action` by `actor`,
        wake the workers; returns the job's record."""
        job = self.executor.submit(tenant, user, spec, key=key)
        self.store.audit.record_audit(tenant, actor, action, user=user, object_kind="job", object_key=job.key,
                                      detail=detail)
        self.queued()
        return job

    def close(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        self.executor.shutdown()
        if self.pool is not None:
            self.pool.close()
        self.store.close()
        self.limiter.counter.close()
