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

    @model_validator(mode="after")
    def _bounded_candidates(self) -> GenerationOptions:
        if self.best_of * self.num_outputs > MAX_CANDIDATES:
            raise ValueError(f"best_of x num_outputs is {self.best_of} x {self.num_outputs} = "
                             f"{self.best_of * self.num_outputs} candidates; at most {MAX_CANDIDATES}")
        return self


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
