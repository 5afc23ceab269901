"""`store.artifacts`: what unipgen derives (outputs, adapters), with the lineage that says what
each was derived from, so that forgetting a source takes its derivatives along."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from unipgen.errors import ConflictError, ConsentRequiredError, NotFoundError
from unipgen.memory.audit import audit_entry
from unipgen.memory.lookups import OWNER_MODELS, check_key, resolve, resolve_all, tenant_id_of, user_id_of
from unipgen.memory.media import check_size
from unipgen.memory.models import Artifact, Lineage, User
from unipgen.memory.transaction import Database, Transaction

#: The artifact kind of a photo's protected copy (`unipgen.orchestrator.protection`).
PROTECTED = "protected"
#: The kinds of a user's data an adapter may not learn from without their consent to training.
CONSENTED_SOURCES = ("face", "subject")


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
        derived_from: Sequence[tuple[str, str]] = (), meta: dict[str, Any] | None = None, actor: str = "unipgen",
    ) -> None:
        """Record something unipgen derived (an output, an adapter) and what it was derived from.

        `derived_from` lists (kind, key) pairs: kinds of `OWNER_MODELS`, or ``("user", key)``
        for data derived from the user's whole history. User-owned kinds resolve in `user`.
        An adapter (kind ``adapter``) is a training: it is refused (`ConsentRequiredError`) when
        it learned from the user's faces or subjects without their consent to training, and it
        is recorded in the audit log (action ``trained_adapter``, by `actor`) in the same transaction.
        """
        with self.db.write() as w:
            self.insert(w, tenant, key, kind=kind, media_type=media_type, data=data, user=user,
                        derived_from=derived_from, meta=meta, actor=actor)

    def insert(
        self, w: Transaction, tenant: str, key: str, *, kind: str, media_type: str,
        data: bytes | None, user: str | None, derived_from: Sequence[tuple[str, str]], meta: dict[str, Any] | None,
        actor: str = "unipgen",
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
        if kind == "adapter":
            _check_training(w.session, user, user_id, key, derived_from)
            w.session.add(_training_entry(tenant_id, actor, user, key, derived_from, meta or {}))
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

    def protected_copies(self, tenant: str, user: str, kind: str, key: str) -> dict[int, ArtifactRecord]:
        """The newest protected copy (an artifact of kind ``protected``) of each photo of `user`'s
        face or subject (`kind`) `key`, by the photo's position; empty when it was never protected."""
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            _, source_id = resolve(session, tenant, tenant_id, user_id_of(session, tenant, user), kind, key)
            rows = session.scalars(
                select(Artifact).join(Lineage, (Lineage.derived_kind == "artifact") & (Lineage.derived_id == Artifact.id))
                .where(Artifact.kind == PROTECTED, Lineage.source_kind == kind, Lineage.source_id == source_id)
                .order_by(Artifact.created_at, Artifact.id)).all()
            return {int((a.meta or {}).get("position", 0)): ArtifactRecord(
                a.key, a.kind, a.media_type, a.blob_sha, a.meta, [(kind, key)]) for a in rows}


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


def _check_training(session: Any, user: str | None, user_id: int | None, key: str,
                    derived_from: Sequence[tuple[str, str]]) -> None:
    """Refuse an adapter learned from the user's faces or subjects without their consent to training."""
    kinds = sorted({kind for kind, _ in derived_from if kind in CONSENTED_SOURCES})
    if not kinds or user_id is None:
        return
    if session.scalar(select(User.training_consent_at).where(User.id == user_id)) is None:
        raise ConsentRequiredError(
            f"user {user!r} has not consented to training: adapter {key!r} learned from their "
            f"{' and '.join(k + 's' for k in kinds)}; record the user's consent to training first "
            "(`unipgen users consent USER --training`, PUT /v1/users/{user}/training-consent)")


def _training_entry(tenant_id: int, actor: str, user: str | None, key: str, derived_from: Sequence[tuple[str, str]],
                    meta: dict[str, Any]) -> Any:
    """The audit entry of a training: the adapter, how it was trained, what it learned from (the
    faces and subjects by key, other sources counted), ids only."""
    counts: dict[str, int] = {}
    for kind, _ in derived_from:
        counts[kind] = counts.get(kind, 0) + 1
    detail = {"method": meta.get("method"), "modality": meta.get("modality"), "job": meta.get("job"),
              "sources": counts,
              "consented": sorted(f"{kind}:{source}" for kind, source in derived_from if kind in CONSENTED_SOURCES)}
    return audit_entry(tenant_id, actor, "trained_adapter", user=user, object_kind="artifact", object_key=key,
                       detail={name: value for name, value in detail.items() if value})


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
