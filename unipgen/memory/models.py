"""The tables of the user-memory store (SQLAlchemy 2.0 typed models).

Every row a user owns hangs off `users.id` with ``ON DELETE CASCADE``; derived data (embeddings,
artifacts) records what it was derived from (`Embedding.owner_*`, `Lineage`). Files live in the
blob store under their sha256; the `blobs` table lists them, and the rows that use a blob point
to it, so whether a blob is still needed is derived by counting those rows, never kept by hand.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from unipgen.schema.jobs import JobStatus
from unipgen.schema.memory import FeedbackType, FitStatus


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive ones, so we re-attach UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is timezone.utc:
            return value
        if value.tzinfo is None:
            raise ValueError("naive datetime given; unipgen stores aware UTC datetimes only")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


Key = String(255)
Sha256 = String(64)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON(none_as_null=True), str: Text}


class TenantKeyed:
    """The first columns of a row a tenant owns under a public `key`, unique per tenant (a user,
    an item); the row goes when the tenant does. `sort_order` keeps them first, as the migrations
    made them."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), sort_order=-1)
    key: Mapped[str] = mapped_column(Key, sort_order=-1)


class UserKeyed:
    """`TenantKeyed` for a row a user owns under a public `key`, unique per user (a document, a
    face, a subject, a voice sample); the row goes when the user does."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, sort_order=-1)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), sort_order=-1)
    key: Mapped[str] = mapped_column(Key, sort_order=-1)


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(Key, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(TenantKeyed, Base):
    """A user of a tenant. `training_consent_at`: when they consented to adapters being trained on
    their faces and subjects (None: no consent; storing biometric data is a consent of its own,
    per upload)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    training_consent_at: Mapped[datetime | None]


class Blob(Base):
    """A file in the content-addressed blob store, named by its sha256."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(Sha256, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(127))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProfileAttribute(Base):
    """One value of one attribute over a period; the row with `valid_to` NULL is current."""

    __tablename__ = "profile_attributes"
    __table_args__ = (Index("ix_profile_user_name", "user_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(Key)
    value: Mapped[Any] = mapped_column(JSON)
    value_type: Mapped[str] = mapped_column(String(16))
    valid_from: Mapped[datetime]
    valid_to: Mapped[datetime | None]


class Item(TenantKeyed, Base):
    """A catalog entry of the tenant that behavior events point to (a movie, a product)."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)
    text: Mapped[str]
    image_sha: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    meta: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BehaviorEvent(Base):
    __tablename__ = "behavior_events"
    __table_args__ = (
        Index("ix_events_user_ts", "user_id", "ts"),
        Index("ix_events_item", "item_id"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[float | None] = mapped_column(Float)
    ts: Mapped[datetime]
    meta: Mapped[dict[str, Any] | None]


class Document(UserKeyed, Base):
    """Text the user wrote (a review, an email, a post)."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    kind: Mapped[str] = mapped_column(String(64))
    text: Mapped[str]
    ts: Mapped[datetime]
    meta: Mapped[dict[str, Any] | None]


class Face(UserKeyed, Base):
    __tablename__ = "faces"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    blob_sha: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    consent: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Subject(UserKeyed, Base):
    """A personal subject (a pet, a bag) with reference images, for subject-driven generation."""

    __tablename__ = "subjects"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    name: Mapped[str] = mapped_column(Key)
    class_noun: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    images: Mapped[list[SubjectImage]] = relationship(
        order_by="SubjectImage.position", cascade="all, delete-orphan", passive_deletes=True
    )


class SubjectImage(Base):
    __tablename__ = "subject_images"
    __table_args__ = (UniqueConstraint("subject_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    blob_sha: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))


class VoiceSample(UserKeyed, Base):
    __tablename__ = "voice_samples"
    __table_args__ = (UniqueConstraint("user_id", "key"),)
    blob_sha: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    consent: Mapped[bool] = mapped_column(Boolean)
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """Something unipgen derived: a generated output or a trained adapter (`kind`)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("tenant_id", "key"), Index("ix_artifacts_user", "user_id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(Key)
    kind: Mapped[str] = mapped_column(String(32))
    media_type: Mapped[str] = mapped_column(String(127))
    blob_sha: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    meta: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Feedback(Base):
    """A user's judgement of generated outputs: thumbs up or down on one, or a choice of two.

    `artifact_id` is the output rated (or the one chosen); `rejected_id` the other output of a
    pairwise choice. Forgetting either output deletes the judgement with it.
    """

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_user", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[FeedbackType] = mapped_column(String(16))
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), index=True)
    rejected_id: Mapped[int | None] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), index=True)
    ts: Mapped[datetime]
    meta: Mapped[dict[str, Any] | None]


