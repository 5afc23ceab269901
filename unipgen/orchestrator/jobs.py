"""A job's run, the part every executor shares: the job's inputs are read from the store
before the work (`prepare`), and its outputs are stored in the same transaction that marks it
succeeded (`finish`), so a retried job never stores twice. Only the middle step, the backend
call or the training loop, differs: `QueueExecutor` subclasses say where it runs
(`unipgen.orchestrator.inline.InlineExecutor` in this process, `ray_executor.RayExecutor` on a
Ray cluster).

Failures: an error of the caller's making (a `UnipgenError`: unknown subject, no documents...)
fails the job at once with its code; anything else is retried with exponential backoff up to
the job's `max_attempts`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Protocol, TypeVar

from pydantic import TypeAdapter

from unipgen.core.behavior_space import FitInputs, fit_config_for, fit_inputs
from unipgen.core.usermodel import UserModel
from unipgen.errors import ConflictError, InvalidInputError, NotFoundError, UnipgenError
from unipgen.memory.fits import FitOutput
from unipgen.memory.jobs import OutputArtifact
from unipgen.orchestrator.best_of import needs_preferences
from unipgen.orchestrator.describe import Describer
from unipgen.orchestrator.generation import (
    PreparedGeneration,
    embed_pending,
    output_artifacts,
    prepare_generation,
    prepared_from,
)
from unipgen.orchestrator.post import PostOutputs, PreparedPost, post_artifacts, post_result, prepare_post
from unipgen.orchestrator.protection import (
    ProtectedPhotos,
    ProtectionInputs,
    prepare_protection,
    protected_outputs,
)
from unipgen.orchestrator.training import (
    TrainedAdapter,
    TrainingInputs,
    inputs_digest,
    prepare_training,
)
from unipgen.schema.generation import GeneratedOutput
from unipgen.schema.jobs import AnyJobSpec, FitSpec, GenerateSpec, JobRecord, JobSpec, ProtectSpec

log = logging.getLogger("unipgen.orchestrator")

_SPEC: TypeAdapter[AnyJobSpec] = TypeAdapter(JobSpec)
#: What a job's work is, once its inputs are read: a generation, a post, a training, a fit, a protection.
Work = PreparedGeneration | PreparedPost | TrainingInputs | FitInputs | ProtectionInputs
#: What the work made: a generation's outputs (one list per request), a post's, an adapter, a fit, protected photos.
Produced = list[list[GeneratedOutput]] | PostOutputs | TrainedAdapter | FitOutput | ProtectedPhotos
_T = TypeVar("_T")


class Executor(Protocol):
    """What callers (CLI, service) use; the choice of executor is configuration."""

    name: str
    worker: str  # the id its job claims carry (`JobRecord.worker`)

    def submit(self, tenant: str, user: str | None, spec: AnyJobSpec, *,
               key: str | None = None, max_attempts: int = 3) -> JobRecord: ...

    def wait(self, tenant: str, key: str, timeout: float | None = None) -> JobRecord: ...

    def cancel(self, tenant: str, key: str) -> JobRecord: ...

    def run_pending(self, limit: int | None = None) -> list[JobRecord]: ...

    def shutdown(self) -> None: ...


class JobCancelled(Exception):
    """Raised inside a job's work when its cancellation was requested."""


@dataclass
class Lease:
    """A running job's hold: renewed every `heartbeat_s` (by a heartbeat thread while the work
    runs, see `beating`), so a worker that dies loses the job within `lease_s`; it reports
    progress (steps done / `total_steps`); calling it (as a trainer's `should_stop`) counts a
    step and says whether to stop."""

    store: Any
    job: JobRecord
    worker: str
    lease_s: float
    total_steps: int = 1
    steps: int = 0
    _renewed: float = 0.0
    cancelled: bool = False
    heartbeat_s: float = 5.0
    _lost: BaseException | None = None  # what the heartbeat met: the job went to another worker
    _beating: bool = False

    def __call__(self) -> bool:
        self.steps += 1
        return self.check()

    def check(self) -> bool:
        """Whether to stop (cancellation requested). Cheap to call often: the heartbeat thread
        renews; without one (outside `beating`) the lease is renewed here when due. Raises the
        `ConflictError` of a lease lost to another worker."""
        if self._lost is not None:
            raise self._lost
        if not self._beating and time.monotonic() - self._renewed >= self.heartbeat_s:
            self.renew()
        return self.cancelled

    def renew(self, progress: float | None = None) -> bool:
        done = progress if progress is not None else min(self.steps / max(self.total_steps, 1), 0.99)
        self.cancelled = self.store.jobs.renew_lease(self.job.tenant, self.job.key, self.worker, self.lease_s, done)
        self._renewed = time.monotonic()
        return self.cancelled

    @contextmanager
    def beating(self) -> Iterator[Lease]:
        """Renew the lease every `heartbeat_s` from a thread while the block runs, however long
        one step of the work blocks (a diffusion step, a Ray call); stopped before the block's
        end is stored, so no renewal races the job's last write."""
        stop = threading.Event()
        thread = threading.Thread(target=self._beat, args=(stop,), name=f"heartbeat-{self.job.key}", daemon=True)
        self._beating = True
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self._beating = False

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s):
            try:
                self.renew()
            except (ConflictError, NotFoundError) as exc:  # another worker took the job, or it was deleted
                self._lost = exc
                return
            except Exception:  # a store hiccup: the next beat tries again
                log.warning("heartbeat of job %s failed", self.job.key, exc_info=True)


