"""Run jobs' work on a Ray cluster: one model actor per (modality, model, placement), training tasks.

The driver (this process) keeps the job queue: it claims jobs, prepares their inputs from the
store, renews their leases and stores their results, exactly as the inline executor does
(`jobs.QueueExecutor`). Only the work goes to Ray:

- **Generation** goes to a `ModelWorker` actor that holds the profile's backend for that
  modality on its GPU share (the backend option ``num_gpus``, fractional where models fit). The
  backend's own LRU caches keep per-user adapters loaded by content hash between requests.
  Requests arriving within ``max_wait_ms`` of each other (from different users, or a best-of-N
  job's candidates) are run as one batch: mixed adapters in one text batch, grouped by adapter
  for images.
- **Training** runs as a Ray task that reserves the same GPU share (and custom resources).

The model actors are shared by every driver on the cluster: each is named after what it holds
(`actor_name`: modality, backend spec with its placement, blob store, unipgen version) in the
`ACTOR_NAMESPACE` namespace, and created with ``get_if_exists``, so a second driver (another
`unipgen worker`, the service) gets the actor the first one made instead of a duplicate. They
are detached: a driver that exits leaves them running, with their models loaded, for the others
and for the next driver (a non-detached actor would die with the driver that made it, taking
the other drivers' requests with it). `RayExecutor.shutdown` leaves them up unless asked.

Every output says where it was made: ``meta["ray"]`` holds the Ray node and actor ids.

A worker that dies mid-job (killed, out of memory, a lost node) surfaces as a `RayActorError`
in the driver; the job is retried with backoff and the actor restarts (``max_restarts=-1``).
Outputs are stored by the driver when the job ends, so a retry stores nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

from unipgen import __version__
from unipgen.core.behavior_space import FitInputs, run_fit
from unipgen.core.usermodel import UserModel
from unipgen.modalities import PLACEMENT_KEYS
from unipgen.orchestrator.generation import PreparedGeneration
from unipgen.orchestrator.jobs import (
    JobCancelled,
    Lease,
    Produced,
    QueueExecutor,
    Work,
    finish_many,
    parse_spec,
    prepare_many,
    record_failure,
    run_claimed,
)
from unipgen.orchestrator.post import PreparedPost, run_post
from unipgen.orchestrator.protection import ProtectionInputs, run_protection_task
from unipgen.orchestrator.ray_cluster import RayCluster, connect
from unipgen.orchestrator.training import TrainedAdapter, TrainingInputs, modality_of
from unipgen.schema.jobs import GenerateSpec, JobRecord
from unipgen.schema.profiles import ComponentSpec

#: Work that runs on its own (a Ray task), not batched with generations on a model actor.
_ALONE = (TrainingInputs, FitInputs, PreparedPost, ProtectionInputs)
#: The Ray namespace of the model actors, whatever namespace a driver joined in.
ACTOR_NAMESPACE = "unipgen"


def actor_name(modality: str, spec: ComponentSpec, blob_url: str) -> str:
    """The name of the model actor for `modality`'s backend `spec`: drivers that would build the
    same actor (same model and options, placement included, same blob store, same unipgen
    version) get the same name, hence the same actor; any difference gets an actor of its own."""
    identity = json.dumps([modality, spec.model_dump(mode="json"), blob_url, __version__], sort_keys=True)
    return f"unipgen-{modality}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def ray_location() -> dict[str, str]:
    """The Ray node (and actor) this process works in; empty outside Ray."""
    import ray

    if not ray.is_initialized():
        return {}
    context = ray.get_runtime_context()
    actor = context.get_actor_id()
    return {"node_id": context.get_node_id(), **({"actor_id": actor} if actor else {})}


class ModelWorker:
    """A Ray actor holding one backend; concurrent `generate` calls are micro-batched."""

    def __init__(self, spec: dict[str, Any], blob_url: str, max_batch: int = 16, max_wait_ms: float = 10.0,
                 torch_threads: int = 1) -> None:
        import torch

        from unipgen.memory.blobs import BlobStore
        from unipgen.modalities import load_backend

        torch.set_num_threads(torch_threads)  # the same arithmetic as an inline run: same bytes
        self.backend = load_backend(ComponentSpec(**spec))
        self.backend.setup()
        self.blobs = BlobStore(blob_url)
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self._lock: asyncio.Lock | None = None
        self.batches: list[int] = []  # size of each backend call, for tests and the benchmark
        self.location = ray_location()  # stamped on every output (`meta["ray"]`)
        self.running = 0  # requests in the backend call under way
        self._bursts: dict[str, int] = {}  # burst id -> requests of it arrived so far

    async def generate(self, request: Any, burst: tuple[str, int] | None = None) -> list[Any]:
        """The outputs of one request, generated in a batch with whatever else arrived meanwhile.

        `burst` is (id, size) when the sender dispatched `size` requests together: once all of
        them are here the batch goes at once, without waiting out `max_wait_ms` (a lone
        request, a burst of 1, never waits)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if burst is not None:
            arrived = self._bursts.get(burst[0], 0) + 1
            complete = arrived >= burst[1]
            if complete:
                self._bursts.pop(burst[0], None)
            else:
                self._bursts[burst[0]] = arrived
        else:
            complete = False
        if len(self._pending) >= self.max_batch or (complete and not self._busy):
            await self._flush()
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_later())
        return await future

    async def generate_many(self, requests: list[Any], burst: tuple[str, int] | None = None) -> list[list[Any]]:
        """The outputs of several requests (a job's best-of-N candidates), one list per request;
        each joins the batches as `generate` does (`burst` counts every one of them)."""
        return list(await asyncio.gather(*(self.generate(request, burst) for request in requests)))

    @property
    def _busy(self) -> bool:
        """A backend call is under way: new requests wait for it anyway and join the next batch."""
        return self._lock is not None and self._lock.locked()

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.max_wait_s)
        await self._flush()

    async def _flush(self) -> None:
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:  # one backend call at a time: backends are not thread-safe
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            if not batch:
                return
            self.batches.append(len(batch))
            requests = [request for request, _ in batch]
            self.running = len(batch)
            try:
                results = await asyncio.get_running_loop().run_in_executor(
                    None, self.backend.generate, requests, self.blobs.get)
            except Exception as exc:  # noqa: BLE001  (every request of the batch gets the error)
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), outputs in zip(batch, results, strict=True):
                    future.set_result([self._stamped(output) for output in outputs])
            finally:
                self.running = 0
            if self._pending:
                self._flusher = asyncio.create_task(self._flush_later())

    def _stamped(self, output: Any) -> Any:
        """`output` with where it was made (`meta["ray"]`), when this runs on Ray."""
        return output.model_copy(update={"meta": {**output.meta, "ray": self.location}}) if self.location else output

    def info(self) -> dict[str, Any]:
        """Where the actor runs: its process, Ray node and actor, and the GPUs Ray gave it."""
        import ray

        return {"pid": os.getpid(), **self.location, "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "batches": list(self.batches),
                "running": self.running, "adapter_cache": dict(getattr(self.backend, "adapter_cache_stats", {}))}