class Job(Base):
    """A generation or training job, kept so that a restart of the service loses none.

    `key` is the public job id (the caller's, for idempotent submission, or a new uuid).
    `status` moves queued → running → succeeded | failed | cancelled; a failed attempt with
    retries left goes back to queued with `run_after` set (backoff). A running job holds a
    lease (`lease_until`) that its worker renews; an expired lease means the worker died, and
    the job is queued again. `cancel_requested` asks a running job's worker to stop.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "key"),
        Index("ix_jobs_status", "status", "run_after"),
        Index("ix_jobs_user", "user_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))  # None: a tenant's job
    key: Mapped[str] = mapped_column(Key)
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    status: Mapped[JobStatus] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    run_after: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Lineage(Base):
    """Edge `derived` ← `source`: the derived artifact was made from the source memory item.

    Kinds are the `ItemKind`s plus ``user`` (derived from the user's whole history). The ends are
    polymorphic, so there is no foreign key; forget follows the edges and deletes them itself.
    """

    __tablename__ = "lineage"
    __table_args__ = (
        UniqueConstraint("derived_kind", "derived_id", "source_kind", "source_id"),
        Index("ix_lineage_source", "source_kind", "source_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    derived_kind: Mapped[str] = mapped_column(String(16))
    derived_id: Mapped[int] = mapped_column(Integer)
    source_kind: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[int] = mapped_column(Integer)


class EmbeddingSpace(Base):
    """One vector space of a tenant (e.g. ``text``, ``face``): its size and change counter.

    `generation` goes up in the same transaction as any change to its embeddings; an index
    file built at another generation is stale and gets rebuilt from the table.
    """

    __tablename__ = "embedding_spaces"
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(8))
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class Embedding(Base):
    """A vector derived from one memory item (`owner_kind`, `owner_id`), as float32 bytes."""

    __tablename__ = "embeddings"
    __table_args__ = (
        Index("ix_embeddings_space", "tenant_id", "space"),
        Index("ix_embeddings_owner", "owner_kind", "owner_id"),
        Index("ix_embeddings_user", "user_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    space: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    owner_kind: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)



class BehaviorFit(Base):
    """One fit of a tenant's behavior space (`unipgen.core.behavior_space`): its settings and size.

    The `current` fit's item vectors are the embeddings of space `space`; `mapping` (float32,
    `mapping_rows` x `mapping_cols`) places items added after it. A fit is derived from every
    user whose events it read (lineage edges ``fit <- user``): forgetting one, or deleting events,
    marks it `stale` (`stale_reason` says why) until a refit replaces it. A `replaced` fit keeps
    only its settings and figures (no vectors, no mapping, no lineage): the history of versions.
    `last_event_id`: the newest event it saw, from which the refit policy counts new events.
    """

    __tablename__ = "behavior_fits"
    __table_args__ = (UniqueConstraint("tenant_id", "generation"), Index("ix_behavior_fits_status", "tenant_id", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer)
    space: Mapped[str] = mapped_column(String(64))
    status: Mapped[FitStatus] = mapped_column(String(16))
    config: Mapped[dict[str, Any]]
    stats: Mapped[dict[str, Any]]
    mapping: Mapped[bytes | None] = mapped_column(LargeBinary)
    mapping_rows: Mapped[int] = mapped_column(Integer, default=0)
    mapping_cols: Mapped[int] = mapped_column(Integer, default=0)
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    stale_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    stale_since: Mapped[datetime | None]


class ApiKey(Base):
    """A tenant's key to the HTTP service. Only the sha256 of the whole key is kept (the key is
    shown once, at creation); `prefix` is its public id, for listing and revoking."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(8), unique=True, index=True)
    key_hash: Mapped[str] = mapped_column(Sha256, unique=True, index=True)
    name: Mapped[str] = mapped_column(Key)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One audited action (who read or changed what), ids only.

    `user_key` is the user's public id as a plain string, not a foreign key, so that the record
    of who read a user's data outlives `forget_user`. It names, never copies, the data.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_tenant_ts", "tenant_id", "ts"),
        Index("ix_audit_tenant_user", "tenant_id", "user_key"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(Key)
    action: Mapped[str] = mapped_column(String(64))
    user_key: Mapped[str | None] = mapped_column(Key)
    object_kind: Mapped[str | None] = mapped_column(String(32))
    object_key: Mapped[str | None] = mapped_column(Key)
    detail: Mapped[dict[str, Any] | None]


#: Columns that point at a blob; a blob is needed while any row names it here.
BLOB_COLUMNS = (
    Item.image_sha,
    Face.blob_sha,
    SubjectImage.blob_sha,
    VoiceSample.blob_sha,
    Artifact.blob_sha,
)
