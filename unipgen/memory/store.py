"""`MemoryStore`: the user-memory store every later layer reads.

One object ties together the database (SQLAlchemy), the blob store (fsspec) and the faiss
indexes. Each public method is one short transaction; a failure anywhere in it leaves nothing
written, including blob files. The methods are grouped by job in mixins:
`unipgen.memory.behaviors` (catalog and events), `unipgen.memory.content` (documents, faces,
subjects, voices, artifacts, embeddings), `unipgen.memory.feedback` (judgements of outputs), `unipgen.memory.jobs` (the job queue),
`unipgen.memory.snapshot` (one read of a user for context building), `unipgen.memory.forget`,
`unipgen.memory.archive`, `unipgen.memory.apikeys` (keys of the HTTP service),
`unipgen.memory.audit` (who read or changed what) and `unipgen.memory.retention` (purge of
expired data).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError, InvalidInputError
from unipgen.memory.apikeys import ApiKeysMixin
from unipgen.memory.archive import ArchiveMixin
from unipgen.memory.audit import AuditMixin
from unipgen.memory.behaviors import BehaviorsMixin
from unipgen.memory.blobs import BlobStore
from unipgen.memory.checks import RuleViolation, find_violations
from unipgen.memory.content import ContentMixin
from unipgen.memory.db import make_engine, migrate
from unipgen.memory.feedback import FeedbackMixin
from unipgen.memory.fits import FitsMixin
from unipgen.memory.forget import ForgetMixin
from unipgen.memory.indexes import IndexManager
from unipgen.memory.jobs import JobsMixin
from unipgen.memory.private import private_dir
from unipgen.memory.reads import ReadsMixin
from unipgen.memory.retention import RetentionMixin
from unipgen.memory.snapshot import SnapshotMixin
from unipgen.memory.lookups import check_key, insert_missing_users, tenant_id_of, user_id_of
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Blob,
    Document,
    Face,
    Feedback,
    Item,
    ProfileAttribute,
    Subject,
    Tenant,
    User,
    VoiceSample,
    utcnow,
)
from unipgen.schema.memory import UserSummary
from unipgen.memory.media import MediaLimits
from unipgen.schema.rules import check_json_value
from unipgen.settings import Settings

_VALUE_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


class _Write:
    """One open write: its session and the blob files it created (removed again on failure)."""

    def __init__(self, session: Session, blobs: BlobStore) -> None:
        self.session = session
        self._blobs = blobs
        self.new_blobs: list[str] = []
        self.after_commit: list[Callable[[], None]] = []

    def put_blob(self, data: bytes, media_type: str) -> str:
        sha, created = self._blobs.put(data)
        if created:
            self.new_blobs.append(sha)
        if self.session.get(Blob, sha) is None:
            self.session.add(Blob(sha256=sha, size=len(data), media_type=media_type))
            self.session.flush()  # rows naming the blob have no relationship to order them after it
        return sha


class MemoryStore(BehaviorsMixin, ContentMixin, FeedbackMixin, FitsMixin, JobsMixin, ReadsMixin, SnapshotMixin, ForgetMixin,
                  ArchiveMixin, ApiKeysMixin, AuditMixin, RetentionMixin):
    """Tenants, users and everything unipgen remembers about them.

    Build it with `MemoryStore.open(settings)` (migrates the database) or pass the parts.
    """

    def __init__(
        self, engine: Engine, blobs: BlobStore, indexes: IndexManager, max_blob_bytes: int,
        max_queued_jobs: int = 1000, scratch_dir: Path | None = None, media_limits: MediaLimits | None = None,
        max_document_chars: int = 100_000, refit_every_events: int = 0,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.indexes = indexes
        self.max_blob_bytes = max_blob_bytes
        self.max_queued_jobs = max_queued_jobs
        self.scratch_dir = scratch_dir  # running jobs' checkpoints (`job_scratch`); None: jobs keep none
        self.media_limits = media_limits or MediaLimits()
        self.max_document_chars = max_document_chars
        self.refit_every_events = refit_every_events  # refit policy (`fit_due`); 0: only on demand and after forget

    @classmethod
    def open(cls, settings: Settings | None = None) -> MemoryStore:
        """The store described by `settings` (read from the environment when None), migrated.

        The data dir is made 0700 (tightened, with a warning, when it was open to others): it
        holds biometric data (see `unipgen.memory.private`)."""
        settings = settings or Settings()
        private_dir(settings.home)
        engine = make_engine(settings.resolved_database_url())
        migrate(engine)
        indexes = IndexManager(engine, settings.resolved_index_dir())
        return cls(engine, BlobStore(settings.resolved_blob_url()), indexes, settings.max_blob_bytes,
                   settings.max_queued_jobs, settings.resolved_scratch_dir(), MediaLimits.from_settings(settings),
                   settings.max_document_chars, settings.refit_every_events)

    def close(self) -> None:
        """Persist changed indexes and release database connections."""
        self.indexes.save()
        self.engine.dispose()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self) -> Session:
        """A new session for reads the caller composes itself (the caller owns and closes it)."""
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def _write(self) -> Iterator[_Write]:
        """A transaction; on failure it rolls back and removes the blob files it wrote."""
        write = _Write(Session(self.engine, expire_on_commit=False), self.blobs)
        try:
            with write.session, write.session.begin():
                yield write
            for callback in write.after_commit:
                callback()
        except IntegrityError as exc:
            self._drop_unreferenced(write.new_blobs)
            raise ConflictError(f"write refused by the database: {exc.orig}") from exc
        except BaseException:
            self._drop_unreferenced(write.new_blobs)
            raise

    def _drop_unreferenced(self, shas: list[str]) -> None:
        if not shas:
            return
        with Session(self.engine) as session:
            kept = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(shas))))
        for sha in set(shas) - kept:
            self.blobs.delete(sha)

    # -- tenants and users -------------------------------------------------------------------

    def create_tenant(self, key: str) -> None:
        check_key(key, "tenant")
        with self._write() as w:
            if w.session.scalar(select(Tenant.id).where(Tenant.key == key)) is not None:
                raise ConflictError(f"tenant {key!r} already exists")
            w.session.add(Tenant(key=key))

    def ensure_tenant(self, key: str) -> None:
        """Create the tenant unless it exists."""
        with self.session() as session:
            if session.scalar(select(Tenant.id).where(Tenant.key == key)) is not None:
                return
        self.create_tenant(key)

    def create_user(self, tenant: str, key: str) -> None:
        self.create_users(tenant, [key])

    def create_users(self, tenant: str, keys: list[str], *, exist_ok: bool = False) -> int:
        """Create users in one transaction; returns how many were new."""
        for key in keys:
            check_key(key, "user")
        if len(set(keys)) != len(keys):
            raise ConflictError("duplicate user ids in the request")
        with self._write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            existing = set(
                w.session.scalars(
                    select(User.key).where(User.tenant_id == tenant_id, User.key.in_(keys))
                )
            )
            if existing and not exist_ok:
                raise ConflictError(f"user {min(existing)!r} already exists in {tenant!r}")
            if exist_ok:  # another request may be creating the same users right now
                return insert_missing_users(w.session, tenant_id, [k for k in keys if k not in existing])
            w.session.add_all(User(tenant_id=tenant_id, key=k) for k in keys)
            return len(keys)

    def list_users(self, tenant: str) -> list[str]:
        with self.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            return list(
                session.scalars(select(User.key).where(User.tenant_id == tenant_id).order_by(User.key))
            )

    def list_tenants(self) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(Tenant.key).order_by(Tenant.key)))

    # -- profile -----------------------------------------------------------------------------

    def set_profile(
        self, tenant: str, user: str, name: str, value: Any, *, at: datetime | None = None
    ) -> None:
        """Set one profile attribute; the previous value is kept as history."""
        check_key(name, "profile attribute")
        value_type = _VALUE_TYPES.get(type(value))
        if value_type is None:
            raise InvalidInputError(
                f"profile attribute {name!r}: unsupported value type {type(value).__name__}"
            )
        check_json_value(value, f"profile attribute {name!r}")
        at = at or utcnow()
        with self._write() as w:
            user_id = user_id_of(w.session, tenant, user)
            current = w.session.scalar(_current_attribute(user_id, name))
            if current is not None:
                current.valid_to = at
            w.session.add(
                ProfileAttribute(
                    user_id=user_id, name=name, value=value, value_type=value_type, valid_from=at
                )
            )

    def profile(self, tenant: str, user: str) -> dict[str, Any]:
        """The current value of every profile attribute."""
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(
                select(ProfileAttribute)
                .where(ProfileAttribute.user_id == user_id, ProfileAttribute.valid_to.is_(None))
                .order_by(ProfileAttribute.name)
            )
            return {row.name: row.value for row in rows}

    def profile_history(self, tenant: str, user: str, name: str) -> list[tuple[Any, datetime]]:
        """Every value `name` has had, oldest first, with the time it was set."""
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(
                select(ProfileAttribute)
                .where(ProfileAttribute.user_id == user_id, ProfileAttribute.name == name)
                .order_by(ProfileAttribute.valid_from, ProfileAttribute.id)
            )
            return [(row.value, row.valid_from) for row in rows]

    def user_summary(self, tenant: str, user: str, top: int = 5) -> UserSummary:
        """Counts of everything held for `user`, the current profile and the most-rated items."""
        profile = self.profile(tenant, user)
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            row = session.get(User, user_id)
            counts = {
                model.__tablename__: session.scalar(
                    select(func.count()).select_from(model).where(model.user_id == user_id)
                ) or 0
                for model in (BehaviorEvent, Document, Face, Subject, VoiceSample, Artifact, Feedback)
            }
            first, last = session.execute(
                select(func.min(BehaviorEvent.ts), func.max(BehaviorEvent.ts)).where(BehaviorEvent.user_id == user_id)
            ).one()
            top_items = session.scalars(
                select(Item.text).join(BehaviorEvent, BehaviorEvent.item_id == Item.id)
                .where(BehaviorEvent.user_id == user_id)
                .order_by(BehaviorEvent.value.desc().nulls_last(), BehaviorEvent.ts.desc()).limit(top)
            ).all()
        return UserSummary(
            tenant=tenant, user=user, created_at=row.created_at, profile=profile, counts=counts,
            first_event_at=first, last_event_at=last, top_items=list(top_items),
        )

    def check_data(self) -> list[RuleViolation]:
        """Stored rows that break the data rules (`unipgen.schema.rules`): ids no URL reaches,
        non-finite numbers. Written before the rules were enforced; empty when clean."""
        with self.session() as session:
            return find_violations(session)

    def count_rows(self, model: type) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0


def _current_attribute(user_id: int, name: str) -> Any:
    return select(ProfileAttribute).where(
        ProfileAttribute.user_id == user_id,
        ProfileAttribute.name == name,
        ProfileAttribute.valid_to.is_(None),
    )
