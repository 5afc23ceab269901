"""Jobs: what a caller asks the orchestrator to do, and the record the store keeps of it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from unipgen.schema.context import Modality
from unipgen.schema.generation import GenerationOptions

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
#: Ways to train a personal adapter: a LoRA of the text model on the user's documents, a
#: DreamBooth LoRA or a textual inversion of a subject, DPO on the user's judged outputs.
TrainingMethod = Literal["text-lora", "lora", "textual-inversion", "dpo"]
TRAINING_METHODS: tuple[str, ...] = get_args(TrainingMethod)
#: Statuses a job does not leave.
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerateSpec(_Frozen):
    """Generate personalized outputs of `modality` for the job's user."""

    kind: Literal["generate"] = "generate"
    modality: Modality
    instruction: str = Field(min_length=1)
    options: GenerationOptions = Field(default_factory=GenerationOptions)


class TrainSpec(_Frozen):
    """Train the job's user a personal adapter (methods: `TrainingMethod`)."""

    kind: Literal["train"] = "train"
    method: TrainingMethod
    subject: str | None = None
    steps: int = Field(default=20, ge=1, le=10_000)
    seed: int = 0


class FitSpec(_Frozen):
    """Fit the tenant's behavior space from all its events (a job of the tenant, with no user).

    `config`: fields of `unipgen.core.behavior_space.FitConfig` to change from the tenant's
    current fit's (or the defaults); `reason`: why it was queued (on demand, a forget, the refit
    policy)."""

    kind: Literal["fit"] = "fit"
    config: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = Field(default=None, max_length=500)


JobSpec = Annotated[GenerateSpec | TrainSpec | FitSpec, Field(discriminator="kind")]


class JobRecord(BaseModel):
    """A job as the store keeps it. `result` lists the artifacts it made; `error` has a stable
    `code` and a `message`. `attempts` counts starts, retries included."""

    model_config = ConfigDict(frozen=True)

    key: str
    tenant: str
    user: str | None = Field(description="The user the job works for; None for a job of the whole tenant (a fit).")
    kind: str
    spec: dict[str, Any]
    status: JobStatus
    progress: float
    attempts: int
    max_attempts: int
    cancel_requested: bool
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    worker: str | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    run_after: datetime

    @property
    def done(self) -> bool:
        return self.status in TERMINAL
