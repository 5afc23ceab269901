"""Run jobs in this process: `InlineExecutor`, the embedded default (the CLI, `unipgen worker`,
the service), and `InlineGenerator`, a generation as one function call for library code (the
demo, the harnesses) that runs the same generation job, so its outputs are made and stored
exactly as a worker's are (`unipgen.orchestrator.jobs.run_claimed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from unipgen.core.behavior_space import FitInputs, run_fit
from unipgen.core.usermodel import UserModel
from unipgen.errors import NotFoundError, error_from
from unipgen.modalities import load_backend
from unipgen.modalities.base import Backend
from unipgen.orchestrator.generation import GeneratedArtifact, PreparedGeneration
from unipgen.orchestrator.jobs import Lease, Produced, QueueExecutor, Work
from unipgen.orchestrator.post import PreparedPost, run_post
from unipgen.orchestrator.protection import ProtectionInputs, run_protection
from unipgen.orchestrator.training import run_training
from unipgen.schema.context import Modality, PersonalizationPlan
from unipgen.schema.generation import GeneratedOutput, GenerationOptions
from unipgen.schema.jobs import GenerateSpec


class InlineExecutor(QueueExecutor):
    """Runs each job's work in this process, one at a time, with each backend loaded once.

    `submit` queues a job (idempotent by key); `wait` runs it here if it is still queued and
    returns its record; `run_pending` works through the queue (what `unipgen worker` does).
    """

    name = "inline"

    def __init__(self, model: UserModel, *, worker: str | None = None, lease_s: float = 30.0,
                 backoff_s: float = 1.0, progress: bool = False, heartbeat_s: float = 5.0,
                 checkpoint_every: int = 10) -> None:
        super().__init__(model, worker=worker, lease_s=lease_s, backoff_s=backoff_s, heartbeat_s=heartbeat_s,
                         checkpoint_every=checkpoint_every)
        self.progress = progress  # training progress bars on stderr
        self._backends: dict[str, Backend] = {}

    def backend(self, modality: Modality) -> Backend:
        """The profile's backend of `modality`, loaded on first use and kept."""
        if modality not in self._backends:
            specs = self.model.profile.backends
            if modality not in specs:
                raise NotFoundError(f"profile {self.model.profile.name!r} has no {modality!r} generator")
            backend = load_backend(specs[modality])
            backend.setup()
            self._backends[modality] = backend
        return self._backends[modality]

    def _work(self, work: Work, lease: Lease) -> Produced:
        if isinstance(work, FitInputs):
            return run_fit(work)
        if isinstance(work, PreparedGeneration):
            return self.generated(work)
        if isinstance(work, PreparedPost):
            return run_post(self.model, work, self.generated, self.caption)
        if isinstance(work, ProtectionInputs):
            return run_protection(work, should_stop=lease)
        return run_training(work, should_stop=lease, progress=self.progress)

    def generated(self, work: PreparedGeneration) -> list[list[GeneratedOutput]]:
        """The outputs of `work`'s requests (one list per request) by its modality's backend."""
        return self.backend(work.request.context.modality).generate(work.requests, self.model.store.blobs.get)


class InlineGenerator:
    """Generates for users with the backends of one profile, loaded once and kept. Each call
    is a generation job run here at once, stored with ``meta["job"]`` like any job's outputs."""

    def __init__(self, model: UserModel, executor: InlineExecutor | None = None) -> None:
        self.model = model
        self.executor = executor or InlineExecutor(model)  # given: share its loaded backends

    def backend(self, modality: Modality) -> Backend:
        return self.executor.backend(modality)

    def generate(self, tenant: str, user: str, modality: Modality, instruction: str,
                 options: GenerationOptions | None = None) -> list[GeneratedArtifact]:
        """Personalized outputs for one request, stored as artifacts of `user`. A failure raises
        the job's error (a crash too, as an ``internal`` `UnipgenError`), without retries."""
        self.backend(modality)  # an unknown modality fails before any work
        spec = GenerateSpec(modality=modality, instruction=instruction, options=options or GenerationOptions())
        result = self._run(tenant, user, spec)
        plan = PersonalizationPlan.model_validate(result["plan"])
        return [self._stored(tenant, key, plan) for key in result["artifacts"]]

    def post(self, tenant: str, user: str, modalities: Sequence[Modality], instruction: str,
             options: GenerationOptions | None = None) -> tuple[dict[str, Any], list[GeneratedArtifact]]:
        """A multi-modal post (`unipgen.orchestrator.post`) as one job run here: its result (group,
        plans, caption, consistency) and its members, each with its modality's plan."""
        for modality in modalities:
            self.backend(modality)
        spec = GenerateSpec(modality=tuple(modalities), instruction=instruction, options=options or GenerationOptions())
        result = self._run(tenant, user, spec)
        plans = {m: PersonalizationPlan.model_validate(plan) for m, plan in result["plans"].items()}
        members = [self.model.store.artifacts.artifact(tenant, key) for key in result["artifacts"]]
        return result, [self._stored(tenant, m.key, plans[(m.meta or {})["modality"]]) for m in members]

    def _run(self, tenant: str, user: str, spec: GenerateSpec) -> dict[str, Any]:
        job = self.executor.wait(tenant, self.executor.submit(tenant, user, spec, max_attempts=1).key)
        if job.status != "succeeded":
            raise error_from(job.error or {"code": "conflict", "message": f"job {job.key} ended {job.status}"})
        assert job.result is not None  # a succeeded job has its result
        return job.result

    def _stored(self, tenant: str, key: str, plan: PersonalizationPlan) -> GeneratedArtifact:
        record = self.model.store.artifacts.artifact(tenant, key)
        path = self.model.store.blobs.local_path(record.blob_sha) if record.blob_sha else None
        return GeneratedArtifact(key, record.media_type, record.blob_sha or "", path, plan)


__all__ = ["InlineExecutor", "InlineGenerator"]
