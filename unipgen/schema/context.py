"""`UserContext`: everything a generator gets to know about one user for one request.

`unipgen.core` builds it from the memory store; any backend consumes it, and never opens the
database itself. It is plain JSON: it can be logged, cached, sent to a worker, and explained.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: "audio" is music; "speech" is text read aloud (in the user's voice when they have recordings).
Modality = Literal["text", "image", "video", "audio", "speech", "3d"]
#: Every modality, in the order docs and the CLI list them.
MODALITIES: tuple[str, ...] = ("text", "image", "video", "audio", "speech", "3d")

#: How a request is personalized (see docs/usermodel.md for when each is chosen).
Method = Literal[
    "prompt_only",         # preference keywords folded into the prompt
    "rag_prompt",          # retrieved evidence in the prompt
    "lora",                # a trained per-user or per-subject adapter
    "textual_inversion",   # a learned token for a subject
    "ip_adapter",          # tuning-free image conditioning on reference images
    "speaker_embedding",   # speech in the user's voice
    "image_to_3d",         # 3D from a subject's reference image
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Evidence(_Frozen):
    """A memory item retrieved for this request, with how it ranked."""

    kind: Literal["document", "item"]
    key: str
    text: str
    score: float = Field(description="Fused score (reciprocal rank fusion, times recency weight).")
    bm25_rank: int | None = Field(default=None, description="1-based rank by BM25; None if unmatched.")
    dense_rank: int | None = Field(default=None, description="1-based rank by embedding similarity.")
    ts: datetime | None = None


class Keyword(_Frozen):
    """A word or item near a preference vector, with its cosine similarity to it."""

    text: str
    score: float
    source: Literal["vocabulary", "item"]


class Preferences(_Frozen):
    """The user's taste in one embedding space, from behavior events."""

    space: str
    events: int = Field(description="Behavior events the vectors were built from.")
    long_term: list[float] | None = None
    short_term: list[float] | None = None
    negative: list[float] | None = None
    drift: float = Field(description="1 - cos(long, short): 0 = stable taste, up to 2 = reversed.")
    positive_keywords: list[Keyword] = Field(default_factory=list)
    negative_keywords: list[Keyword] = Field(default_factory=list)
    top_items: list[Keyword] = Field(default_factory=list)


class Reason(_Frozen):
    """One of the user's events that weighs in a recommendation: its share of the item's score.

    `contribution` is the event's term of the score (its decayed weight times the similarity of
    its item to the recommended one): the terms of all the user's events sum to the score."""

    item: str
    text: str
    type: str
    value: float | None = None
    ts: datetime
    contribution: float


class Recommendation(_Frozen):
    """A catalog item recommended to the user, its score in `space`, and the events behind it."""

    item: str
    text: str
    score: float
    reasons: list[Reason] = Field(default_factory=list)


class Recommendations(_Frozen):
    """A ranked list of items for one user, and how it was made.

    `space`: ``behavior`` (the tenant's fitted behavior space, fit `fit_generation`; `stale` when
    that fit still carries forgotten events), ``text`` (no fit yet: the items' text vectors), or
    ``popularity`` (the user has no usable events: the fit's most chosen items). `seen_excluded`:
    items the user already acted on were left out."""

    user: str
    space: Literal["behavior", "text", "popularity"]
    fit_generation: int | None = None
    stale: bool = False
    diversity: float = 0.0
    seen_excluded: bool = True
    kind: str | None = None
    items: list[Recommendation] = Field(default_factory=list)


class SubjectAsset(_Frozen):
    """A personal subject to condition on: its reference images (blob sha256s) and adapters."""

    key: str
    name: str
    class_noun: str
    image_shas: list[str]
    adapters: list[AdapterRef] = Field(default_factory=list)


class AdapterRef(_Frozen):
    """A trained adapter artifact (LoRA, textual inversion) the plan may load by content hash."""

    key: str
    method: str
    blob_sha: str | None
    meta: dict[str, Any] | None = None


class Conditioning(_Frozen):
    subjects: list[SubjectAsset] = Field(default_factory=list)
    adapters: list[AdapterRef] = Field(default_factory=list, description="User-level adapters.")
    face_embeddings: list[list[float]] = Field(default_factory=list)
    voice_embedding: list[float] | None = Field(default=None, description="Mean of the user's voice samples.")
    voice_samples: dict[str, str] = Field(
        default_factory=dict, description="Key → blob sha256 of each of the user's voice recordings (raw audio).")
    melody: str | None = Field(default=None, description="Music: blob sha256 of the recording whose melody "
                                                          "conditions the output (`GenerationOptions.melody`).")


class PersonalizationPlan(_Frozen):
    """Which method personalizes this request, with what, and why (explainable as JSON)."""

    modality: Modality
    method: Method
    prompt: str
    negative_prompt: str = ""
    reasons: list[str]
    subject: str | None = None
    adapters: list[str] = Field(default_factory=list, description="Adapter artifact keys to load.")
    evidence: list[str] = Field(default_factory=list, description="Evidence keys in the prompt.")
    recommended: list[str] = Field(default_factory=list, description="Keys of unseen recommended items in the "
                                                                     "prompt (a text request asking for one).")
    budget_tokens: int
    used_tokens: int


class UserContext(_Frozen):
    """One user's context for one request: what a generator may use, and where it came from."""

    tenant: str
    user: str
    modality: Modality
    instruction: str
    profile: dict[str, Any]
    evidence: list[Evidence] = Field(default_factory=list)
    preferences: list[Preferences] = Field(default_factory=list)
    conditioning: Conditioning = Field(default_factory=Conditioning)
    recommendations: Recommendations | None = Field(default=None, description=(
        "Items to suggest (the same call as `unipgen recommend`): in a full context, and in a text request "
        "that asks for a recommendation."))
    provenance: list[str] = Field(
        default_factory=list, description="Every memory item used, as 'kind:key' (lineage of outputs)."
    )
    built_at: datetime


SubjectAsset.model_rebuild()
