"""`store.artifacts`: what unipgen derives (outputs, adapters), with the lineage that says what
each was derived from, so that forgetting a source takes its derivatives along."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from unipgen.errors import ConflictError, NotFoundError
from unipgen.memory.lookups import OWNER_MODELS, check_key, resolve_all, tenant_id_of, user_id_of
from unipgen.memory.media import check_size
from unipgen.memory.models import Artifact, Lineage
from unipgen.memory.transaction import Database, Transaction


@dataclass(frozen=True)
class ArtifactRecord:
    key: str
    kind: str
    media_type: str
    blob_sha: str | None
    meta: dict[str, Any] | None
    derived_from: list[tuple[str, str]]  # (kind, key) within the same user or the catalog


class Artifacts:
    """Artifacts: recorded with their file and lineage in one transaction, read back by key or by user."""

    def __init__(self, db: Database, max_blob_bytes: int) -> None:
        self.db = db
        self.max_blob_bytes = max_blob_bytes

    def add_artifact(
        self, tenant: str, key: str, *, kind: str, media_type: str,
        data: bytes | None = None, user: str | None = None,
        derived_from: Sequence[tuple[str, str]] = (), meta: dict[str, Any] | None = None,
    ) -> None:
        """Record something unipgen derived (an output, an adapter) and what it was derived from.

        `derived_from` lists (kind, key) pairs: kinds of `OWNER_MODELS`, or ``("user", key)``
        for data derived from the user's whole history. User-owned kinds resolve in `user`.
        """
        with self.db.write() as w:
            self.insert(w, tenant, key, kind=kind, media_type=media_type, data=data, user=user,
                        derived_from=derived_from, meta=meta)

    def insert(
        self, w: Transaction, tenant: str, key: str, *, kind: str, media_type: str,
        data: bytes | None, user: str | None, derived_from: Sequence[tuple[str, str]], meta: dict[str, Any] | None,
    ) -> None:
        """`add_artifact` inside an open transaction (a job stores its outputs and its end together)."""
        check_key(key, "artifact")
        if data is not None:
            check_size(data, self.max_blob_bytes, f"artifact {key!r}", allow_empty=True)  # a model may say nothing
        tenant_id = tenant_id_of(w.session, tenant)
        user_id = user_id_of(w.session, tenant, user) if user is not None else None
        if w.session.scalar(select(Artifact.id).where(Artifact.tenant_id == tenant_id, Artifact.key == key)):
            raise ConflictError(f"artifact {key!r} already exists in {tenant!r}")
        sources = resolve_all(w.session, tenant, tenant_id, user_id, derived_from)
        blob_sha = w.put_blob(data, media_type) if data is not None else None
        artifact = Artifact(tenant_id=tenant_id, user_id=user_id, key=key, kind=kind,
                            media_type=media_type, blob_sha=blob_sha, meta=meta)
        w.session.add(artifact)
        w.session.flush()
        w.session.add_all(
            Lineage(tenant_id=tenant_id, derived_kind="artifact", derived_id=artifact.id,
                    source_kind=k, source_id=i) for k, i in dict.fromkeys(sources)
        )

    def artifacts(self, tenant: str, user: str, kind: str | None = None) -> list[ArtifactRecord]:
        """A user's artifacts (of one `kind` if given), oldest first, with what each was derived from."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            query = select(Artifact).where(Artifact.user_id == user_id).order_by(Artifact.created_at, Artifact.id)
            if kind is not None:
                query = query.where(Artifact.kind == kind)
            artifacts = session.scalars(query).all()
            sources = artifact_sources(session, [a.id for a in artifacts])
            return [ArtifactRecord(a.key, a.kind, a.media_type, a.blob_sha, a.meta, sources.get(a.id, []))
                    for a in artifacts]

    def artifact(self, tenant: str, key: str, user: str | None = None) -> ArtifactRecord:
        """One artifact of the tenant by key (of `user`'s, if given), with what it was derived from."""
        with self.db.session() as session:
            found = _find(session, tenant, key, user)
            return ArtifactRecord(found.key, found.kind, found.media_type, found.blob_sha, found.meta,
                                  artifact_sources(session, [found.id]).get(found.id, []))

    def artifact_blob(self, tenant: str, key: str, user: str | None = None) -> tuple[bytes, str]:
        """The bytes and media type of an artifact (one of `user`'s, if given)."""
        with self.db.session() as session:
            artifact = _find(session, tenant, key, user)
            if artifact.blob_sha is None:
                raise NotFoundError(f"artifact {key!r} has no file")
            return self.db.blobs.get(artifact.blob_sha), artifact.media_type


def _find(session: Any, tenant: str, key: str, user: str | None) -> Artifact:
    """The artifact `key` of the tenant, or of `user` when given (else a `NotFoundError` naming it)."""
    query = select(Artifact).where(Artifact.tenant_id == tenant_id_of(session, tenant), Artifact.key == key)
    if user is not None:
        query = query.where(Artifact.user_id == user_id_of(session, tenant, user))
    found: Artifact | None = session.scalar(query)
    if found is None:
        owner = f"of user {user!r}" if user is not None else f"in tenant {tenant!r}"
        raise NotFoundError(f"unknown artifact {key!r} {owner}")
    return found


def artifact_sources(session: Any, artifact_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
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
