"""`UserModel`: the store plus encoders. Writes embed on the way in; reads build contexts.

Each write encodes first and then stores rows and vectors in one transaction, so a file the
encoder refuses (no face in the photo, audio too short) leaves nothing behind. Given an
`EncoderPool` (the service does), uploaded files are encoded in its child process, where a native
crash of a decoder costs the request and not the process; library use encodes in-process. Encoders come
from a model profile (`tiny`, `cpu`, `gpu`) and load on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.behavior_space import (
    BEHAVIOR_SPACE,
    FitConfig,
    fit_config_for,
    fit_inputs,
    place_items,
    run_fit,
)
from unipgen.core.context import ContextBuilder, ContextConfig
from unipgen.core.encoderpool import EncoderPool
from unipgen.core.encoders import Encoders
from unipgen.core.router import route
from unipgen.memory import MemoryStore
from unipgen.memory.content import require_consent
from unipgen.memory.media import check_document_length, image_header, sniff_audio
from unipgen.memory.parsing import parse_rows
from unipgen.schema.context import Modality, PersonalizationPlan, Recommendations, UserContext
from unipgen.schema.memory import DocumentIn, FitRecord, ItemIn
from unipgen.schema.messages import MESSAGE_KIND, MessageIn, indexed_text, message_of
from unipgen.schema.profiles import ModelProfile, load_profile


class UserModel:
    """Personal memory in, `UserContext` and `PersonalizationPlan` out."""

    def __init__(self, store: MemoryStore, profile: str | ModelProfile = "tiny", *,
                 config: ContextConfig | None = None, cache_dir: Path | None = None,
                 pool: EncoderPool | None = None) -> None:
        self.store = store
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.encoders = Encoders(self.profile)
        self.pool = pool  # when given, uploaded files are encoded in its child process
        self.builder = ContextBuilder(store, self.encoders, config, cache_dir)
        # tenant -> its catalog's stamp when no item lacked a text vector (`embed_catalog` skips the scan)
        self._catalog_complete: dict[str, tuple[int, int | None]] = {}

    # -- writes that embed ----------------------------------------------------------------------

    def add_items(self, tenant: str, items: Sequence[ItemIn | dict[str, Any]], *, exist_ok: bool = False) -> int:
        """Catalog items with their text vectors (space ``text``) and, for items with an image,
        CLIP image vectors (space ``image``)."""
        parsed = parse_rows(items, ItemIn, "item")
        keys = [i.key for i in parsed]
        pictured = [i for i in parsed if i.image is not None]
        self._check_headers("image", [i.image for i in pictured], [f"image of item {i.key!r}" for i in pictured])
        texts = self.encoders.text.encode([i.text for i in parsed])
        vectors = {"text": dict(zip(keys, texts))}
        placed = self.store.fits.fit_mapping(tenant)
        if placed is not None:  # a tenant with a fit: new items can be recommended at once
            vectors[BEHAVIOR_SPACE] = _placed(placed, keys, texts)
        if pictured:
            what = f"the images of items {[i.key for i in pictured][:3]}"
            images = self._encode("image", [i.image for i in pictured], what)
            vectors["image"] = dict(zip([i.key for i in pictured], images))
        return self.store.catalog.add_items(tenant, parsed, exist_ok=exist_ok, vectors=vectors, decoded=bool(pictured))

    def embed_catalog(self, tenant: str, batch_size: int = 512) -> int:
        """Text vectors for catalog items that have none yet (after a bulk load), and their place
        in the fitted behavior space when the tenant has a fit; returns how many. Cheap when the
        catalog has not changed since it was found complete (every generation job calls it)."""
        stamp = self.store.catalog.catalog_stamp(tenant)
        if self._catalog_complete.get(tenant) == stamp:
            return 0
        todo = self.store.catalog.keys_without_vector(tenant, "text", "item")
        if not todo:  # read before the scan: an item added meanwhile changes the stamp
            self._catalog_complete[tenant] = stamp
        texts = self.store.catalog.item_texts(tenant, todo) if todo else {}
        placed = self.store.fits.fit_mapping(tenant) if todo else None
        for start in range(0, len(todo), batch_size):
            keys = todo[start : start + batch_size]
            vectors = self.encoders.text.encode([texts[k] for k in keys])
            self.store.content.add_embeddings(tenant, "text", "item", list(zip(keys, vectors)))
            if placed is not None:
                self.store.content.add_embeddings(tenant, BEHAVIOR_SPACE, "item", list(_placed(placed, keys, vectors).items()))
        return len(todo)

    def embed_documents(self, tenant: str, user: str) -> int:
        """Text vectors for a user's documents that have none yet (after a bulk load)."""
        missing = set(self.store.catalog.keys_without_vector(tenant, "text", "document", user=user))
        todo = [d for d in self.store.content.documents(tenant, user) if d.key in missing] if missing else []
        if todo:
            vectors = self.encoders.text.encode([indexed_text(d) for d in todo])
            self.store.content.add_embeddings(tenant, "text", "document", list(zip([d.key for d in todo], vectors)),
                                      user=user)
        return len(todo)

    def embed_missing(self, tenant: str, users: Iterable[str] | None = None) -> int:
        """Embed every catalog item and the documents of `users` (None: every user) that lack a
        text vector; returns how many."""
        users = self.store.users.list_users(tenant) if users is None else dict.fromkeys(users)
        return self.embed_catalog(tenant) + sum(self.embed_documents(tenant, user) for user in users)

    def add_documents(self, tenant: str, user: str, documents: Sequence[DocumentIn | dict[str, Any]], *,
                      derived_from: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> int:
        """Texts the user wrote, embedded and stored together; `derived_from` ({key: [(kind, key)]})
        records what a document made from memory (a chat reply) was made from."""
        parsed = parse_rows(documents, DocumentIn, "document")
        check_document_length(parsed, self.store.content.max_document_chars)  # before the encoder reads them
        vectors = self.encoders.text.encode([indexed_text(d) for d in parsed])
        return self.store.content.add_documents(tenant, user, parsed, derived_from=derived_from,
                                                vectors={"text": dict(zip([d.key for d in parsed], vectors))})

    def forget_cached(self, tenant: str, user: str) -> None:
        """Drop what this process keeps derived from the user's memory (their conversation's
        index): call it when the user is forgotten. Another process never serves its copy (the
        user is gone from the store) and drops it as it goes out of its cache."""
        self.builder.conversations.evict(tenant, user)

    def add_messages(self, tenant: str, user: str, messages: Sequence[MessageIn | dict[str, Any]], *,
                     derived_from: Mapping[str, Sequence[tuple[str, str]]] | None = None) -> int:
        """Turns of a conversation the user took part in, in order, after the ones already stored
        (all or none; no LLM call: each turn is stored as said and embedded once)."""
        parsed = parse_rows(messages, MessageIn, "message")
        first = self.store.content.count_documents(tenant, user, MESSAGE_KIND)
        return self.add_documents(tenant, user, [m.as_document(first + i) for i, m in enumerate(parsed)],
                                  derived_from=derived_from)

    def messages(self, tenant: str, user: str) -> list[MessageIn]:
        """The user's conversation turns, in order."""
        return [message_of(d) for d in self.store.content.documents(tenant, user, MESSAGE_KIND)]

    def add_face(self, tenant: str, user: str, key: str, image: bytes, *, consent: bool) -> None:
        require_consent(consent, f"face {key!r}")  # before the encoder sees the photo
        encoder = self.encoders.face
        self._check_headers("face", [image], [f"face {key!r}"])
        embedding = self._encode("face", [image], f"face {key!r}")[0]
        self.store.content.add_face(tenant, user, key, image, consent=consent, embedding=embedding,
                            space=encoder.space, metric=encoder.metric, decoded=True)

    def add_voice(self, tenant: str, user: str, key: str, audio: bytes, *, consent: bool) -> None:
        require_consent(consent, f"voice sample {key!r}")  # before the encoder hears it
        encoder = self.encoders.voice
        self._check_headers("voice", [audio], [f"voice sample {key!r}"])
        embedding = self._encode("voice", [audio], f"voice sample {key!r}")[0]
        self.store.content.add_voice(tenant, user, key, audio, consent=consent, embedding=embedding,
                             space=encoder.space, metric=encoder.metric)

    def add_subject(self, tenant: str, user: str, key: str, *, name: str, class_noun: str,
                    images: Sequence[bytes]) -> None:
        """A subject with the mean image vector of its reference photos (space ``image``)."""
        self._check_headers("image", images, [f"image {n} of subject {key!r}" for n in range(len(images))])
        vectors = self._encode("image", list(images), f"the photos of subject {key!r}")
        mean = vectors.mean(axis=0)
        self.store.content.add_subject(tenant, user, key, name=name, class_noun=class_noun, images=images,
                               embedding=mean / (np.linalg.norm(mean) or 1.0), decoded=True)

    def _check_headers(self, role: str, files: Sequence[Any], names: Sequence[str]) -> None:
        """Each file's header against the store's budgets (an image's sides, aspect ratio and
        pixels; a recording's decoded size) before any decoder sees it, in this process or the pool's."""
        limits = self.store.content.media_limits
        for data, name in zip(files, names):
            if role == "voice":
                sniff_audio(data, name, limits)
            elif isinstance(data, bytes):
                image_header(data, name, limits)

    def _encode(self, role: str, inputs: Sequence[Any], what: str) -> np.ndarray:
        """Uploaded files through the pool's child process when there is one (a native crash
        there is `EncoderFailedError`), else through the encoder in this process."""
        if self.pool is not None:
            return self.pool.encode(role, inputs, what)
        vectors: np.ndarray = getattr(self.encoders, role).encode(inputs)
        return vectors

    # -- reads ----------------------------------------------------------------------------------

    def context(self, tenant: str, user: str, modality: Modality, instruction: str, *,
                for_generation: bool = False, preferences: bool = False) -> UserContext:
        """The user's context for a request; `for_generation` builds only what the plan reads
        (and `preferences` adds the preference vectors that best-of-N scores against)."""
        return self.builder.build(tenant, user, modality, instruction, for_generation=for_generation,
                                  preferences=preferences)

    def contexts(self, tenant: str, requests: Sequence[tuple[str, Modality, str]], *,
                 for_generation: bool = False, preferences: bool = False) -> list[UserContext | Exception]:
        """Contexts of several (user, modality, instruction) requests, instructions encoded in one
        batch; a request that fails gets its exception in its place."""
        return self.builder.build_many(tenant, requests, for_generation=for_generation, preferences=preferences)

    def plan(self, context: UserContext, options: dict[str, Any] | None = None) -> PersonalizationPlan:
        return route(context, options)

    def recommend(self, tenant: str, user: str, *, k: int = 10, diversity: float = 0.0, include_seen: bool = False,
                  kind: str | None = None) -> Recommendations:
        """Ranked items for `user` with the events behind each (`unipgen.core.recommend`)."""
        return self.builder.recommender.recommend(tenant, user, k=k, diversity=diversity, include_seen=include_seen,
                                                  kind=kind)

    # -- the fitted behavior space --------------------------------------------------------------

    def fit(self, tenant: str, config: dict[str, Any] | None = None) -> FitRecord:
        """Fit the tenant's behavior space now, in this process (the job path: a `FitSpec` job).
        Items without a text vector are embedded first. `config`: `FitConfig` fields to change."""
        settings = fit_config_for(self.store, tenant, config)
        self.embed_catalog(tenant)
        return self.store.fits.save_fit(tenant, run_fit(fit_inputs(self.store, tenant, settings)))


def _placed(fit: tuple[np.ndarray, dict[str, Any]], keys: Sequence[str], texts: np.ndarray) -> dict[str, np.ndarray]:
    """Items' vectors in the tenant's fitted space from their text vectors (`MemoryStore.fits.fit_mapping`'s fit)."""
    mapping, config = fit
    return dict(zip(keys, place_items(texts, mapping, FitConfig.from_dict(config))))
