"""Bodies of the HTTP service's requests and responses (`unipgen.api`), shared with the SDK
(`unipgen.client`), which imports them without FastAPI.

Inputs are `*Create` models (extra fields refused), outputs `*Public`: what leaves the service
is what these models hold, never an ORM row. Memory rows reuse `unipgen.schema.memory`
(`EventIn`, `ItemIn`, `DocumentIn`, `FeedbackIn`); contexts and jobs reuse their own schemas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from unipgen.schema.context import Modality
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import ModalityRequest, TrainingMethod
from unipgen.schema.memory import DocumentIn, EventIn, ItemIn
from unipgen.schema.messages import MessageIn
from unipgen.schema.rules import PublicId, check_json


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error the service returns: a stable `code` (docs/errors.md) and a message naming
    the problem; `errors` lists the fields at fault for a malformed body."""

    code: str
    message: str
    errors: list[dict[str, Any]] | None = None


class TenantCreate(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"key": "acme"}]})

    key: PublicId


class TenantPublic(BaseModel):
    key: str


class ApiKeyCreate(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "web front end"}]})

    name: str = Field(min_length=1, max_length=255, description="What the key is for, e.g. 'web front end'.")


class ApiKeyPublic(BaseModel):
    """An API key without its secret. `prefix` is its public id (the part after ``upg_``)."""

    tenant: str
    prefix: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The key itself. It is shown once: the service keeps only its hash.")


class UserCreate(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"key": "alice"}]})

    key: PublicId


class UserPublic(BaseModel):
    tenant: str
    key: str


class ProfileValue(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"value": "Lyon"}]})

    value: bool | int | float | str | list[Any] | dict[str, Any]

    @field_validator("value")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return check_json(value)


class EventsCreate(_In):
    """Several behavior events in one all-or-nothing write."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [
        {"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": "2024-05-01T20:00:00Z"},
        {"user": "alice", "type": "click", "item": "m2", "ts": 1714593600}], "create_users": False}]})

    events: list[EventIn] = Field(min_length=1, max_length=10_000)
    create_users: bool = Field(default=False, description="Create users named by the events that do not exist.")


class ItemsCreate(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"items": [{"key": "m1", "text": "Alien (1979) Horror, Sci-Fi", "meta": {"year": 1979}}], "exist_ok": False}]})

    items: list[ItemIn] = Field(min_length=1, max_length=10_000)
    exist_ok: bool = False


class DocumentsCreate(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"documents": [{"key": "review-1", "text": "Slow, tense and beautiful: my kind of film.", "kind": "review"}]}]})

    documents: list[DocumentIn] = Field(min_length=1, max_length=1_000)


class MessagesCreate(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"messages": [{"key": "D1:1", "speaker": "Caroline", "text": "I went to a support group yesterday.",
                       "session": "1", "ts": "2023-05-08T13:56:00Z"}]}]})

    messages: list[MessageIn] = Field(min_length=1, max_length=5_000)


class ChatRequest(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "What should I watch tonight?",
                                                               "session": "evening"}]})

    text: str = Field(min_length=1, max_length=10_000, description="What the user says.")
    session: str = Field(default="chat", min_length=1, max_length=64, description="The conversation it continues.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class JudgementRequest(_In):
    """Two candidates for the user simulator: catalog item keys, or the user's text output keys."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"first": "m1", "second": "m2"}]})

    first: PublicId
    second: PublicId


class PreferencesRequest(_In):
    """Pairs of the user's text outputs to judge into synthetic DPO preferences (none given: every
    pair of outputs to the same prompt that no feedback judges yet)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"pairs": [["out-1", "out-2"]]}, {}]})

    pairs: list[tuple[PublicId, PublicId]] | None = Field(default=None, max_length=1_000)


class Count(BaseModel):
    """How many rows a write added."""

    count: int


class ContextRequest(_In):
    model_config = ConfigDict(json_schema_extra={"examples": [{"modality": "image", "instruction": "a poster of my favourite kind of film"}]})

    modality: Modality
    instruction: str = Field(min_length=1, max_length=10_000)


class GenerationCreate(_In):
    """A generation to run as a job; `job_id` makes the request idempotent (same id, same job)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"modality": "text", "instruction": "Recommend me a film for tonight", "options": {"max_new_tokens": 64, "seed": 7}, "job_id": "evening-recommendation-42"},
        {"modality": "text", "instruction": "How would I rate Heat (1995)?", "options": {"scale": [1, 5]}}]})

    modality: ModalityRequest = Field(description=(
        "One modality, or several (a list, or comma-separated: \"text,image\") for a multi-modal post."))
    instruction: str = Field(min_length=1, max_length=10_000)
    options: GenerationOptions = Field(default_factory=GenerationOptions)
    job_id: PublicId | None = None


