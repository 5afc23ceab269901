"""Jobs: what a caller asks the orchestrator to do, and the record the store keeps of it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from unipgen.schema.context import MODALITIES, Modality
from unipgen.schema.generation import GenerationOptions
from unipgen.settings import ProtectMethod

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
#: Ways to train a personal adapter: a LoRA of the text model on the user's documents, a
#: DreamBooth LoRA or a textual inversion of a subject, DPO on the user's judged outputs.
TrainingMethod = Literal["text-lora", "lora", "textual-inversion", "dpo"]
TRAINING_METHODS: tuple[str, ...] = get_args(TrainingMethod)
#: Statuses a job does not leave.
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def requested_modalities(value: object) -> object:
    """One modality stays a string; several (a list, or a comma-separated string such as
    ``"text,image"``) become a tuple, each named once. A list of one is that one's string, so
    a single-modality request is stored exactly as before."""
    if isinstance(value, str) and "," in value:
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, list | tuple):
        return value
    if not value:
        raise ValueError("no modality asked")
    unknown = [m for m in value if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modality {unknown[0]!r} in {list(value)}; expected some of {', '.join(MODALITIES)}")
    twice = sorted({str(m) for m in value if list(value).count(m) > 1})
    if twice:
        raise ValueError(f"modality {', '.join(map(repr, twice))} asked more than once")
    return value[0] if len(value) == 1 else tuple(value)


#: What a generation asks for: one modality, or several (a multi-modal post, one group).
ModalityRequest = Annotated[Modality | tuple[Modality, ...], BeforeValidator(requested_modalities)]


class GenerateSpec(_Frozen):
    """Generate personalized outputs of `modality` for the job's user; several modalities make
    one post (one plan, one seed, outputs stored as one group: docs/generation.md)."""

    kind: Literal["generate"] = "generate"
    modality: ModalityRequest
    instruction: str = Field(min_length=1)
    options: GenerationOptions = Field(default_factory=GenerationOptions)

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """Every modality asked, in the order asked."""
        return self.modality if isinstance(self.modality, tuple) else (self.modality,)

    @property
    def is_post(self) -> bool:
        """Whether several modalities were asked (a multi-modal post)."""
        return isinstance(self.modality, tuple)

    @model_validator(mode="after")
    def _post_options(self) -> GenerateSpec:
        if self.is_post and self.options.best_of > 1:
            raise ValueError("best_of applies to one modality at a time, not to a multi-modal post")
        return self


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


class ProtectSpec(_Frozen):
    """Protect the photos of one of the job's user's subjects (or one face photo) against
    fine-tuning: an Anti-DreamBooth-style perturbation found against the profile's image model
    (`method`: `misalign` or the paper's `aspl`), stored as new images beside the originals
    (`unipgen.orchestrator.protection`).

    The budget: `epsilon` and `step_size` in 8-bit levels, `rounds` of the search, each with
    `pgd_steps` perturbation steps and `surrogate_steps` surrogate fine-tuning steps. Callers
    fill them from the settings (`UNIPGEN_PROTECT_*`); the defaults here are the same."""

    kind: Literal["protect"] = "protect"
    subject: str | None = None
    face: str | None = None
    epsilon: float = Field(default=4.0, gt=0, le=32)
    step_size: float = Field(default=1.0, gt=0, le=32)
    rounds: int = Field(default=10, ge=1, le=1000)
    pgd_steps: int = Field(default=6, ge=1, le=100)
    surrogate_steps: int = Field(default=3, ge=0, le=100)
    method: ProtectMethod = "misalign"
    seed: int = 0

    @model_validator(mode="after")
    def _one_target(self) -> ProtectSpec:
        if (self.subject is None) == (self.face is None):
            raise ValueError("name exactly one of subject or face to protect")
        if self.step_size > self.epsilon:
            raise ValueError(f"step_size ({self.step_size}) must not exceed epsilon ({self.epsilon})")
        return self

    @property
    def target(self) -> tuple[str, str]:
        """(kind, key) of what is protected: ("subject", key) or ("face", key)."""
        return ("subject", self.subject) if self.subject is not None else ("face", self.face or "")


AnyJobSpec = GenerateSpec | TrainSpec | FitSpec | ProtectSpec
JobSpec = Annotated[AnyJobSpec, Field(discriminator="kind")]


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
