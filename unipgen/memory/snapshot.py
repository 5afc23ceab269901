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
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from sqlalchemy import bindparam, extract, func, select
from sqlalchemy.orm import selectinload

from unipgen.errors import NotFoundError
from unipgen.memory.content import lookup_statements
from unipgen.memory.fits import fit_in_use
from unipgen.memory.lookups import tenant_id_of
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
    User,
    VoiceSample,
)
from unipgen.memory.reads import ArtifactRecord, SubjectRecord, _sources
from unipgen.schema.memory import DocumentIn, FitRecord

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


class SnapshotMixin:
    def user_snapshot(self: MemoryStore, tenant: str, user: str,
                      item_spaces: Sequence[str] = ("text", "image")) -> UserSnapshot:
        """Everything `ContextBuilder` reads about `user`, in one read transaction."""
        found = self.user_snapshots(tenant, [user], item_spaces)[user]
        if isinstance(found, Exception):
            raise found
        return found

    def user_snapshots(self: MemoryStore, tenant: str, users: Sequence[str],
                       item_spaces: Sequence[str] = ("text", "image")) -> dict[str, UserSnapshot | Exception]:
        """`user_snapshot` of several users with the same dozen queries as one (jobs prepared
        together). An unknown user gets a `NotFoundError` in its place; an unknown tenant raises."""
        with self.session() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            tenant_id = tenant_id_of(session, tenant)
            ids = dict(session.execute(select(User.key, User.id).where(User.tenant_id == tenant_id,
                                                                       User.key.in_(set(users)))).all())
            found: dict[str, UserSnapshot | Exception] = {
                user: NotFoundError(f"unknown user {user!r} in tenant {tenant!r}") for user in users if user not in ids}
            if ids:
                reads = _Reads(session, tenant_id, ids, item_spaces)
                found |= {user: reads.snapshot(tenant, user) for user in ids}
        return found


    def taste_read(self: MemoryStore, tenant: str, user: str, space: str | None, *, events: bool = True) -> TasteRead:
        """What a recommendation reads of the database, on one connection: the space's
        generation, the version of the user's events (how many, the newest id: any write or
        delete changes it) and, with `events`, the events themselves (oldest first). `space`
        None: the space recommendations rank in, the tenant's fitted behavior space when it has
        a fit in use (then in `fit`), else ``text``. Vectors then come from the index in memory
        (`item_vectors`, `search_items`)."""
        with self.engine.connect() as conn:
            fit = None
            if space is None:
                found = fit_in_use(conn, tenant)
                fit = found[2] if found else None
                space = fit.space if fit else "text"
            row = conn.execute(lookup_statements()["target"], {"tenant": tenant, "user": user, "space": space}).first()
            if row is None:
                raise NotFoundError(f"unknown tenant {tenant!r}")
            if row[1] is None:
                raise NotFoundError(f"unknown user {user!r} in tenant {tenant!r}")
            if not events:
                count, newest = conn.execute(_statements()["version"], {"user_id": row[1]}).one()
                return TasteRead(tenant_id=row[0], generation=row[3], events=[], version=(count, newest or 0),
                                 space=space, fit=fit)
            rows = conn.execute(_statements()["events"], {"user_id": row[1]}).all()  # one fetch, not one per row
            found_events = [TasteEvent(kind, key, float(ts), value) for kind, key, ts, value, _ in rows]
            version = (len(rows), max((r[4] for r in rows), default=0))
        return TasteRead(tenant_id=row[0], generation=row[3], events=found_events, version=version, space=space,
                         fit=fit)

    def item_vectors(self: MemoryStore, tenant: str, space: str, keys: Sequence[str], *,
                     read: TasteRead | None = None) -> dict[str, np.ndarray]:
        """Catalog items' vectors in `space` by key, from the space's index in memory (fast);
        empty when the tenant has no such space. `read`: a `taste_read` of this space (saves a query)."""
        if read is None:
            with self.engine.connect() as conn:
                row = conn.execute(lookup_statements()["target"], {"tenant": tenant, "user": None, "space": space}).first()
            if row is None:
                raise NotFoundError(f"unknown tenant {tenant!r}")
            read = TasteRead(tenant_id=row[0], generation=row[3], events=[])
        if read.generation is None:
            return {}
        return self.indexes.item_vectors(read.tenant_id, space, list(dict.fromkeys(keys)), read.generation)

    def search_items(self: MemoryStore, space: str, query: np.ndarray, k: int, read: TasteRead) -> list[tuple[str, float]]:
        """Top-k catalog items (key, score) of `space` nearest `query` (`read`: a `taste_read`)."""
        if read.generation is None:
            return []
        return self.indexes.search_items(read.tenant_id, space, query, k, read.generation)


@cache
def _statements() -> dict[str, Any]:
    """The recommendation path's statements, built once (building costs more than running)."""
    user_id = bindparam("user_id")
    # Unix seconds computed by the database: parsing thousands of datetimes costs more than the rest
    seconds = extract("epoch", BehaviorEvent.ts)
    return {
        "version": select(func.count(), func.max(BehaviorEvent.id)).where(BehaviorEvent.user_id == user_id),
        "events": select(BehaviorEvent.type, Item.key, seconds, BehaviorEvent.value, BehaviorEvent.id)
        .join(Item, Item.id == BehaviorEvent.item_id).where(BehaviorEvent.user_id == user_id)
        .order_by(BehaviorEvent.ts, BehaviorEvent.id),
    }


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
        sources = _sources(session, [a.id for a in adapters]) if adapters else {}
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


__all__ = ["EventRow", "SnapshotMixin", "TasteEvent", "TasteRead", "UserSnapshot"]