class TrainingCreate(_In):
    """A personal adapter to train as a job; an unknown method is refused here (422), not when the job runs."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"method": "lora", "subject": "rex", "steps": 200, "seed": 0}]})

    method: TrainingMethod
    subject: PublicId | None = None
    steps: int = Field(default=20, ge=1, le=10_000)
    seed: int = 0
    job_id: PublicId | None = None


class RecommendationRequest(_In):
    """What to recommend: `k` items, `diversity` (0 best first; up to 1 less of the same, by maximal
    marginal relevance), `include_seen` (also items the user acted on), `kind` (only items whose
    meta has this kind)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"k": 10, "diversity": 0.3}]})

    k: int = Field(default=10, ge=1, le=1000)
    diversity: float = Field(default=0.0, ge=0.0, le=1.0)
    include_seen: bool = False
    kind: str | None = Field(default=None, min_length=1, max_length=255)


class FitCreate(_In):
    """A fit of the tenant's behavior space to run as a job: `config` changes fields of the
    current fit's settings (docs/usermodel.md); `job_id` makes the request idempotent."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"config": {"dim": 128}, "job_id": "nightly-fit-2026-12-03"}]})

    config: dict[str, Any] = Field(default_factory=dict)
    job_id: PublicId | None = None


class ArtifactPublic(BaseModel):
    """A stored artifact: a generated output or a trained adapter, with what it came from."""

    key: str
    kind: str
    media_type: str
    sha256: str | None
    meta: dict[str, Any] | None
    derived_from: list[tuple[str, str]]


class SubjectPublic(BaseModel):
    key: str
    name: str
    class_noun: str
    images: int
    protection_job: str | None = Field(default=None, description="Uploaded with protect=true: the job that "
                                                                  "protects its photos from fine-tuning.")


class MediaPublic(BaseModel):
    """An uploaded face photo or voice sample (the bytes are fetched separately, and audited)."""

    key: str
    media_type: str


class FacePublic(MediaPublic):
    """An uploaded face photo."""

    protection_job: str | None = Field(default=None, description="Uploaded with protect=true: the job that "
                                                                  "protects it from fine-tuning.")


class ProtectionCreate(_In):
    """Protect one subject's photos, or one face photo, from fine-tuning, as a job. The budget
    (epsilon, rounds...) is the service's settings (`UNIPGEN_PROTECT_*`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"subject": "rex"}]})

    subject: PublicId | None = None
    face: PublicId | None = None
    seed: int = 0
    job_id: PublicId | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ProtectionCreate:
        if (self.subject is None) == (self.face is None):
            raise ValueError("name exactly one of subject or face to protect")
        return self


class TrainingConsentUpdate(_In):
    """The user gives (true) or withdraws (false) their consent to adapters trained on their
    faces and subjects."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"granted": True}]})

    granted: bool


class AuditPublic(BaseModel):
    ts: datetime
    actor: str
    action: str
    user: str | None = None
    object_kind: str | None = None
    object_key: str | None = None
    detail: dict[str, Any] | None = None


class Health(BaseModel):
    status: str
    version: str
    executor: str


__all__ = [
    "ApiKeyCreate", "ApiKeyCreated", "ApiKeyPublic", "ArtifactPublic", "AuditPublic", "ContextRequest", "Count",
    "DocumentsCreate", "ErrorBody", "EventsCreate", "FacePublic", "GenerationCreate", "Health", "ItemsCreate", "MediaPublic",
    "ProfileValue", "ProtectionCreate", "SubjectPublic", "TenantCreate", "TenantPublic", "TrainingConsentUpdate",
    "TrainingCreate", "UserCreate", "UserPublic",
]
