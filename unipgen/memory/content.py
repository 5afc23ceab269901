"""What a user brings and what unipgen derives: documents, faces, subjects, voice samples,
artifacts with their lineage, and embeddings with vector search."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, bindparam, delete, select, update
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError, InvalidInputError, NotFoundError
from unipgen.memory.lookups import check_key, tenant_id_of, user_id_of
from unipgen.memory.media import (
    check_document_length,
    check_size,
    image_header,
    sniff_audio,
    sniff_image,
)
from unipgen.memory.models import (
    Artifact,
    Document,
    Embedding,
    EmbeddingSpace,
    Face,
    Item,
    Lineage,
    Subject,
    SubjectImage,
    Tenant,
    User,
    VoiceSample,
    utcnow,
)
from unipgen.memory.parsing import parse_rows, refuse_duplicates
from unipgen.schema.memory import DocumentIn

if TYPE_CHECKING:
    from unipgen.memory.store import MemoryStore, _Write

#: Row model of each kind of memory item, and whether its key is unique per user or per tenant.
OWNER_MODELS: dict[str, tuple[Any, bool]] = {
    "item": (Item, False),
    "artifact": (Artifact, False),
    "document": (Document, True),
    "face": (Face, True),
    "subject": (Subject, True),
    "voice": (VoiceSample, True),
}


@dataclass(frozen=True)
class Hit:
    """One search result: the memory item a vector belongs to, and its score under the space's metric."""

    kind: str
    key: str
    score: float


