"""Types crossing the memory layer's boundary: what callers write and what they get back."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from unipgen.schema.rules import FiniteFloat, JsonMeta, PublicId

#: Behavior event types and the sign they carry for preference (used by the user model).
EVENT_TYPES: dict[str, int] = {
    "view": 1,
    "click": 1,
    "like": 1,
    "rate": 1,
    "purchase": 1,
    "skip": -1,
    "dislike": -1,
}

#: The event type names, checked by pydantic's core (fast: bulk ingest validates every row).
#: Spelled out so type checkers see them; tests/schema checks they are EVENT_TYPES' keys.
EventType = Literal["view", "click", "like", "rate", "purchase", "skip", "dislike"]

#: Judgements of generated outputs: on one output (up/down), or a choice between two.
FeedbackType = Literal["thumbs_up", "thumbs_down", "pairwise"]

#: A behavior fit's state: in use, in use but holding forgotten events, or superseded by a newer one.
FitStatus = Literal["current", "stale", "replaced"]

#: Kinds of memory item that can be forgotten one by one and that lineage can point to.
ItemKind = Literal["item", "document", "face", "subject", "voice", "artifact"]

#: A profile attribute value: the JSON scalars, or a list/dict for structured attributes.
ProfileValue = bool | int | float | str | list[Any] | dict[str, Any]


def _utc(value: datetime) -> datetime:
    # Normalise to the standard library's UTC: pydantic's own tzinfo makes every later
    # datetime call (replace, utcoffset) go through a slow foreign call.
    if value.tzinfo is timezone.utc:
        return value
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # year 1 at +23:59 has no UTC time: invalid input, not a crash
        raise ValueError("is out of range once converted to UTC") from None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is blank")
    return value


#: An aware time, stored in UTC; a text with something besides white space (pydantic field types).
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]
NonBlank = Annotated[str, AfterValidator(_not_blank)]


class EventIn(BaseModel):
    """One behavior event to ingest: `user` did `type` on catalog item `item` at `ts`.

    `ts` accepts an aware ISO-8601 string, an aware datetime or Unix seconds; it is stored in UTC.
    `value` is the rating for `rate` events, optional otherwise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [
        {"user": "alice", "type": "rate", "item": "m1", "value": 4.5, "ts": "2024-05-01T20:00:00Z"}]})

    user: PublicId
    type: EventType
    item: PublicId
    ts: AwareDatetime
    value: FiniteFloat | None = None
    meta: JsonMeta = None

    @field_validator("ts", mode="before")
    @classmethod
    def _epoch_seconds(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value, tz=timezone.utc)
            except (OverflowError, OSError, ValueError) as exc:
                raise ValueError(f"{value!r} is not a valid Unix time: {exc}") from None
        return value

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return _utc(value)


def _finite_or_none(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


class EventRecord(BaseModel):
    """A stored event, as listed: what `EventIn` wrote, and its `id`, which addresses it for
    deletion (``DELETE /v1/users/{user}/events/{id}``). Events have no public key of their own:
    the same user may do the same thing to the same item at the same time twice.

    An output, not validated: rows stored before the data rules (an infinite rating, an id with
    a '/') must still be listed to be deleted; a non-finite value reads as null (JSON has no
    other form) and `unipgen check` names the row.
    """

    id: int
    user: str
    type: str
    item: str
    ts: datetime
    value: Annotated[float | None, PlainSerializer(_finite_or_none)] = None
    meta: dict[str, Any] | None = None


class UserSummary(BaseModel):
    """What the store holds about one user: counts per kind and the current profile."""

    tenant: str
    user: str
    created_at: datetime
    profile: dict[str, Any]
    counts: dict[str, int]
    first_event_at: datetime | None = None
    last_event_at: datetime | None = None
    top_items: list[str] = Field(default_factory=list, description="Most interacted-with item texts.")
    training_consent_at: datetime | None = Field(
        default=None, description="When the user consented to adapters trained on their faces and subjects "
                                  "(None: no consent).")


class TrainingConsent(BaseModel):
    """Whether a user consents to adapters being trained on their faces and subjects, and since
    when. Apart from the consent to storing biometric data, which each face or voice upload gives."""

    user: str
    granted: bool
    since: datetime | None = None


class FitRecord(BaseModel):
    """One fit of a tenant's behavior space (see docs/usermodel.md).

    `status`: ``current`` (in use), ``stale`` (in use, but derived from forgotten events until a
    refit) or ``replaced`` (history: settings and figures only). `stats`: users, items and
    events it read, items with events, seconds. `events_since`: events written after it (None
    in a listing of history)."""

    generation: int
    space: str
    status: FitStatus
    config: dict[str, Any]
    stats: dict[str, Any]
    created_at: datetime
    stale_reason: str | None = None
    stale_since: datetime | None = None
    events_since: int | None = None


class ForgetReport(BaseModel):
    """What a forget removed, and the residue a full scan found afterwards (empty when clean)."""

    tenant: str
    target: str
    deleted: dict[str, int]
    residue: list[str]


class ItemIn(BaseModel):
    """A catalog entry to add: public id, the text that describes it, optional image and metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: PublicId
    text: str
    image: bytes | None = None
    meta: JsonMeta = None


class DocumentIn(BaseModel):
    """A text the user wrote: public id, kind (review, post, email...), time (default: now)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: PublicId
    text: NonBlank = Field(min_length=1)
    kind: str = Field(default="note", min_length=1, max_length=64)
    ts: UtcTime | None = None
    meta: JsonMeta = None



class FeedbackIn(BaseModel):
    """A user's judgement of generated outputs, named by artifact key.

    ``thumbs_up``/``thumbs_down`` rate `output`; ``pairwise`` says the user chose `output` over
    `rejected` (two outputs of the same instruction). `ts` defaults to now. Preference training
    (DPO) learns from these.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: PublicId
    type: FeedbackType
    output: PublicId = Field(description="The output rated, or the one chosen.")
    rejected: PublicId | None = Field(default=None, description="Pairwise only: the output not chosen.")
    ts: AwareDatetime | None = None
    meta: JsonMeta = None

    @model_validator(mode="after")
    def _pair(self) -> FeedbackIn:
        if self.type == "pairwise" and self.rejected is None:
            raise ValueError("a pairwise choice needs `rejected`, the output not chosen")
        if self.type != "pairwise" and self.rejected is not None:
            raise ValueError(f"{self.type} rates one output: `rejected` is for pairwise choices")
        if self.rejected == self.output:
            raise ValueError("`output` and `rejected` must be different outputs")
        return self

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)