def parse_spec(job: JobRecord) -> AnyJobSpec:
    return _SPEC.validate_python(job.spec)


def prepare(model: UserModel, job: JobRecord) -> Work:
    """Read from the store what the job's work needs (plain data, so it can go to a worker).
    Items added in bulk get their text vectors first: a fit's catalog, a generation's catalog
    and documents (`embed_pending`)."""
    spec = parse_spec(job)
    if isinstance(spec, FitSpec):
        config = fit_config_for(model.store, job.tenant, spec.config)
        model.embed_catalog(job.tenant)
        return fit_inputs(model.store, job.tenant, config)
    if isinstance(spec, GenerateSpec) and spec.is_post:
        return prepare_post(model, job.tenant, _user_of(job), spec)
    if isinstance(spec, GenerateSpec):
        return prepare_generation(model, job.tenant, _user_of(job), spec.modalities[0], spec.instruction, spec.options)
    if isinstance(spec, ProtectSpec):
        return prepare_protection(model, job.tenant, _user_of(job), spec)
    return prepare_training(model, job.tenant, _user_of(job), spec.method, subject=spec.subject, steps=spec.steps,
                            seed=spec.seed)


def _user_of(job: JobRecord) -> str:
    """The user of a generate, train or protect job: always one (`submit` checks it; only a fit
    is the tenant's)."""
    assert job.user is not None
    return job.user


def prepare_many(model: UserModel, jobs: list[JobRecord]) -> list[Work | Exception]:
    """`prepare` for jobs claimed together: what the generation jobs read is embedded once per
    tenant (`embed_pending`), then their instructions are encoded in one batch per tenant
    (`UserModel.contexts`; text jobs with best-of-N, whose contexts carry preferences too, in a
    batch of their own). A job whose inputs fail gets its exception."""
    prepared: list[Work | Exception | None] = [None] * len(jobs)
    by_tenant: dict[tuple[str, bool], list[tuple[int, GenerateSpec]]] = {}
    for index, job in enumerate(jobs):
        try:
            spec = parse_spec(job)
        except Exception as exc:  # noqa: BLE001  (a bad stored spec fails its own job only)
            prepared[index] = exc
            continue
        if isinstance(spec, GenerateSpec) and not spec.is_post:
            group = (job.tenant, needs_preferences(spec.modalities[0], spec.options))
            by_tenant.setdefault(group, []).append((index, spec))
        else:
            prepared[index] = _attempt(partial(prepare, model, job))
    for (tenant, preferences), wanted in by_tenant.items():
        users = [_user_of(jobs[index]) for index, _ in wanted]
        if isinstance(_attempt(partial(embed_pending, model, tenant, users)), Exception):
            for index, _ in wanted:  # one user's documents, say: each job on its own, failing alone
                prepared[index] = _attempt(partial(prepare, model, jobs[index]))
            continue
        contexts = model.contexts(tenant, [(_user_of(jobs[i]), spec.modalities[0], spec.instruction)
                                            for i, spec in wanted],
                                  for_generation=True, preferences=preferences)
        for (index, spec), context in zip(wanted, contexts, strict=True):
            prepared[index] = context if isinstance(context, Exception) else \
                _attempt(partial(prepared_from, model, context, spec.options))
    return prepared  # type: ignore[return-value]


def _attempt(make: Callable[[], _T]) -> _T | Exception:
    try:
        return make()
    except Exception as exc:  # noqa: BLE001  (handed to run_claimed, which records it on the job)
        return exc


def finish(model: UserModel, job: JobRecord, worker: str, work: Work, produced: Produced) -> JobRecord:
    """Store what the work produced and mark the job succeeded, in one transaction."""
    return model.store.jobs.finish_job(job.tenant, job.key, worker, *_end_of(model, work, produced))


