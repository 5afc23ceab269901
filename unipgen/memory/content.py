"""`store.content`: what a user brings (documents, face photos, voice samples, personal
subjects) with their files, and the embeddings of every memory item with vector search over them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError, InvalidInputError, NotFoundError
from unipgen.memory.embeddings import Hit, put_embeddings, search
from unipgen.memory.indexes import IndexManager
from unipgen.memory.lookups import (
    OWNER_MODELS,
    add_lineage,
    check_key,
    owner_users,
    resolve_all,
    tenant_id_of,
    tenant_of,
    user_id_of,
)
from unipgen.memory.media import (
    MediaLimits,
    check_document_length,
    check_size,
    image_header,
    sniff_audio,
    sniff_image,
)
from unipgen.memory.models import (
    Blob,
    Document,
    Embedding,
    EmbeddingSpace,
    Face,
    Subject,
    SubjectImage,
    VoiceSample,
    utcnow,
)
from unipgen.memory.parsing import parse_rows, refuse_duplicates
from unipgen.memory.transaction import Database
from unipgen.schema.memory import DocumentIn


@dataclass(frozen=True)
class SubjectRecord:
    """A personal subject (a pet, a bag) as stored: its reference images by blob sha256, in order."""

    key: str
    name: str
    class_noun: str
    image_shas: list[str]


class Content:
    """A user's documents, faces, voices and subjects (each write one transaction with its blobs
    and embedding), their files, and the embeddings of every memory item with search over them.

    Limits: `max_blob_bytes` per file, `media_limits` on decoded media, `max_document_chars` per
    document.
    """

    def __init__(self, db: Database, indexes: IndexManager, max_blob_bytes: int, media_limits: MediaLimits,
                 max_document_chars: int = 100_000) -> None:
        self.db = db
        self.indexes = indexes
        self.max_blob_bytes = max_blob_bytes
        self.media_limits = media_limits
        self.max_document_chars = max_document_chars

    # -- documents, faces, subjects, voices ----------------------------------------------------

    def add_document(
        self, tenant: str, user: str, key: str, text: str, *,
        kind: str = "note", ts: datetime | None = None, meta: dict[str, Any] | None = None,
    ) -> None:
        """One text the user wrote (a review, a post); see `add_documents` for many."""
        # A dict, not a DocumentIn: `add_documents` turns a bad field into an InvalidInputError.
        self.add_documents(tenant, user, [{"key": key, "text": text, "kind": kind, "ts": ts, "meta": meta}])

    def add_documents(
        self, tenant: str, user: str, documents: Sequence[DocumentIn | dict[str, Any]], *,
        vectors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        derived_from: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    ) -> int:
        """Add a user's documents in one transaction (all or none); returns how many.

        `vectors` ({space: {document key: vector}}) stores their embeddings in the same
        transaction. `derived_from` ({document key: [(kind, key)...]}) records the lineage of a
        document made from memory (a chat reply): forgetting a source forgets it too.
        """
        parsed = parse_rows(documents, DocumentIn, "document")
        check_document_length(parsed, self.max_document_chars)
        refuse_duplicates([d.key for d in parsed], "document")
        with self.db.write() as w:
            user_id = user_id_of(w.session, tenant, user)
            taken = w.session.scalars(select(Document.key).where(
                Document.user_id == user_id, Document.key.in_([d.key for d in parsed]))).first()
            if taken is not None:
                raise ConflictError(f"document {taken!r} already exists for this user")
            now = utcnow()
            rows = [Document(user_id=user_id, key=d.key, kind=d.kind, text=d.text, ts=d.ts or now, meta=d.meta)
                    for d in parsed]
            w.session.add_all(rows)
            if derived_from:
                w.session.flush()
                add_lineage(w.session, tenant, user_id, "document", {d.key: d.id for d in rows}, derived_from)
            if vectors:
                w.session.flush()
                tenant_id = tenant_of(w.session, user_id)
                by_key = {d.key: d.id for d in rows}
                for space, vectors_by_key in vectors.items():
                    unknown = set(vectors_by_key) - set(by_key)
                    if unknown:
                        raise InvalidInputError(f"vector given for document {min(unknown)!r}, not in the request")
                    put_embeddings(w, self.indexes, tenant_id, space,
                                   [(by_key[k], user_id, v) for k, v in vectors_by_key.items()], "document")
        return len(parsed)

    def documents(self, tenant: str, user: str, kind: str | None = None) -> list[DocumentIn]:
        """A user's documents (of one `kind` when given), oldest first."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            query = select(Document).where(Document.user_id == user_id)
            if kind is not None:
                query = query.where(Document.kind == kind)
            rows = session.scalars(query.order_by(Document.ts, Document.id))
            # Not validated again: a row stored before the id rule must still be listed, to be found.
            return [DocumentIn.model_construct(key=d.key, text=d.text, kind=d.kind, ts=d.ts, meta=d.meta)
                    for d in rows]

    def count_documents(self, tenant: str, user: str, kind: str) -> int:
        """How many documents of `kind` the user has (a conversation's next turn number)."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            return session.scalar(select(func.count()).select_from(Document).where(
                Document.user_id == user_id, Document.kind == kind)) or 0

    def add_face(
        self, tenant: str, user: str, key: str, image: bytes, *,
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
        self, tenant: str, user: str, key: str, *, name: str, class_noun: str,
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
        with self.db.write() as w:
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
                tenant_id = tenant_of(w.session, user_id)
                put_embeddings(w, self.indexes, tenant_id, space, [(subject.id, user_id, embedding)], "subject")

    def add_voice(
        self, tenant: str, user: str, key: str, audio: bytes, *,
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
        self, tenant: str, user: str, row: Face | VoiceSample, data: bytes, media_type: str,
        embedding: np.ndarray | None, space: tuple[str, str],
    ) -> None:
        """Write a face or voice row (consent already checked), its blob and its embedding at once."""
        kind = "face" if isinstance(row, Face) else "voice"
        with self.db.write() as w:
            row.user_id = user_id_of(w.session, tenant, user)
            _refuse_existing(w.session, type(row), row.user_id, row.key, kind)
            row.blob_sha, row.consent = w.put_blob(data, media_type), True
            w.session.add(row)
            if embedding is not None:
                w.session.flush()
                tenant_id = tenant_of(w.session, row.user_id)
                put_embeddings(w, self.indexes, tenant_id, space[0], [(row.id, row.user_id, embedding)], kind,
                               metric=space[1])

    def subjects(self, tenant: str, user: str) -> list[SubjectRecord]:
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            rows = session.scalars(select(Subject).where(Subject.user_id == user_id).order_by(Subject.key))
            return [SubjectRecord(s.key, s.name, s.class_noun, [i.blob_sha for i in s.images]) for s in rows]

    def media(self, tenant: str, user: str, kind: str) -> list[tuple[str, str]]:
        """(key, media type) of a user's face photos (`kind` ``face``) or voice samples (``voice``)."""
        model = OWNER_MODELS[kind][0]  # Face or VoiceSample
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            return [(key, media_type) for key, media_type in session.execute(
                select(model.key, Blob.media_type).join(Blob, Blob.sha256 == model.blob_sha)
                .where(model.user_id == user_id).order_by(model.key))]

    def media_blob(self, tenant: str, user: str, kind: str, key: str) -> tuple[bytes, str]:
        """The bytes and media type of one face photo or voice sample."""
        model = OWNER_MODELS[kind][0]  # Face or VoiceSample
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            found = session.execute(select(model.blob_sha, Blob.media_type).join(Blob, Blob.sha256 == model.blob_sha)
                                    .where(model.user_id == user_id, model.key == key)).first()
        if found is None:
            raise NotFoundError(f"unknown {kind} {key!r} of user {user!r}")
        return self.db.blobs.get(found[0]), found[1]

    def subject_photo(self, tenant: str, user: str, key: str, position: int) -> tuple[bytes, str]:
        """The bytes and media type of a subject's reference photo at `position` (from 0)."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            subject_id = session.scalar(select(Subject.id).where(Subject.user_id == user_id, Subject.key == key))
            if subject_id is None:
                raise NotFoundError(f"unknown subject {key!r} of user {user!r}")
            found = session.execute(select(SubjectImage.blob_sha, Blob.media_type)
                                    .join(Blob, Blob.sha256 == SubjectImage.blob_sha)
                                    .where(SubjectImage.subject_id == subject_id, SubjectImage.position == position)).first()
        if found is None:
            raise NotFoundError(f"subject {key!r} of user {user!r} has no photo {position}")
        return self.db.blobs.get(found[0]), found[1]

    # -- embeddings and search -------------------------------------------------------------------

    def add_embeddings(
        self, tenant: str, space: str, kind: str,
        vectors: Sequence[tuple[str, np.ndarray]], *, user: str | None = None, metric: str = "ip",
    ) -> None:
        """Store one vector per memory item of `kind` in `space`, replacing any it had there.

        The first vectors written to a space fix its dimension and metric (``ip``: inner
        product, callers L2-normalise for cosine; ``l2``: squared distance).
        """
        vectors = list(vectors)  # read twice below
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            user_id = user_id_of(w.session, tenant, user) if user is not None else None
            owner_ids = [row_id for _, row_id in resolve_all(w.session, tenant, tenant_id, user_id,
                                                               [(kind, key) for key, _ in vectors])]
            owners = owner_users(w.session, kind, owner_ids)
            rows = [(owner_id, owners[owner_id], vector) for owner_id, (_, vector) in zip(owner_ids, vectors, strict=True)]
            put_embeddings(w, self.indexes, tenant_id, space, rows, kind, metric=metric)

    def search(self, tenant: str, space: str, query: np.ndarray, k: int = 10, *, user: str | None = None) -> list[Hit]:
        """Top-k memory items nearest `query`: among `user`'s items only, or in the catalog.

        Scores follow the space's metric: inner product (cosine for unit vectors, higher is
        nearer) in an ``ip`` space, squared Euclidean distance (lower is nearer) in an ``l2`` one.
        """
        return search(self.db.engine, self.indexes, tenant, space, query, k, user)

    def vectors(
        self, tenant: str, space: str, kind: str, keys: Sequence[str] | None = None, *, user: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Stored vectors of `kind` items in `space` by key: a user's (with `user`), else the catalog's."""
        model, per_user = OWNER_MODELS[kind]
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            query = (select(model.key, Embedding.vector)
                     .join(Embedding, (Embedding.owner_kind == kind) & (Embedding.owner_id == model.id))
                     .where(Embedding.tenant_id == tenant_id, Embedding.space == space))
            if user is not None and per_user:
                query = query.where(Embedding.user_id == user_id_of(session, tenant, user))
            if keys is not None:
                query = query.where(model.key.in_(list(keys)))
            return {key: np.frombuffer(blob, dtype=np.float32) for key, blob in session.execute(query)}

    def spaces(self, tenant: str) -> dict[str, tuple[int, str]]:
        """The tenant's embedding spaces: name → (dimension, metric)."""
        with self.db.session() as session:
            rows = session.execute(select(EmbeddingSpace.name, EmbeddingSpace.dim, EmbeddingSpace.metric).where(
                EmbeddingSpace.tenant_id == tenant_id_of(session, tenant)))
            return {name: (dim, metric) for name, dim, metric in rows}


def _refuse_existing(session: Session, model: Any, user_id: int, key: str, what: str) -> None:
    if session.scalar(select(model.id).where(model.user_id == user_id, model.key == key)) is not None:
        raise ConflictError(f"{what} {key!r} already exists for this user")


def require_consent(consent: bool, what: str) -> None:
    """Biometric data (faces, voices) is neither processed nor stored without the user's consent."""
    if consent is not True:
        raise InvalidInputError(f"{what} is biometric data: it needs consent=True from the user")