class ProgressBoard:
    """A small Ray actor where training tasks post their step count for the driver to read."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}

    def post(self, key: str, steps: int) -> None:
        self.steps[key] = steps

    def take(self, key: str) -> int:
        return self.steps.get(key, 0)

    def drop(self, key: str) -> None:
        self.steps.pop(key, None)


def _train(inputs: TrainingInputs, board: Any = None, key: str = "") -> TrainedAdapter:
    import torch

    from unipgen.orchestrator.training import run_training

    torch.set_num_threads(1)
    steps = 0

    def report() -> bool:  # the trainers' should_stop, asked before each step
        nonlocal steps
        steps += 1
        if board is not None:
            board.post.remote(key, steps - 1)  # fire and forget: never slows a step down
        return False

    trained = run_training(inputs, should_stop=report)
    trained.meta["ray"] = ray_location()  # where it was trained, as a generation's outputs say
    return trained


class RayExecutor(QueueExecutor):
    """Runs each job's work on Ray; this process drives the queue (see the module doc).

    `run_pending` keeps up to `concurrency` jobs in flight, so that requests of different
    users reach the same model actor together and are batched.
    """

    name = "ray"

    def __init__(self, model: UserModel, *, home: Any = None, address: str | None = None,
                 cluster: RayCluster | None = None, concurrency: int = 8, prepare_batch: int = 16,
                 worker: str | None = None,
                 lease_s: float = 30.0, backoff_s: float = 1.0, poll_s: float = 0.5,
                 restart_timeout_s: float = 300.0, heartbeat_s: float = 5.0, checkpoint_every: int = 10) -> None:
        super().__init__(model, worker=worker, lease_s=lease_s, backoff_s=backoff_s, heartbeat_s=heartbeat_s,
                         checkpoint_every=checkpoint_every)
        from pathlib import Path

        from unipgen.settings import Settings

        self.cluster = cluster or connect(Path(home) if home else Settings().home, address)
        self.concurrency = concurrency
        self.prepare_batch = prepare_batch  # as many as a model actor batches at once (its default)
        self.poll_s = poll_s
        self._bursts: dict[str, tuple[str, int]] = {}  # job key -> its burst, until its work is sent
        self.restart_timeout_s = restart_timeout_s
        self._actors: dict[str, Any] = {}
        self._progress: Any = None  # the ProgressBoard actor, created with the first training job
        # Jobs in flight share this process: their ends (store writes) and actor creation take turns.
        self._store_lock = threading.RLock()

    # -- placement ------------------------------------------------------------------------------

    def actor(self, modality: str) -> Any:
        """The model actor of `modality`: the cluster's one for this model and placement (made by
        whichever driver asked first, restarted by Ray if it dies; see the module doc)."""
        with self._store_lock:
            return self._actor(modality)

    def _actor(self, modality: str) -> Any:
        if modality not in self._actors:
            import ray

            spec, placement = self._placement(modality)
            remote = ray.remote(ModelWorker).options(
                name=actor_name(modality, spec, self.model.store.blobs.url), namespace=ACTOR_NAMESPACE,
                lifetime="detached", get_if_exists=True, num_cpus=0, num_gpus=placement.get("num_gpus", 0),
                resources=placement.get("resources", {}), max_restarts=-1, max_task_retries=0, max_concurrency=64)
            self._actors[modality] = remote.remote(  # load_backend leaves the placement keys out
                spec.model_dump(), self.model.store.blobs.url,
                placement.get("max_batch_requests", 16), placement.get("max_wait_ms", 10.0))
        return self._actors[modality]

    def _placement(self, modality: str) -> tuple[ComponentSpec, dict[str, Any]]:
        """The profile's backend of `modality` and its placement options (`PLACEMENT_KEYS`)."""
        spec = self.model.profile.backends.get(modality)
        if spec is None:
            from unipgen.errors import NotFoundError

            raise NotFoundError(f"profile {self.model.profile.name!r} has no {modality!r} generator")
        placement = {key: value for key, value in spec.options.items() if key in PLACEMENT_KEYS}
        resources = placement.get("resources", {})
        if not isinstance(resources, dict) or not all(
                isinstance(name, str) and isinstance(amount, int | float) and amount >= 0
                for name, amount in resources.items()):
            from unipgen.errors import InvalidInputError

            raise InvalidInputError(f"profile {self.model.profile.name!r}, backend {modality!r}: the option "
                                    f"`resources` must be a table of Ray resource names to amounts, not {resources!r}")
        return spec, placement

    # -- work -----------------------------------------------------------------------------------

    def _work(self, work: Work, lease: Lease) -> Produced:
        import ray

        if isinstance(work, PreparedGeneration):
            return self._receive(self._send(work, lease), work, lease)
        if isinstance(work, PreparedPost):  # each part on its model actor; the caption in this process
            return run_post(self.model, work, lambda part: self._receive(self._send(part, lease), part, lease),
                            self.caption)
        if isinstance(work, FitInputs):  # numpy and scipy on one CPU of the cluster
            ref = ray.remote(run_fit).options(num_cpus=1, max_retries=0).remote(work)
            return self._await(ref, lease, force_cancel=True)
        if isinstance(work, ProtectionInputs):  # where the image model runs, like an image training
            placement = self._placement("image")[1]
            task = ray.remote(run_protection_task).options(num_cpus=0, num_gpus=placement.get("num_gpus", 0), max_retries=0,
                                                resources=placement.get("resources", {})).remote(work)
            return self._await(task, lease, force_cancel=True)
        else:
            placement = self._placement(modality_of(work.method))[1]  # where the modality's model runs
            board = self._board()
            ref = ray.remote(_train).options(num_cpus=0, num_gpus=placement.get("num_gpus", 0), max_retries=0,
                                             resources=placement.get("resources", {})).remote(work, board, lease.job.key)
            try:
                return self._await(ref, lease, force_cancel=True, board=board)
            finally:
                board.drop.remote(lease.job.key)

    def _send(self, work: PreparedGeneration, lease: Lease) -> Any:
        """Send a generation's requests (best-of-N: its candidates) to its model actor; returns the
        result's reference (one list of outputs per request)."""
        actor = self.actor(work.request.context.modality)
        burst = self._bursts.pop(lease.job.key, (lease.job.key, len(work.requests)))  # a job on its own
        return actor.generate_many.remote(work.requests, burst)

    def _receive(self, ref: Any, work: PreparedGeneration, lease: Lease) -> Any:
        import ray

        try:
            return self._await(ref, lease, force_cancel=False)
        except ray.exceptions.RayActorError:
            # The worker died mid-job: the job will be retried; first let Ray bring the
            # actor back (it reloads its model), so that the retry does not find it down.
            self._wait_alive(work.request.context.modality)
            raise

    def _run_group(self, jobs: list[JobRecord], prepared: list[Any]) -> list[JobRecord]:
        """Generation jobs prepared together: all sent, then all awaited, then all stored in
        one transaction (`finish_many`: a job that fails fails alone)."""
        ended: dict[str, JobRecord] = {}
        sent, done = [], []
        with ExitStack() as heartbeats:  # every job of the group keeps its lease until it is stored
            for job, work in zip(jobs, prepared):
                lease = Lease(self.model.store, job, self.worker, self.lease_s, _renewed=time.monotonic(),
                              heartbeat_s=self.heartbeat_s)
                try:
                    if job.cancel_requested:
                        raise JobCancelled
                    if isinstance(work, Exception):
                        raise work
                    heartbeats.enter_context(lease.beating())
                    sent.append((job, lease, work, self._send(work, lease)))
                except Exception as exc:  # noqa: BLE001  (recorded on the job)
                    ended[job.key] = record_failure(self.model, job, self.worker, exc, self.backoff_s)
            for job, lease, work, ref in sent:
                try:
                    done.append((job, work, self._receive(ref, work, lease)))
                except Exception as exc:  # noqa: BLE001  (recorded on the job)
                    ended[job.key] = record_failure(self.model, job, self.worker, exc, self.backoff_s)
        with self._store_lock:
            ended |= finish_many(self.model, self.worker, done, self.backoff_s)
        return [ended[job.key] for job in jobs]

    def _wait_alive(self, modality: str) -> None:
        """Return once the model actor of `modality` answers again (Ray restarts it), or after
        `restart_timeout_s`. An actor dead for good (killed without restart, by an operator or
        another driver's `shutdown(stop_actors=True)`) is looked up again by name: made anew."""
        import ray

        deadline = time.monotonic() + self.restart_timeout_s
        while time.monotonic() < deadline:
            actor = self.actor(modality)
            try:
                ray.get(actor.info.remote(), timeout=max(deadline - time.monotonic(), 0.1))
                return
            except ray.exceptions.ActorDiedError:  # a restarting actor is found again by its name
                with self._store_lock:
                    if self._actors.get(modality) is actor:
                        del self._actors[modality]
                time.sleep(0.2)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                time.sleep(0.2)

    def _board(self) -> Any:
        with self._store_lock:
            if self._progress is None:
                import ray

                self._progress = ray.remote(ProgressBoard).options(num_cpus=0).remote()
            return self._progress

    def _await(self, ref: Any, lease: Lease, force_cancel: bool, board: Any = None) -> Any:
        """The result of `ref`, renewing the job's lease (with the training's progress, from
        `board`) meanwhile; on cancellation, stop it."""
        import ray

        while True:
            try:  # one call when the result is ready (ray.wait then ray.get costs a round trip more)
                return ray.get(ref, timeout=self.poll_s)
            except ray.exceptions.GetTimeoutError:
                pass
            if board is not None:
                lease.steps = ray.get(board.take.remote(lease.job.key))
            if lease.check():  # cancelled while it ran: stop the work and store nothing
                ray.cancel(ref, force=force_cancel)  # force kills a training task's process
                raise JobCancelled

    def _run(self, job: JobRecord, prepared: Work | Exception | None = None) -> JobRecord:
        if prepared is None:  # a job run on its own (`wait`)
            self._warm([job])
        return run_claimed(self.model, job, self.worker, self.lease_s, self._work, self.backoff_s, self._store_lock,
                           prepared, heartbeat_s=self.heartbeat_s, checkpoint_every=self.checkpoint_every)

    def run_pending(self, limit: int | None = None) -> list[JobRecord]:
        """Claim and run queued jobs with up to `concurrency` in flight, until none is left.

        Claimed jobs are prepared `prepare_batch` at a time (one encoder call for their
        instructions) and each group is sent off as soon as it is ready, as one burst: the model
        actor batches it at once, and works on it while this process prepares the next group.
        """
        ran: list[JobRecord] = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            while limit is None or len(ran) < limit:
                want = self.concurrency if limit is None else min(self.concurrency, limit - len(ran))
                claimed = self.model.store.jobs.claim_jobs(self.worker, self.lease_s, want)
                if not claimed:
                    return ran
                self._warm(claimed)
                running: list[Future[JobRecord] | Future[list[JobRecord]]] = []
                for start in range(0, len(claimed), self.prepare_batch):
                    group = claimed[start : start + self.prepare_batch]
                    with self._holding(group):  # preparing may load encoders: keep the claims alive
                        prepared = prepare_many(self.model, group)
                    self._mark_burst(group, prepared)
                    alone = [(job, work) for job, work in zip(group, prepared) if isinstance(work, _ALONE)]
                    running += [pool.submit(self._run, job, work) for job, work in alone]
                    rest = [(job, work) for job, work in zip(group, prepared) if not isinstance(work, _ALONE)]
                    if rest:
                        running.append(pool.submit(self._run_group, *map(list, zip(*rest))))
                for future in running:
                    outcome = future.result()
                    ran += outcome if isinstance(outcome, list) else [outcome]
        return ran

    def _warm(self, jobs: list[JobRecord]) -> None:
        """Make sure the model actors of these generation jobs exist before the jobs are prepared:
        an actor made now loads its model on the cluster while this process reads the jobs' inputs
        (the first jobs after a start wait for one load, not for a load after their preparation).
        A job whose actor cannot be made finds out in its own run."""
        for job in jobs:
            try:
                spec = parse_spec(job)
                if isinstance(spec, GenerateSpec):
                    for modality in spec.modalities:
                        self.actor(modality)
            except Exception:  # noqa: BLE001  (the job's own run records it)
                continue

    @contextmanager
    def _holding(self, jobs: list[JobRecord]) -> Iterator[None]:
        """Heartbeats for claimed jobs whose own run has not started yet."""
        with ExitStack() as heartbeats:
            for job in jobs:
                heartbeats.enter_context(Lease(self.model.store, job, self.worker, self.lease_s,
                                               _renewed=time.monotonic(), heartbeat_s=self.heartbeat_s).beating())
            yield

    def _mark_burst(self, jobs: list[JobRecord], prepared: list[Any]) -> None:
        """Tag the generation jobs of one group with their burst: (id, how many requests go to
        that actor; a best-of-N job sends one per candidate)."""
        by_modality: dict[str, list[tuple[str, int]]] = {}
        for job, work in zip(jobs, prepared):
            if isinstance(work, PreparedGeneration):
                by_modality.setdefault(work.request.context.modality, []).append((job.key, len(work.requests)))
        for modality, sent in by_modality.items():
            keys = [key for key, _ in sent]
            burst = (f"{self.worker}-{keys[0]}-{modality}", sum(count for _, count in sent))
            self._bursts.update(dict.fromkeys(keys, burst))

    def shutdown(self, *, stop_actors: bool = False) -> None:
        """Let go of the cluster. The model actors are shared with other drivers, so they stay
        up (detached, their models loaded) unless `stop_actors`; this driver's training-progress
        board stops; a local cluster this executor started stops with everything on it."""
        import ray

        for actor in [*(self._actors.values() if stop_actors else []), *([self._progress] if self._progress is not None else [])]:
            ray.kill(actor)
        self._actors.clear()
        self._progress = None
        if self.cluster.started_here:
            self.cluster.shutdown()


__all__ = ["ACTOR_NAMESPACE", "ModelWorker", "ProgressBoard", "RayExecutor", "actor_name", "ray_location"]