def finish_many(model: UserModel, worker: str, done: list[tuple[JobRecord, Work, Produced]],
                backoff_s: float = 1.0) -> dict[str, JobRecord]:
    """`finish` for several (job, work, produced) in one transaction; if that fails (one job
    lost its lease, say), each is finished on its own so that only the failing one fails."""
    if not done:
        return {}
    try:
        # Sequence[Any]: finish_jobs stores fits too, though its annotation names artifacts only.
        ends: list[tuple[str, str, dict[str, Any], Sequence[Any]]] = [
            (job.tenant, job.key, *_end_of(model, work, produced)) for job, work, produced in done]
        return {record.key: record for record in model.store.jobs.finish_jobs(worker, ends)}
    except Exception:  # noqa: BLE001  (sorted out job by job below)
        ended = {}
        for job, work, produced in done:
            try:
                ended[job.key] = finish(model, job, worker, work, produced)
            except Exception as exc:  # noqa: BLE001  (recorded on the job)
                ended[job.key] = record_failure(model, job, worker, exc, backoff_s)
        return ended


def _end_of(model: UserModel, work: Work,
            produced: Produced) -> tuple[dict[str, Any], Sequence[OutputArtifact | FitOutput]]:
    """The job's result record and what to store (artifacts, or a fit) for what its work produced."""
    if isinstance(produced, FitOutput):
        return {"space": produced.space, "stats": produced.stats, "config": produced.config}, [produced]
    if isinstance(work, PreparedPost):
        assert isinstance(produced, PostOutputs)
        outputs = post_artifacts(model, work, produced)
        return post_result(work, produced, outputs), outputs
    if isinstance(work, PreparedGeneration):
        outputs = output_artifacts(model, work, produced)  # type: ignore[arg-type]
        return {"artifacts": [o.key for o in outputs], "plan": work.request.plan.model_dump(mode="json")}, outputs
    if isinstance(produced, ProtectedPhotos):
        outputs = protected_outputs(produced)
        return {"artifacts": [o.key for o in outputs], "protects": ":".join(produced.target),
                "psnr": [meta["psnr"] for meta in produced.metas], "losses": produced.losses}, outputs
    assert isinstance(produced, TrainedAdapter)
    outputs = [OutputArtifact(produced.new_key(), "adapter", produced.media_type, produced.data,
                              produced.derived_from, produced.meta)]
    return {"artifacts": [outputs[0].key], "method": produced.method, "losses": produced.losses}, outputs


def record_failure(model: UserModel, job: JobRecord, worker: str, exc: BaseException,
                   backoff_s: float = 1.0) -> JobRecord:
    """Record how a job's run ended early: cancelled, failed for good (a caller's error), or
    failed for another attempt (anything else); a job that went on elsewhere is left alone."""
    try:
        return _record_failure(model, job, worker, exc, backoff_s)
    except NotFoundError:  # the job was deleted while it ran (its user forgotten): nothing to record or keep
        model.store.jobs.drop_job_scratch(job.tenant, job.key)
        return job


def _record_failure(model: UserModel, job: JobRecord, worker: str, exc: BaseException, backoff_s: float) -> JobRecord:
    store = model.store
    if isinstance(exc, JobCancelled):
        return store.jobs.mark_cancelled(job.tenant, job.key, worker)
    if isinstance(exc, ConflictError):
        current = store.jobs.job(job.tenant, job.key)
        if current.worker != worker or current.status != "running":  # the job went on elsewhere
            return current
    if isinstance(exc, UnipgenError):
        return store.jobs.fail_job(job.tenant, job.key, worker, {"code": exc.code, "message": exc.message},
                              retryable=False)
    log.warning("job %s failed (attempt %d of %d)", job.key, job.attempts, job.max_attempts, exc_info=exc)  # the trace
    return store.jobs.fail_job(job.tenant, job.key, worker, {"code": "internal", "message": f"{type(exc).__name__}: {exc}"},
                          retryable=True, backoff_s=backoff_s)


