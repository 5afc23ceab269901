"""What context building reads about a user (`UserSnapshot`) and what a recommendation reads
(`TasteRead`), as plain values; `read_snapshots` reads several users' snapshots together.

A context used to be assembled from a dozen store calls, each its own session that looked the
user up again (about 30 queries). The snapshot reads the same things in one transaction with
the user resolved once (about 10 queries); `Reads.user_snapshots` runs it on PostgreSQL at
REPEATABLE READ, so a context never mixes memory from before and after a concurrent write (a
forget, an upload).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from unipgen.memory.artifacts import ArtifactRecord, artifact_sources
from unipgen.memory.content import SubjectRecord
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
    VoiceSample,
)
from unipgen.schema.memory import DocumentIn, FitRecord


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
    voice_blobs: dict[str, str]  # voice sample key → blob sha256 of the recording


class TasteEvent(NamedTuple):
    """One behavior event as a recommendation reads it: `ts` in Unix seconds."""

    type: str
    item: str
    ts: float
    value: float | None


@dataclass(frozen=True)
class TasteRead:
    """A recommendation's read: the tenant's row id, the space read and its generation (None:
    no such space), the user's events, oldest first, and the tenant's fit in use (when the
    space was chosen by `taste_read`)."""

    tenant_id: int
    generation: int | None
    events: list[TasteEvent]
    version: tuple[int, int] = (0, 0)  # the user's events: (how many, newest id)
    space: str = ""
    fit: FitRecord | None = None


def read_snapshots(session: Any, tenant: str, tenant_id: int, ids: dict[str, int],
                   item_spaces: Sequence[str]) -> dict[str, UserSnapshot]:
    """The snapshots of the users of `ids` (user key → row id), with one query per kind of row."""
    reads = _Reads(session, tenant_id, ids, item_spaces)
    return {user: reads.snapshot(tenant, user) for user in ids}


class _Reads:
    """The rows of several users' snapshots, read with one query per kind and grouped by user."""

    def __init__(self, session: Any, tenant_id: int, ids: dict[str, int], item_spaces: Sequence[str]) -> None:
        user_ids = list(ids.values())
        self.ids = ids
        self.spaces = {name: (dim, metric) for name, dim, metric in session.execute(
            select(EmbeddingSpace.name, EmbeddingSpace.dim, EmbeddingSpace.metric)
            .where(EmbeddingSpace.tenant_id == tenant_id))}
        self.events = _events(session, ids)
        seen_items = select(BehaviorEvent.item_id).where(BehaviorEvent.user_id.in_(user_ids))
        self.item_vectors: dict[str, dict[str, np.ndarray]] = {s: {} for s in item_spaces if s in self.spaces}
        self.item_texts: dict[str, str] = {}
        if self.events:
            if self.item_vectors:
                rows = session.execute(
                    select(Embedding.space, Item.key, Embedding.vector)
                    .join(Item, (Embedding.owner_kind == "item") & (Embedding.owner_id == Item.id))
                    .where(Embedding.space.in_(list(self.item_vectors)), Item.id.in_(seen_items)))
                for space, key, blob in rows:
                    self.item_vectors[space][key] = _vector(blob)
            self.item_texts = dict(session.execute(select(Item.key, Item.text).where(Item.id.in_(seen_items))).all())
        self.documents = _grouped(session.scalars(select(Document).where(Document.user_id.in_(user_ids))
                                                  .order_by(Document.ts, Document.id)))
        self.own = _own_vectors(session, user_ids)
        adapters = session.scalars(select(Artifact).where(Artifact.user_id.in_(user_ids), Artifact.kind == "adapter")
                                   .order_by(Artifact.created_at, Artifact.id)).all()
        sources = artifact_sources(session, [a.id for a in adapters]) if adapters else {}
        self.adapters = _grouped(adapters, lambda a: ArtifactRecord(a.key, a.kind, a.media_type, a.blob_sha, a.meta,
                                                                     sources.get(a.id, [])))
        self.subjects = _grouped(
            session.scalars(select(Subject).where(Subject.user_id.in_(user_ids)).order_by(Subject.key)
                            .options(selectinload(Subject.images))),
            lambda s: SubjectRecord(s.key, s.name, s.class_noun, [i.blob_sha for i in s.images]))
        self.voice_blobs = _grouped(session.execute(
            select(VoiceSample.user_id, VoiceSample.key, VoiceSample.blob_sha)
            .where(VoiceSample.user_id.in_(user_ids)).order_by(VoiceSample.key)), lambda row: (row.key, row.blob_sha))
        self.profiles = _grouped(session.scalars(
            select(ProfileAttribute).where(ProfileAttribute.user_id.in_(user_ids), ProfileAttribute.valid_to.is_(None))
            .order_by(ProfileAttribute.name)), lambda row: (row.name, row.value))

    def snapshot(self, tenant: str, user: str) -> UserSnapshot:
        user_id = self.ids[user]
        events = self.events.get(user_id, [])
        items = {e.item for e in events}
        own = self.own.get(user_id, {})
        return UserSnapshot(
            tenant=tenant, user=user, profile=dict(self.profiles.get(user_id, [])), events=events, spaces=self.spaces,
            item_vectors={space: {k: v for k, v in vectors.items() if k in items}
                          for space, vectors in self.item_vectors.items()},
            item_texts={k: v for k, v in self.item_texts.items() if k in items},
            documents=[DocumentIn.model_construct(key=d.key, text=d.text, kind=d.kind, ts=d.ts, meta=d.meta)
                       for d in self.documents.get(user_id, [])],
            document_vectors=own.get(("document", "text"), {}), adapters=self.adapters.get(user_id, []),
            subjects=self.subjects.get(user_id, []), faces=own.get(("face", "face"), {}),
            voices=own.get(("voice", "voice"), {}), voice_blobs=dict(self.voice_blobs.get(user_id, [])))


