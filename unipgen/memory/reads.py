"""Read what the store holds about a user, as plain values the user model builds on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import bindparam, func, select

from unipgen.errors import NotFoundError
from unipgen.memory.content import OWNER_MODELS
from unipgen.memory.lookups import tenant_id_of, user_id_of
from unipgen.memory.models import (
    Artifact,
    Blob,
    Embedding,
    EmbeddingSpace,
    Item,
    Lineage,
    Subject,
    Tenant,
)


if TYPE_CHECKING:
    from unipgen.memory.store import MemoryStore


@dataclass(frozen=True)
class SubjectRecord:
    key: str
    name: str
    class_noun: str
    image_shas: list[str]


@dataclass(frozen=True)
class ArtifactRecord:
    key: str
    kind: str
    media_type: str
    blob_sha: str | None
    meta: dict[str, Any] | None
    derived_from: list[tuple[str, str]]  # (kind, key) within the same user or the catalog


@cache
def _item_texts_statement() -> Any:
    return (select(Item.key, Item.text).join(Tenant, Tenant.id == Item.tenant_id)
            .where(Tenant.key == bindparam("tenant"), Item.key.in_(bindparam("keys", expanding=True))))


class ReadsMixin:
    def item_texts(self: MemoryStore, tenant: str, keys: Sequence[str] | None = None) -> dict[str, str]:
        """Text of catalog items (all of them when `keys` is None)."""
        if keys is not None:  # a request's hot path (recommendations): a prebuilt statement on a bare connection
            with self.engine.connect() as conn:
                found = dict(conn.execute(_item_texts_statement(), {"tenant": tenant, "keys": list(keys)}).all())
            if found or not keys:
                return found
        with self.session() as session:
            query = select(Item.key, Item.text).join(Tenant, Tenant.id == Item.tenant_id).where(Tenant.key == tenant)
            if keys is not None:
                query = query.where(Item.key.in_(list(keys)))
            found = dict(session.execute(query).all())
            if not found:
                tenant_id_of(session, tenant)  # an unknown tenant is an error, not "no items"
            return found

    def item_meta(self: MemoryStore, tenant: str, keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Metadata of the catalog items that have some (genres, year...): all, or those of `keys`."""
        with self.session() as session:
            query = select(Item.key, Item.meta).where(Item.tenant_id == tenant_id_of(session, tenant),
                                                      Item.meta.is_not(None))
            if keys is not None:
                query = query.where(Item.key.in_(list(keys)))
            return {key: meta for key, meta in session.execute(query)}

    def spaces(self: MemoryStore, tenant: str) -> dict[str, tuple[int, str]]:
        """The tenant's embedding spaces: name → (dimension, metric)."""
        with self.session() as session:
            rows = session.execute(select(EmbeddingSpace.name, EmbeddingSpace.dim, EmbeddingSpace.metric).where(
                EmbeddingSpace.tenant_id == tenant_id_of(session, tenant)))
            return {name: (dim, metric) for name, dim, metric in rows}

    def subjects(self: MemoryStore, tenant: str, user: str) -> list[SubjectRecord]:
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(select(Subject).where(Subject.user_id == user_id).order_by(Subject.key))
            return [SubjectRecord(s.key, s.name, s.class_noun, [i.blob_sha for i in s.images]) for s in rows]

    def artifacts(self: MemoryStore, tenant: str, user: str, kind: str | None = None) -> list[ArtifactRecord]:
        """A user's artifacts (of one `kind` if given), oldest first, with what each was derived from."""
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            query = select(Artifact).where(Artifact.user_id == user_id).order_by(Artifact.created_at, Artifact.id)
            if kind is not None:
                query = query.where(Artifact.kind == kind)
            artifacts = session.scalars(query).all()
            sources = _sources(session, [a.id for a in artifacts])
            return [ArtifactRecord(a.key, a.kind, a.media_type, a.blob_sha, a.meta, sources.get(a.id, []))
                    for a in artifacts]

    def artifact(self: MemoryStore, tenant: str, key: str) -> ArtifactRecord:
        """One artifact of the tenant by key, with what it was derived from."""
        with self.session() as session:
            found = session.scalar(select(Artifact).where(Artifact.tenant_id == tenant_id_of(session, tenant),
                                                          Artifact.key == key))
            if found is None:
                raise NotFoundError(f"unknown artifact {key!r} in tenant {tenant!r}")
            return ArtifactRecord(found.key, found.kind, found.media_type, found.blob_sha, found.meta,
                                  _sources(session, [found.id]).get(found.id, []))

    def media(self: MemoryStore, tenant: str, user: str, kind: str) -> list[tuple[str, str]]:
        """(key, media type) of a user's face photos (`kind` ``face``) or voice samples (``voice``)."""
        model = OWNER_MODELS[kind][0]  # Face or VoiceSample
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            return [(key, media_type) for key, media_type in session.execute(
                select(model.key, Blob.media_type).join(Blob, Blob.sha256 == model.blob_sha)
                .where(model.user_id == user_id).order_by(model.key))]

    def media_blob(self: MemoryStore, tenant: str, user: str, kind: str, key: str) -> tuple[bytes, str]:
        """The bytes and media type of one face photo or voice sample."""
        model = OWNER_MODELS[kind][0]  # Face or VoiceSample
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            found = session.execute(select(model.blob_sha, Blob.media_type).join(Blob, Blob.sha256 == model.blob_sha)
                                    .where(model.user_id == user_id, model.key == key)).first()
        if found is None:
            raise NotFoundError(f"unknown {kind} {key!r} of user {user!r}")
        return self.blobs.get(found[0]), found[1]

    def catalog_stamp(self: MemoryStore, tenant: str, space: str = "text") -> tuple[int, int | None]:
        """Two cheap numbers that change whenever the tenant's catalog may have gained an item
        without a vector in `space`: how many items it has, and the space's generation (which a
        deleted item's vector bumps, so a deletion and an addition do not cancel out)."""
        with self.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            items = session.scalar(select(func.count()).select_from(Item).where(Item.tenant_id == tenant_id))
            generation = session.scalar(select(EmbeddingSpace.generation).where(
                EmbeddingSpace.tenant_id == tenant_id, EmbeddingSpace.name == space))
            return items or 0, generation

    def keys_without_vector(
        self: MemoryStore, tenant: str, space: str, kind: str, *, user: str | None = None
    ) -> list[str]:
        """Keys of the catalog's items (or, with `user`, that user's `kind` items) with no vector
        in `space` yet, in insertion order: what still needs embedding after a bulk load."""
        model, per_user = OWNER_MODELS[kind]
        with self.session() as session:
            if per_user:
                scope = model.user_id == user_id_of(session, tenant, user or "")
            else:
                scope = model.tenant_id == tenant_id_of(session, tenant)
            return _missing(session, model, kind, space, scope)

    def vectors(
        self: MemoryStore, tenant: str, space: str, kind: str, keys: Sequence[str] | None = None, *,
        user: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Stored vectors of `kind` items in `space` by key: a user's (with `user`), else the catalog's."""
        model, per_user = OWNER_MODELS[kind]
        with self.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            query = (select(model.key, Embedding.vector)
                     .join(Embedding, (Embedding.owner_kind == kind) & (Embedding.owner_id == model.id))
                     .where(Embedding.tenant_id == tenant_id, Embedding.space == space))
            if user is not None and per_user:
                query = query.where(Embedding.user_id == user_id_of(session, tenant, user))
            if keys is not None:
                query = query.where(model.key.in_(list(keys)))
            return {key: np.frombuffer(blob, dtype=np.float32) for key, blob in session.execute(query)}


def _missing(session: Any, model: Any, owner_kind: str, space: str, scope: Any) -> list[str]:
    """Keys of `model` rows in `scope` that have no vector in `space` (one anti-join query)."""
    vector = select(Embedding.id).where(Embedding.owner_kind == owner_kind, Embedding.owner_id == model.id,
                                        Embedding.space == space).exists()
    return list(session.scalars(select(model.key).where(scope, ~vector).order_by(model.id)))


def _sources(session: Any, artifact_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """(kind, key) sources of each artifact, sorted: one query for the edges, one per source kind."""
    edges = session.execute(select(Lineage.derived_id, Lineage.source_kind, Lineage.source_id).where(
        Lineage.derived_kind == "artifact", Lineage.derived_id.in_(artifact_ids))).all()
    keys: dict[tuple[str, int], str] = {}
    for kind in {kind for _, kind, _ in edges if kind in OWNER_MODELS}:
        model = OWNER_MODELS[kind][0]
        wanted = [source for _, k, source in edges if k == kind]
        keys.update(((kind, i), key) for i, key in session.execute(select(model.id, model.key).where(model.id.in_(wanted))))
    named: dict[int, list[tuple[str, str]]] = {}
    for derived, kind, source in edges:
        if (kind, source) in keys:
            named.setdefault(derived, []).append((kind, keys[(kind, source)]))
    return {derived: sorted(pairs) for derived, pairs in named.items()}
