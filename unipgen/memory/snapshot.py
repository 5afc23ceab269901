"""One read of everything context building needs about a user: `MemoryStore.user_snapshot`.

A context used to be assembled from a dozen store calls, each its own session that looked the
user up again (about 30 queries). The snapshot reads the same things in one transaction with
the user resolved once (about 10 queries), and on PostgreSQL at REPEATABLE READ, so a context
never mixes memory from before and after a concurrent write (a forget, an upload).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import select

from unipgen.memory.lookups import user_id_of
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Document,
    Embedding,
    EmbeddingSpace,
    Face,
    Item,
    ProfileAttribute,
    Subject,
    Tenant,
    User,
    VoiceSample,
)
from unipgen.memory.reads import ArtifactRecord, SubjectRecord, _sources
from unipgen.schema.memory import DocumentIn

if TYPE_CHECKING:
    from unipgen.memory.store import MemoryStore


class EventRow(NamedTuple):
    """One stored behavior event (the fields of `EventIn`); a plain tuple, because a user with
    a long history has thousands and they were validated on the way in."""

    user: str
    type: str
    item: str
    ts: datetime
    value: float | None
    meta: dict[str, Any] | None


@dataclass(frozen=True)
class UserSnapshot:
    """What the store holds about one user, as context building reads it.

    `item_vectors` and `item_texts` cover only the catalog items the user has events on;
    `item_vectors` maps space → item key → vector for each of `spaces` asked for.
    """

    tenant: str
    user: str
    profile: dict[str, Any]
    events: list[EventRow]  # oldest first
    spaces: dict[str, tuple[int, str]]  # the tenant's spaces: name → (dimension, metric)
    item_vectors: dict[str, dict[str, np.ndarray]]
    item_texts: dict[str, str]
    documents: list[DocumentIn]  # oldest first
    document_vectors: dict[str, np.ndarray]  # in space ``text``
    adapters: list[ArtifactRecord]  # oldest first, with what each was derived from
    subjects: list[SubjectRecord]
    faces: dict[str, np.ndarray]  # in space ``face``
    voices: dict[str, np.ndarray]  # in space ``voice``


class SnapshotMixin:
    def user_snapshot(self: MemoryStore, tenant: str, user: str,
                      item_spaces: Sequence[str] = ("text", "image")) -> UserSnapshot:
        """Everything `ContextBuilder` reads about `user`, in one read transaction."""
        with self.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            user_id, tenant_id = _user_and_tenant(session, tenant, user)
            spaces = {name: (dim, metric) for name, dim, metric in session.execute(
                select(EmbeddingSpace.name, EmbeddingSpace.dim, EmbeddingSpace.metric)
                .where(EmbeddingSpace.tenant_id == tenant_id))}
            events = _events(session, user_id, user)
            seen_items = select(BehaviorEvent.item_id).where(BehaviorEvent.user_id == user_id)
            item_vectors: dict[str, dict[str, np.ndarray]] = {space: {} for space in item_spaces if space in spaces}
            if item_vectors and events:
                rows = session.execute(
                    select(Embedding.space, Item.key, Embedding.vector)
                    .join(Item, (Embedding.owner_kind == "item") & (Embedding.owner_id == Item.id))
                    .where(Embedding.space.in_(list(item_vectors)), Item.id.in_(seen_items)))
                for space, key, blob in rows:
                    item_vectors[space][key] = _vector(blob)
            item_texts = dict(session.execute(select(Item.key, Item.text).where(Item.id.in_(seen_items))).all()) \
                if events else {}
            documents = [DocumentIn.model_construct(key=d.key, text=d.text, kind=d.kind, ts=d.ts, meta=d.meta)
                         for d in session.scalars(select(Document).where(Document.user_id == user_id)
                                                  .order_by(Document.ts, Document.id))]
            own = _own_vectors(session, user_id)
            adapters = session.scalars(select(Artifact).where(Artifact.user_id == user_id, Artifact.kind == "adapter")
                                       .order_by(Artifact.created_at, Artifact.id)).all()
            sources = _sources(session, [a.id for a in adapters]) if adapters else {}
            subjects = [SubjectRecord(s.key, s.name, s.class_noun, [i.blob_sha for i in s.images])
                        for s in session.scalars(select(Subject).where(Subject.user_id == user_id)
                                                 .order_by(Subject.key))]
            profile = {row.name: row.value for row in session.scalars(
                select(ProfileAttribute).where(ProfileAttribute.user_id == user_id,
                                               ProfileAttribute.valid_to.is_(None)).order_by(ProfileAttribute.name))}
        return UserSnapshot(
            tenant=tenant, user=user, profile=profile, events=events, spaces=spaces, item_vectors=item_vectors,
            item_texts=item_texts, documents=documents, document_vectors=own.get(("document", "text"), {}),
            adapters=[ArtifactRecord(a.key, a.kind, a.media_type, a.blob_sha, a.meta, sources.get(a.id, []))
                      for a in adapters],
            subjects=subjects, faces=own.get(("face", "face"), {}), voices=own.get(("voice", "voice"), {}))


def _user_and_tenant(session: Any, tenant: str, user: str) -> tuple[int, int]:
    found = session.execute(select(User.id, User.tenant_id).join(Tenant)
                            .where(Tenant.key == tenant, User.key == user)).first()
    if found is None:
        user_id_of(session, tenant, user)  # raises, naming the unknown tenant or user
    return found[0], found[1]


def _events(session: Any, user_id: int, user: str) -> list[EventRow]:
    """The user's events, oldest first."""
    rows = session.execute(
        select(BehaviorEvent.type, Item.key, BehaviorEvent.ts, BehaviorEvent.value, BehaviorEvent.meta)
        .join(Item, Item.id == BehaviorEvent.item_id).where(BehaviorEvent.user_id == user_id)
        .order_by(BehaviorEvent.ts, BehaviorEvent.id))
    return [EventRow(user, kind, key, ts, value, meta) for kind, key, ts, value, meta in rows]


def _own_vectors(session: Any, user_id: int) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """The user's own items' vectors (documents, faces, voices): (kind, space) → key → vector."""
    found: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for kind, model in (("document", Document), ("face", Face), ("voice", VoiceSample)):
        rows = session.execute(
            select(Embedding.space, model.key, Embedding.vector)
            .join(model, (Embedding.owner_kind == kind) & (Embedding.owner_id == model.id))
            .where(Embedding.user_id == user_id))
        for space, key, blob in rows:
            found.setdefault((kind, space), {})[key] = _vector(blob)
    return found


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


__all__ = ["EventRow", "SnapshotMixin", "UserSnapshot"]
