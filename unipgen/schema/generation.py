"""What crosses the boundary of a modality backend: a request in, outputs back.

A backend receives the `UserContext` and `PersonalizationPlan` core built, plus generation
options; it returns bytes with a media type and metadata. It never opens the database: the
files it needs (subject photos, adapters) come through a `BlobFetcher` by sha256, and what it
returns is stored as an artifact, with lineage, by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unipgen.schema.context import PersonalizationPlan, UserContext
from unipgen.schema.rules import FiniteFloat

#: sha256 → bytes of a stored blob (subject reference images, adapter files).
BlobFetcher = Callable[[str], bytes]

#: The most candidates one request may generate (`best_of` x `num_outputs`).
MAX_CANDIDATES = 32
#: The most answers a scored request may rank (`labels`, or the values of `scale`).
MAX_ANSWERS = 64
#: The longest label (characters).
MAX_LABEL_CHARS = 100


class GenerationOptions(BaseModel):
    """Knobs shared by backends; each backend reads the ones that apply to it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    num_outputs: int = Field(default=1, ge=1, le=16)
    max_new_tokens: int = Field(default=128, ge=1, le=4096, description="Text: length of the answer.")
    steps: int | None = Field(default=None, ge=1, le=500, description="Diffusion steps; None: the profile's.")
    guidance_scale: FiniteFloat | None = Field(default=None, ge=0, le=50)
    width: int | None = Field(default=None, ge=16, le=4096)
    height: int | None = Field(default=None, ge=16, le=4096)
    ip_adapter_scale: FiniteFloat = Field(default=0.6, ge=0, le=2)
    melody: str | None = Field(default=None, max_length=200, description=(
        "Music: key of one of the user's voice recordings (a hummed or played tune) whose melody the "
        "music follows; needs a melody-conditioned audio backend."))
    best_of: int = Field(default=1, ge=1, le=16, description=(
        "Best-of-N by the user model: generate best_of x num_outputs candidates (seeds seed, seed+1, ...), "
        "score each against the user's preference in the space that fits the modality, and keep the "
        "num_outputs best (docs/generation.md, 'Best-of-N by the user model')."))
    best_of_keep: Literal["best", "all"] = Field(default="best", description=(
        "With best_of > 1: 'best' keeps the num_outputs highest-scoring candidates; 'all' keeps every "
        "candidate, best first. Each kept output's meta['best_of'] has its score, rank and the others' scores."))

    labels: tuple[str, ...] | None = Field(default=None, description=(
        "Text: the answer is one of these labels (2 to 64, distinct), ranked by the model's likelihood and the "
        "user's own labels instead of sampled (docs/generation.md, 'Answers that are labels')."))
    scale: tuple[int, int] | None = Field(default=None, description=(
        "Text: the answer is a whole-number rating from scale[0] to scale[1] (e.g. [1, 5]), scored as labels are "
        "and chosen to minimise the expected absolute error."))

    @model_validator(mode="after")
    def _bounded_candidates(self) -> GenerationOptions:
        if self.best_of * self.num_outputs > MAX_CANDIDATES:
            raise ValueError(f"best_of x num_outputs is {self.best_of} x {self.num_outputs} = "
                             f"{self.best_of * self.num_outputs} candidates; at most {MAX_CANDIDATES}")
        return self

    @model_validator(mode="after")
    def _one_answer_set(self) -> GenerationOptions:
        if self.labels is not None and self.scale is not None:
            raise ValueError("give labels or scale, not both")
        if self.labels is not None:
            _check_labels(self.labels)
        if self.scale is not None:
            low, high = self.scale
            if not low < high or high - low + 1 > MAX_ANSWERS:
                raise ValueError(f"scale must be [low, high] with low < high and at most {MAX_ANSWERS} values, "
                                 f"got {list(self.scale)}")
        if self.scored and (self.num_outputs > 1 or self.best_of > 1):
            raise ValueError("a labels or scale request has one answer: num_outputs and best_of must be 1")
        return self

    @property
    def scored(self) -> bool:
        """Whether the answer is chosen among `answers()` by score rather than sampled."""
        return self.labels is not None or self.scale is not None

    def answers(self) -> list[str]:
        """The allowed answers of a scored request, in order (a scale's values as text); [] otherwise."""
        if self.scale is not None:
            return [str(value) for value in range(self.scale[0], self.scale[1] + 1)]
        return list(self.labels or ())


def _check_labels(labels: tuple[str, ...]) -> None:
    """Labels: 2 to MAX_ANSWERS of them, none blank or too long, distinct whatever their case and spacing."""
    if not 2 <= len(labels) <= MAX_ANSWERS:
        raise ValueError(f"labels needs 2 to {MAX_ANSWERS} labels, got {len(labels)}")
    seen: dict[str, str] = {}
    for label in labels:
        key = " ".join(label.lower().split())
        if not key or len(label) > MAX_LABEL_CHARS or label != label.strip():
            raise ValueError(f"label {label!r} must be 1 to {MAX_LABEL_CHARS} characters, not blank, "
                             "with no space at either end")
        if key in seen:
            raise ValueError(f"labels {seen[key]!r} and {label!r} are the same label")
        seen[key] = label


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    context: UserContext
    plan: PersonalizationPlan
    options: GenerationOptions = Field(default_factory=GenerationOptions)


class GeneratedOutput(BaseModel):
    """One output: its bytes, media type, and how it was made (model, method, prompt, seed...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: bytes
    media_type: str
    meta: dict[str, Any] = Field(default_factory=dict)