class ContentMixin:
    # -- documents, faces, subjects, voices ----------------------------------------------------

    def add_document(
        self: MemoryStore, tenant: str, user: str, key: str, text: str, *,
        kind: str = "note", ts: datetime | None = None, meta: dict[str, Any] | None = None,
    ) -> None:
        """One text the user wrote (a review, a post); see `add_documents` for many."""
        # A dict, not a DocumentIn: `add_documents` turns a bad field into an InvalidInputError.
        self.add_documents(tenant, user, [{"key": key, "text": text, "kind": kind, "ts": ts, "meta": meta}])

    def add_documents(
        self: MemoryStore, tenant: str, user: str, documents: Sequence[DocumentIn | dict[str, Any]], *,
        vectors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> int:
        """Add a user's documents in one transaction (all or none); returns how many.

        `vectors` ({space: {document key: vector}}) stores their embeddings in the same
        transaction.
        """
        parsed = parse_rows(documents, DocumentIn, "document")
        check_document_length(parsed, self.max_document_chars)
        refuse_duplicates([d.key for d in parsed], "document")
        with self._write() as w:
            user_id = user_id_of(w.session, tenant, user)
            taken = w.session.scalars(select(Document.key).where(
                Document.user_id == user_id, Document.key.in_([d.key for d in parsed]))).first()
            if taken is not None:
                raise ConflictError(f"document {taken!r} already exists for this user")
            now = utcnow()
            rows = [Document(user_id=user_id, key=d.key, kind=d.kind, text=d.text, ts=d.ts or now, meta=d.meta)
                    for d in parsed]
            w.session.add_all(rows)
            if vectors:
                w.session.flush()
                tenant_id = _tenant_of(w.session, user_id)
                by_key = {d.key: d.id for d in rows}
                for space, vectors_by_key in vectors.items():
                    unknown = set(vectors_by_key) - set(by_key)
                    if unknown:
                        raise InvalidInputError(f"vector given for document {min(unknown)!r}, not in the request")
                    self._put_embeddings(w, tenant_id, space, [(by_key[k], user_id, v) for k, v in
                                                               vectors_by_key.items()], "document")
        return len(parsed)

    def documents(self: MemoryStore, tenant: str, user: str) -> list[DocumentIn]:
        """A user's documents, oldest first."""
        with self.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(select(Document).where(Document.user_id == user_id)
                                   .order_by(Document.ts, Document.id))
            # Not validated again: a row stored before the id rule must still be listed, to be found.
            return [DocumentIn.model_construct(key=d.key, text=d.text, kind=d.kind, ts=d.ts, meta=d.meta)
                    for d in rows]

    def add_face(
        self: MemoryStore, tenant: str, user: str, key: str, image: bytes, *,
        consent: bool, embedding: np.ndarray | None = None, space: str = "face", metric: str = "l2",
        decoded: bool = False,
    ) -> None:
        """Store a face photo (biometric: needs the user's consent) and its identity embedding
        (compared by Euclidean distance by default, as dlib descriptors are). `decoded`: the
        caller's encoder decoded the photo already, so only its header is checked here (a second
        full decode would cost the service process up to 160 MB for a 40 M pixel photo)."""
        check_key(key, "face")
        require_consent(consent, f"face {key!r}")
        check_size(image, self.max_blob_bytes, f"face {key!r}")
        media_type = (image_header if decoded else sniff_image)(image, f"face {key!r}", self.media_limits)
        self._add_biometric(tenant, user, Face(key=key), image, media_type, embedding, (space, metric))

    def add_subject(
        self: MemoryStore, tenant: str, user: str, key: str, *, name: str, class_noun: str,
        images: Sequence[bytes], embedding: np.ndarray | None = None, space: str = "image",
        decoded: bool = False,
    ) -> None:
        """A personal subject (a pet, a bag) with its reference images, in order, and optionally
        one embedding of it (e.g. the mean CLIP vector of its images). `decoded`: as in `add_face`."""
        check = image_header if decoded else sniff_image
        check_key(key, "subject")
        if not images:
            raise InvalidInputError(f"subject {key!r} needs at least one reference image")
        media = []
        for position, image in enumerate(images):
            check_size(image, self.max_blob_bytes, f"image {position} of subject {key!r}")
            media.append(check(image, f"image {position} of subject {key!r}", self.media_limits))
        with self._write() as w:
            user_id = user_id_of(w.session, tenant, user)
            _refuse_existing(w.session, Subject, user_id, key, "subject")
            subject = Subject(user_id=user_id, key=key, name=name, class_noun=class_noun)
            subject.images = [
                SubjectImage(position=p, blob_sha=w.put_blob(image, media[p]))
                for p, image in enumerate(images)
            ]
            w.session.add(subject)
            if embedding is not None:
                w.session.flush()
                tenant_id = _tenant_of(w.session, user_id)
                self._put_embeddings(w, tenant_id, space, [(subject.id, user_id, embedding)], "subject")

    def add_voice(
        self: MemoryStore, tenant: str, user: str, key: str, audio: bytes, *,
        consent: bool, embedding: np.ndarray | None = None, space: str = "voice", metric: str = "ip",
    ) -> None:
        """Store a voice sample (biometric: needs consent) and its speaker embedding."""
        check_key(key, "voice sample")
        require_consent(consent, f"voice sample {key!r}")
        check_size(audio, self.max_blob_bytes, f"voice sample {key!r}")
        info = sniff_audio(audio, f"voice sample {key!r}", self.media_limits)
        row = VoiceSample(key=key, duration_s=info.duration_s, sample_rate=info.sample_rate)
        self._add_biometric(tenant, user, row, audio, info.media_type, embedding, (space, metric))

    def _add_biometric(
        self: MemoryStore, tenant: str, user: str, row: Face | VoiceSample, data: bytes, media_type: str,
        embedding: np.ndarray | None, space: tuple[str, str],
    ) -> None:
        """Write a face or voice row (consent already checked), its blob and its embedding at once."""
        kind = "face" if isinstance(row, Face) else "voice"
        with self._write() as w:
            row.user_id = user_id_of(w.session, tenant, user)
            _refuse_existing(w.session, type(row), row.user_id, row.key, kind)
            row.blob_sha, row.consent = w.put_blob(data, media_type), True
            w.session.add(row)
            if embedding is not None:
                w.session.flush()
                tenant_id = _tenant_of(w.session, row.user_id)
                self._put_embeddings(w, tenant_id, space[0], [(row.id, row.user_id, embedding)], kind,
                                     metric=space[1])

    # -- artifacts and lineage -------------------------------------------------------------------

    def add_artifact(
        self: MemoryStore, tenant: str, key: str, *, kind: str, media_type: str,
        data: bytes | None = None, user: str | None = None,
        derived_from: Sequence[tuple[str, str]] = (), meta: dict[str, Any] | None = None,
    ) -> None:
        """Record something unipgen derived (an output, an adapter) and what it was derived from.

        `derived_from` lists (kind, key) pairs: kinds of `OWNER_MODELS`, or ``("user", key)``
        for data derived from the user's whole history. User-owned kinds resolve in `user`.
        """
        with self._write() as w:
            self._insert_artifact(w, tenant, key, kind=kind, media_type=media_type, data=data, user=user,
                                  derived_from=derived_from, meta=meta)

    def _insert_artifact(
        self: MemoryStore, w: _Write, tenant: str, key: str, *, kind: str, media_type: str,
        data: bytes | None, user: str | None, derived_from: Sequence[tuple[str, str]], meta: dict[str, Any] | None,
    ) -> None:
        """`add_artifact` inside an open write (a job stores its outputs and its end together)."""
        check_key(key, "artifact")
        if data is not None:
            check_size(data, self.max_blob_bytes, f"artifact {key!r}", allow_empty=True)  # a model may say nothing
        tenant_id = tenant_id_of(w.session, tenant)
        user_id = user_id_of(w.session, tenant, user) if user is not None else None
        if w.session.scalar(select(Artifact.id).where(Artifact.tenant_id == tenant_id, Artifact.key == key)):
            raise ConflictError(f"artifact {key!r} already exists in {tenant!r}")
        sources = self._resolve_all(w.session, tenant, tenant_id, user_id, derived_from)
        blob_sha = w.put_blob(data, media_type) if data is not None else None
        artifact = Artifact(tenant_id=tenant_id, user_id=user_id, key=key, kind=kind,
                            media_type=media_type, blob_sha=blob_sha, meta=meta)
        w.session.add(artifact)
        w.session.flush()
        w.session.add_all(
            Lineage(tenant_id=tenant_id, derived_kind="artifact", derived_id=artifact.id,
                    source_kind=k, source_id=i) for k, i in dict.fromkeys(sources)
        )

    def _resolve_all(
        self: MemoryStore, session: Session, tenant: str, tenant_id: int, user_id: int | None,
        pairs: Sequence[tuple[str, str]],
    ) -> list[tuple[str, int]]:
        """`_resolve` for many (kind, key) pairs: one query per kind, not per pair."""
        by_kind: dict[str, set[str]] = {}
        for kind, key in pairs:
            by_kind.setdefault(kind, set()).add(key)
        found: dict[tuple[str, str], int] = {}
        for kind, keys in by_kind.items():
            if kind == "user" or kind not in OWNER_MODELS or len(keys) == 1:
                found.update({(kind, key): self._resolve(session, tenant, tenant_id, user_id, kind, key)[1]
                              for key in keys})
                continue
            model, per_user = OWNER_MODELS[kind]
            if per_user and user_id is None:
                raise InvalidInputError(f"{kind} {min(keys)!r} belongs to a user: name the user")
            scope = model.user_id == user_id if per_user else model.tenant_id == tenant_id
            ids = dict(session.execute(select(model.key, model.id).where(scope, model.key.in_(keys))).all())
            missing = sorted(keys - ids.keys())
            if missing:
                raise NotFoundError(f"unknown {kind} {missing[0]!r}")
            found.update({(kind, key): row_id for key, row_id in ids.items()})
        return [(kind, found[(kind, key)]) for kind, key in pairs]

    def _resolve(
        self: MemoryStore, session: Session, tenant: str, tenant_id: int, user_id: int | None,
        kind: str, key: str,
    ) -> tuple[str, int]:
        """(kind, row id) of a memory item named by kind and public key."""
        if kind == "user":
            return kind, user_id_of(session, tenant, key)
        if kind not in OWNER_MODELS:
            raise InvalidInputError(f"unknown kind {kind!r}; expected 'user' or one of {sorted(OWNER_MODELS)}")
        model, per_user = OWNER_MODELS[kind]
        if per_user and user_id is None:
            raise InvalidInputError(f"{kind} {key!r} belongs to a user: name the user")
        scope = model.user_id == user_id if per_user else model.tenant_id == tenant_id
        row_id = session.scalar(select(model.id).where(scope, model.key == key))
        if row_id is None:
            raise NotFoundError(f"unknown {kind} {key!r}")
        return kind, row_id

    def artifact_blob(self: MemoryStore, tenant: str, key: str) -> tuple[bytes, str]:
        """The bytes and media type of an artifact."""
        with self.session() as session:
            artifact = session.scalar(
                select(Artifact).where(Artifact.tenant_id == tenant_id_of(session, tenant), Artifact.key == key)
            )
            if artifact is None or artifact.blob_sha is None:
                raise NotFoundError(f"unknown artifact {key!r} (or it has no file)")
            return self.blobs.get(artifact.blob_sha), artifact.media_type

    # -- embeddings and search -------------------------------------------------------------------

    def add_embeddings(
        self: MemoryStore, tenant: str, space: str, kind: str,
        vectors: Sequence[tuple[str, np.ndarray]], *, user: str | None = None, metric: str = "ip",
    ) -> None:
        """Store one vector per memory item of `kind` in `space`, replacing any it had there.

        The first vectors written to a space fix its dimension and metric (``ip``: inner
        product, callers L2-normalise for cosine; ``l2``: squared distance).
        """
        with self._write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            user_id = user_id_of(w.session, tenant, user) if user is not None else None
            rows = []
            for key, vector in vectors:
                _, owner_id = self._resolve(w.session, tenant, tenant_id, user_id, kind, key)
                rows.append((owner_id, _owner_user(w.session, kind, owner_id), vector))
            self._put_embeddings(w, tenant_id, space, rows, kind, metric=metric)

    def _put_embeddings(
        self: MemoryStore, w: _Write, tenant_id: int, space: str,
        rows: Sequence[tuple[int, int | None, np.ndarray]], kind: str, *, metric: str = "ip",
    ) -> None:
        matrix = _as_matrix([r[2] for r in rows], space)
        space_row = _space(w.session, tenant_id, space, matrix.shape[1], metric)
        before = space_row.generation
        owner_ids = [r[0] for r in rows]
        removed = np.array(list(w.session.scalars(
            select(Embedding.id).where(Embedding.tenant_id == tenant_id, Embedding.space == space,
                                       Embedding.owner_kind == kind, Embedding.owner_id.in_(owner_ids))
        )), dtype=np.int64)
        if len(removed):
            w.session.execute(delete(Embedding).where(Embedding.id.in_(removed.tolist())))
        objects = [Embedding(tenant_id=tenant_id, space=space, user_id=u, owner_kind=kind,
                             owner_id=o, vector=matrix[i].tobytes()) for i, (o, u, _) in enumerate(rows)]
        w.session.add_all(objects)
        space_row.generation = before + 1
        w.session.flush()
        ids = np.array([e.id for e in objects], dtype=np.int64)
        users = np.array([-1 if u is None else u for _, u, _ in rows], dtype=np.int64)
        w.after_commit.append(lambda: self.indexes.apply(
            tenant_id, space, before, before + 1, added=(ids, users, matrix), removed=removed))

    def search(
        self: MemoryStore, tenant: str, space: str, query: np.ndarray, k: int = 10, *,
        user: str | None = None,
    ) -> list[Hit]:
        """Top-k memory items nearest `query`: among `user`'s items only, or in the catalog.

        Scores follow the space's metric: inner product (cosine for unit vectors, higher is
        nearer) in an ``ip`` space, squared Euclidean distance (lower is nearer) in an ``l2`` one.

        A hot path: a few Core queries on one connection, no ORM objects.
        """
        with self.engine.connect() as conn:
            tenant_id, user_id, dim, generation = _search_target(conn, tenant, user, space)
            query = _as_matrix([query], space)[0]
            if query.shape[0] != dim:
                raise InvalidInputError(f"query has dimension {query.shape[0]}, space {space!r} has {dim}")
            index = self.indexes.get(tenant_id, space, generation)
            if user_id is None:
                ids, scores = index.search_global(query, k)
            else:
                ids, scores = index.search_user(user_id, query, k)
            return _hits(conn, ids, scores)


@functools.cache
def lookup_statements() -> dict[str, Any]:
    """The search path's statements, built once with bind parameters (building costs more than running)."""
    def of_space(column: Any) -> Any:
        return select(column).where(EmbeddingSpace.tenant_id == Tenant.id,
                                    EmbeddingSpace.name == bindparam("space")).scalar_subquery()

    user_id = select(User.id).where(User.tenant_id == Tenant.id, User.key == bindparam("user")).scalar_subquery()
    ids = bindparam("ids", expanding=True)
    statements = {
        "target": select(Tenant.id, user_id, of_space(EmbeddingSpace.dim), of_space(EmbeddingSpace.generation))
        .where(Tenant.key == bindparam("tenant")),
        "owners": select(Embedding.id, Embedding.owner_kind, Embedding.owner_id).where(Embedding.id.in_(ids)),
    }
    for kind, (model, _) in OWNER_MODELS.items():
        statements[kind] = select(model.id, model.key).where(model.id.in_(ids))
    return statements


def _search_target(conn: Connection, tenant: str, user: str | None, space: str) -> tuple[int, int | None, int, int]:
    """Tenant id, user id, space dimension and generation in one query; unknown ones are named."""
    row = conn.execute(lookup_statements()["target"], {"tenant": tenant, "user": user, "space": space}).first()
    if row is None:
        raise NotFoundError(f"unknown tenant {tenant!r}")
    if user is not None and row[1] is None:
        raise NotFoundError(f"unknown user {user!r} in tenant {tenant!r}")
    if row[2] is None:
        raise NotFoundError(f"no embedding space {space!r} in tenant {tenant!r}")
    return row[0], row[1], row[2], row[3]


def _hits(conn: Connection, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
    """Map embedding ids to the (kind, key) of the items they were derived from."""
    statements = lookup_statements()
    owners = {e: (kind, o) for e, kind, o in conn.execute(statements["owners"], {"ids": ids.tolist()})}
    keys: dict[tuple[str, int], str] = {}
    for kind in {kind for kind, _ in owners.values()}:
        wanted = [owner_id for k, owner_id in owners.values() if k == kind]
        keys.update({(kind, o): key for o, key in conn.execute(statements[kind], {"ids": wanted})})
    return [Hit(owners[i][0], keys[owners[i]], float(s)) for i, s in zip(ids.tolist(), scores.tolist())
            if i in owners]


def _as_matrix(vectors: Sequence[np.ndarray], space: str) -> np.ndarray:
    try:
        matrix = np.asarray(np.stack([np.asarray(v, dtype=np.float32).ravel() for v in vectors]))
    except ValueError as exc:
        raise InvalidInputError(f"vectors for space {space!r} differ in dimension: {exc}") from None
    if not np.isfinite(matrix).all():
        raise InvalidInputError(f"vectors for space {space!r} contain NaN or infinity")
    return matrix


def _space(session: Session, tenant_id: int, name: str, dim: int, metric: str) -> EmbeddingSpace:
    if metric not in ("ip", "l2"):
        raise InvalidInputError(f"unknown metric {metric!r}; expected 'ip' or 'l2'")
    row = session.get(EmbeddingSpace, (tenant_id, name), with_for_update=True)
    if row is None:
        row = EmbeddingSpace(tenant_id=tenant_id, name=name, dim=dim, metric=metric, generation=0)
        session.add(row)
    elif row.dim != dim:
        raise InvalidInputError(f"embedding has dimension {dim}, but space {name!r} holds {row.dim}-d vectors")
    elif row.metric != metric:
        raise InvalidInputError(f"space {name!r} uses metric {row.metric!r}, not {metric!r}")
    return row


def bump_generation(session: Session, tenant_id: int, spaces: Sequence[str]) -> dict[str, int]:
    """Mark spaces changed (inside the caller's transaction); returns each one's generation before."""
    before = {}
    for name in spaces:
        row = session.get(EmbeddingSpace, (tenant_id, name), with_for_update=True)
        if row is not None:
            before[name] = row.generation
            session.execute(update(EmbeddingSpace).where(EmbeddingSpace.tenant_id == tenant_id,
                            EmbeddingSpace.name == name).values(generation=row.generation + 1))
    return before


def _owner_user(session: Session, kind: str, owner_id: int) -> int | None:
    """The user a memory item belongs to (None for catalog items)."""
    if kind == "item":
        return None
    model = OWNER_MODELS[kind][0]
    return session.scalar(select(model.user_id).where(model.id == owner_id))


def _tenant_of(session: Session, user_id: int) -> int:
    return session.scalar(select(User.tenant_id).where(User.id == user_id))  # type: ignore[return-value]


def _refuse_existing(session: Session, model: Any, user_id: int, key: str, what: str) -> None:
    if session.scalar(select(model.id).where(model.user_id == user_id, model.key == key)) is not None:
        raise ConflictError(f"{what} {key!r} already exists for this user")


def require_consent(consent: bool, what: str) -> None:
    """Biometric data (faces, voices) is neither processed nor stored without the user's consent."""
    if consent is not True:
        raise InvalidInputError(f"{what} is biometric data: it needs consent=True from the user")