def _grouped(rows: Any, convert: Any = None) -> dict[int, list[Any]]:
    """Rows with a `user_id` by user, in their order, each through `convert` if given."""
    grouped: dict[int, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row.user_id, []).append(convert(row) if convert else row)
    return grouped


def _events(session: Any, ids: dict[str, int]) -> dict[int, list[EventRow]]:
    """The users' events (`ids`: user key → row id) by user id, oldest first."""
    keys = {user_id: key for key, user_id in ids.items()}
    rows = session.execute(
        select(BehaviorEvent.user_id, BehaviorEvent.type, Item.key, BehaviorEvent.ts, BehaviorEvent.value,
               BehaviorEvent.meta)
        .join(Item, Item.id == BehaviorEvent.item_id).where(BehaviorEvent.user_id.in_(list(keys)))
        .order_by(BehaviorEvent.ts, BehaviorEvent.id))
    grouped: dict[int, list[EventRow]] = {}
    for user_id, kind, key, ts, value, meta in rows:
        grouped.setdefault(user_id, []).append(EventRow(keys[user_id], kind, key, ts, value, meta))
    return grouped


def _own_vectors(session: Any, user_ids: list[int]) -> dict[int, dict[tuple[str, str], dict[str, np.ndarray]]]:
    """The users' own items' vectors (documents, faces, voices): user → (kind, space) → key → vector."""
    found: dict[int, dict[tuple[str, str], dict[str, np.ndarray]]] = {}
    for kind, model in (("document", Document), ("face", Face), ("voice", VoiceSample)):
        rows = session.execute(
            select(Embedding.user_id, Embedding.space, model.key, Embedding.vector)
            .join(model, (Embedding.owner_kind == kind) & (Embedding.owner_id == model.id))
            .where(Embedding.user_id.in_(user_ids)))
        for user_id, space, key, blob in rows:
            found.setdefault(user_id, {}).setdefault((kind, space), {})[key] = _vector(blob)
    return found


def _vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)


__all__ = ["EventRow", "TasteEvent", "TasteRead", "UserSnapshot", "read_snapshots"]