def run_claimed(model: UserModel, job: JobRecord, worker: str, lease_s: float,
                work_fn: Callable[[Work, Lease], Produced],
                backoff_s: float = 1.0, store_lock: AbstractContextManager[Any] | None = None,
                prepared: Work | Exception | None = None, *,
                heartbeat_s: float = 5.0, checkpoint_every: int = 10) -> JobRecord:
    """Run a job this worker claimed: prepare (unless `prepared`, from `prepare_many`, is
    given), `work_fn` (the executor's part) with the lease's heartbeat on, finish; record
    failures (retryable or not) and cancellation. A training job checkpoints into the job's
    scratch folder every `checkpoint_every` steps, so a retry resumes there. With several jobs
    in flight in threads, `store_lock` serializes their ends (the writes); preparing reads in
    parallel."""
    store = model.store
    lease = Lease(store, job, worker, lease_s, _renewed=time.monotonic(),  # the claim took the lease
                  heartbeat_s=min(heartbeat_s, lease_s / 3))
    lock = store_lock or nullcontext()
    try:
        if job.cancel_requested:
            raise JobCancelled
        if isinstance(prepared, Exception):
            raise prepared
        with lease.beating():  # preparing may load models: it is under the lease too
            work = prepared if prepared is not None else prepare(model, job)
            if isinstance(work, TrainingInputs):
                work = with_checkpoints(work, store.jobs.job_scratch(job.tenant, job.key), checkpoint_every)
            lease.total_steps = work.steps if isinstance(work, (TrainingInputs, ProtectionInputs)) else 1
            produced = work_fn(work, lease)
        with lock:  # asked to stop while the work ran: finish_job drops what it made
            return finish(model, job, worker, work, produced)
    except Exception as exc:  # noqa: BLE001  (record_failure sorts it: cancelled, the caller's, a crash)
        return record_failure(model, job, worker, exc, backoff_s)


def with_checkpoints(work: TrainingInputs, scratch: Any, every: int) -> TrainingInputs:
    """`work` checkpointing under the job's scratch folder, in a subfolder named by the inputs'
    digest: a retry with the same inputs resumes, one whose inputs changed (a photo added or
    forgotten meanwhile) starts afresh instead of failing on a foreign checkpoint."""
    if scratch is None:
        return work
    return replace(work, checkpoint_dir=str(scratch / inputs_digest(work)), checkpoint_every=every)


class QueueExecutor:
    """The part every executor shares: jobs go through the store's queue, and this process
    drives them (claims, renews leases, stores results). Subclasses say where the work runs."""

    name = "queue"

    def __init__(self, model: UserModel, *, worker: str | None = None, lease_s: float = 30.0,
                 backoff_s: float = 1.0, heartbeat_s: float = 5.0, checkpoint_every: int = 10) -> None:
        self.model = model
        self.worker = worker or f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_s = lease_s
        self.heartbeat_s = min(heartbeat_s, lease_s / 3)  # a few beats per lease: one late beat loses nothing
        self.backoff_s = backoff_s
        self.checkpoint_every = checkpoint_every
        self._describer: Describer | None = None

    def caption(self, image: bytes) -> str:
        """`image`'s caption by the profile's image-to-text backend, loaded in this process on
        first use (a post's text is written from its image's caption)."""
        if self._describer is None:
            self._describer = Describer(self.model)
        return self._describer.read(image)[0]

    def submit(self, tenant: str, user: str | None, spec: AnyJobSpec, *,
               key: str | None = None, max_attempts: int = 3) -> JobRecord:
        """Queue a job: a user's (generate, train, protect), or the tenant's (fit: `user` None)."""
        if (user is None) != isinstance(spec, FitSpec):
            raise InvalidInputError("a fit job is the tenant's (no user); generate, train and protect jobs need a user")
        return self.model.store.jobs.submit_job(tenant, user, spec.model_dump(mode="json"), key=key,
                                           max_attempts=max_attempts)

    def wait(self, tenant: str, key: str, timeout: float | None = None) -> JobRecord:
        """Run job `key` until it ends (retries included), unless another worker holds it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.model.store.jobs.job(tenant, key)
            if job.done or (deadline is not None and time.monotonic() > deadline):
                return job
            claimed = self.model.store.jobs.claim_job(self.worker, self.lease_s, tenant=tenant, key=key)
            if claimed is not None:
                self._run(claimed)
            else:  # backing off before a retry, or running elsewhere
                time.sleep(0.05)

    def cancel(self, tenant: str, key: str) -> JobRecord:
        return self.model.store.jobs.cancel_job(tenant, key)

    def run_pending(self, limit: int | None = None) -> list[JobRecord]:
        """Run runnable queued jobs (oldest first) until none is left or `limit` ran."""
        ran: list[JobRecord] = []
        while limit is None or len(ran) < limit:
            job = self.model.store.jobs.claim_job(self.worker, self.lease_s)
            if job is None:
                return ran
            ran.append(self._run(job))
        return ran

    def _run(self, job: JobRecord) -> JobRecord:
        return run_claimed(self.model, job, self.worker, self.lease_s, self._work, self.backoff_s,
                           heartbeat_s=self.heartbeat_s, checkpoint_every=self.checkpoint_every)

    def _work(self, work: Work, lease: Lease) -> Produced:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Release what the executor holds (nothing here; the Ray executor stops its actors)."""


__all__ = ["Executor", "JobCancelled", "Lease", "Produced", "QueueExecutor", "Work", "finish", "finish_many",
           "parse_spec", "prepare", "prepare_many", "record_failure", "run_claimed", "with_checkpoints"]
