"""Build a `UserContext` from the memory store: the recipe of one request's user modeling.

`ContextBuilder.build` reads the user in one store call (`MemoryStore.reads.user_snapshot`), then
derives, in order: the profile; the behavior log, turned into preference vectors and keywords
per space; evidence retrieved for the instruction from the user's documents and items;
conditioning assets (subjects and their adapters, faces, voice). `build_many` does the same for
several requests with their instructions encoded in one batch. Every
memory item it uses is listed in `provenance`, so an output can record what it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.behavior_space import BEHAVIOR_SPACE
from unipgen.core.conversation import ConversationCache, date_text, stored_turns
from unipgen.core.encoders import Encoders
from unipgen.core.intent import asks_for_recommendation
from unipgen.core.preference import PreferenceConfig, build, drift, preference_vectors
from unipgen.core.recommend import Recommender
from unipgen.core.retrieval import Candidate, hybrid_search
from unipgen.core.router import ALL_PARTS, CONDITIONING_ALL, CONDITIONING_PARTS, CONTEXT_PARTS
from unipgen.core.vocabulary import Vocabulary, build_vocabulary, catalog_words
from unipgen.memory import MemoryStore
from unipgen.memory.models import utcnow
from unipgen.memory.snapshot import EventRow, UserSnapshot
from unipgen.schema.context import (
    AdapterRef,
    Conditioning,
    Evidence,
    Keyword,
    Modality,
    Preferences,
    Recommendations,
    SubjectAsset,
    UserContext,
)
from unipgen.schema.memory import EventIn
from unipgen.schema.messages import MESSAGE_KIND

#: Spaces in which item vectors can carry preferences: words for ``text``, looks for ``image``.
PREFERENCE_SPACES = ("text", "image")
#: What a context reads of the catalog items a user acted on: the preference spaces, and the
#: fitted behavior space that recommendations rank in.
SNAPSHOT_SPACES = (*PREFERENCE_SPACES, BEHAVIOR_SPACE)


@dataclass(frozen=True)
class ContextConfig:
    """Knobs of context building; the defaults suit a chat- or prompt-sized context."""

    evidence_k: int = 5
    keywords_k: int = 8
    negative_keywords_k: int = 5
    top_items_k: int = 5  # recommendations in a context (its `top_items`), and in a text request asking for them
    recency_half_life_days: float | None = None
    diversity: float = 0.0  # of those recommendations: 0 best first; up to 1 less of the same (MMR re-ranking)
    include_vectors: bool = True
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)


class ContextBuilder:
    """Turns what the store holds about a user into a `UserContext` (no LLM call involved)."""

    def __init__(self, store: MemoryStore, encoders: Encoders, config: ContextConfig | None = None,
                 cache_dir: Path | None = None) -> None:
        self.store = store
        self.encoders = encoders
        self.config = config or ContextConfig()
        self.cache_dir = cache_dir
        self.recommender = Recommender(store, self.config.preference)
        self._vocabularies: dict[tuple[str, str], Vocabulary] = {}
        self.conversations = ConversationCache()

    def build(self, tenant: str, user: str, modality: Modality, instruction: str,
              query: np.ndarray | None = None, *, for_generation: bool = False,
              snapshot: UserSnapshot | None = None, preferences: bool = False) -> UserContext:
        """The context of one request; `query` is the instruction's text vector if already
        encoded (else it is encoded here, and only when there is evidence to search).

        With `for_generation`, only the parts the router's plan for `modality` reads are built
        (`router.CONTEXT_PARTS`): text prompts use evidence, not preference keywords; image,
        video, audio and 3D prompts the reverse. The output's lineage then names only memory
        the generation could have used, and the work of the unused part is not done.

        Recommendations (the `Recommender`'s, also every preference entry's `top_items`) are
        in a full context, and in a text request that asks for a recommendation
        (`intent.asks_for_recommendation`): there they replace the items the user already
        rated as evidence, so the answer names unseen items; the recommended items join the
        provenance. Questions about the user's past keep the retrieved history.

        `preferences` builds the preference part whatever the modality: best-of-N scores a
        text request's candidates against the user's text-space preference (no plan reads it, so
        the prompt stays the same; the events it comes from are already in the lineage).
        """
        parts = CONTEXT_PARTS[modality] if for_generation else ALL_PARTS
        parts = parts | {"preferences"} if preferences else parts
        recommending = not for_generation or (modality == "text" and asks_for_recommendation(instruction))
        if snapshot is None:
            snapshot = self.store.reads.user_snapshot(tenant, user, SNAPSHOT_SPACES)
        provenance = [f"user:{user}"] if snapshot.events else []
        recommendations = self.recommendations(tenant, snapshot) if recommending else None
        top_items = [Keyword(text=r.text, score=r.score, source="item")
                     for r in (recommendations.items if recommendations else [])]
        tastes = [p for p in (self.preferences(tenant, snapshot, space, top_items) for space in PREFERENCE_SPACES
                              if space in snapshot.spaces) if p is not None] if "preferences" in parts else []
        evidence = self.evidence(snapshot, instruction, query, documents_only=for_generation and recommending) \
            if "evidence" in parts else []
        provenance += [f"{e.kind}:{e.key}" for e in evidence]
        if for_generation and recommendations is not None:
            provenance += [f"item:{r.item}" for r in recommendations.items]
        conditioning, used = self.conditioning(snapshot, CONDITIONING_PARTS[modality] if for_generation else None)
        provenance += used
        return UserContext(tenant=tenant, user=user, modality=modality, instruction=instruction,
                           profile=snapshot.profile, evidence=evidence, preferences=tastes,
                           conditioning=conditioning, recommendations=recommendations,
                           provenance=list(dict.fromkeys(provenance)), built_at=utcnow())

    def build_many(self, tenant: str, requests: Sequence[tuple[str, Modality, str]], *,
                   for_generation: bool = False, preferences: bool = False) -> list[UserContext | Exception]:
        """Contexts of several (user, modality, instruction) requests, their instructions encoded
        in one batch (a text encoder call per request costs several times more on a CPU) and
        their users read in one go (`MemoryStore.reads.user_snapshots`). A request that fails (an
        unknown user) gets its error in its place; the others go on."""
        searched = [i for i, (_, modality, _) in enumerate(requests)
                    if not for_generation or "evidence" in CONTEXT_PARTS[modality]]
        vectors = self.encoders.text.encode([requests[i][2] for i in searched]) if searched else []
        queries = dict(zip(searched, vectors))
        snapshots = self.store.reads.user_snapshots(tenant, [user for user, _, _ in requests], SNAPSHOT_SPACES)
        built: list[UserContext | Exception] = []
        for index, (user, modality, instruction) in enumerate(requests):
            snapshot = snapshots[user]
            if isinstance(snapshot, Exception):
                built.append(snapshot)
                continue
            try:
                built.append(self.build(tenant, user, modality, instruction, queries.get(index),
                                        for_generation=for_generation, snapshot=snapshot, preferences=preferences))
            except Exception as exc:  # noqa: BLE001  (returned to the caller, one per request)
                built.append(exc)
        return built

    # -- preferences ------------------------------------------------------------------------

    def recommendations(self, tenant: str, snapshot: UserSnapshot) -> Recommendations:
        """The user's recommendations as a context shows them (`top_items_k`, `diversity`)."""
        return self.recommender.recommend(tenant, snapshot.user, k=self.config.top_items_k,
                                          diversity=self.config.diversity, snapshot=snapshot)

    def preferences(self, tenant: str, snapshot: UserSnapshot, space: str,
                    top_items: list[Keyword] | None = None) -> Preferences | None:
        """Preference vectors and keywords in one space, from events on items embedded there;
        `top_items`: the user's recommendations (one list for every space)."""
        events, vectors = snapshot.events, snapshot.item_vectors.get(space, {})
        usable = [(e.item, e.type, e.value, e.ts) for e in events if e.item in vectors]
        if not usable:
            return None
        state = build(usable, vectors, self.config.preference)
        units = preference_vectors(state)
        taste = units.long + self.config.preference.short_term_weight * units.short
        taste = taste / (np.linalg.norm(taste) or 1.0)
        vocabulary = self.vocabulary(tenant, space)
        positive = vocabulary.nearest(taste, self.config.keywords_k)
        negative = vocabulary.nearest(units.negative, self.config.negative_keywords_k, exclude=[w for w, _ in positive])
        keep = self.config.include_vectors
        return Preferences(
            space=space, events=len(usable), drift=drift(state),
            long_term=units.long.tolist() if keep else None, short_term=units.short.tolist() if keep else None,
            negative=units.negative.tolist() if keep and units.negative_weight else None,
            positive_keywords=[Keyword(text=w, score=s, source="vocabulary") for w, s in positive],
            negative_keywords=[Keyword(text=w, score=s, source="vocabulary") for w, s in negative],
            top_items=list(top_items or []),
        )

    def vocabulary(self, tenant: str, space: str = "text") -> Vocabulary:
        """The tenant's keyword vocabulary embedded in `space`: by the text encoder for ``text``,
        by CLIP's text tower for ``image`` (CLIP puts words and images in one space)."""
        if (tenant, space) not in self._vocabularies:
            words = catalog_words(self.store.catalog.item_texts(tenant).values(), self.store.catalog.item_meta(tenant))
            encoder = self.encoders.text if space == "text" else self.encoders.image
            encode = encoder.encode if space == "text" else encoder.encode_text
            vocabulary = build_vocabulary(words, encode, f"{space}:{encoder.ref}", self.cache_dir)
            self._vocabularies[(tenant, space)] = vocabulary
        return self._vocabularies[(tenant, space)]

    # -- evidence ---------------------------------------------------------------------------

    def evidence(self, snapshot: UserSnapshot, instruction: str, query: np.ndarray | None = None, *,
                 documents_only: bool = False) -> list[Evidence]:
        """Retrieval for the instruction: the user's conversation turns by session-aware search
        (`core.conversation`), their other documents and positively-rated items by hybrid search
        (documents only for a request asking for a recommendation: the items it needs are
        unseen ones); the two rankings interleaved, `evidence_k` in all."""
        k = self.config.evidence_k
        turns = self.turn_evidence(snapshot, instruction)
        candidates = [c for c in self.candidates(snapshot) if not documents_only or c.kind == "document"]
        if not candidates:
            return turns
        if query is None:
            query = self.encoders.text.encode([instruction])[0]
        found = hybrid_search(instruction, query, candidates, k,
                              recency_half_life_days=self.config.recency_half_life_days, now=utcnow())
        return _interleave(turns, found)[:k]

    def turn_evidence(self, snapshot: UserSnapshot, instruction: str) -> list[Evidence]:
        """The `evidence_k` turns of the user's conversations (their messages) that answer the
        instruction best, each under its own key, with its date and speaker in the text."""
        messages = [d for d in snapshot.documents if d.kind == MESSAGE_KIND]
        if not messages or not instruction.strip():
            return []
        turns = stored_turns(messages)
        index = self.conversations.index(snapshot.tenant, snapshot.user, turns, snapshot.document_vectors,
                                         self.encoders.text)
        when = {t.key: t.session_time for t in turns}
        return [Evidence(kind="document", key=hit.key, score=hit.score, ts=when[hit.key],
                         text=f"[{date_text(when[hit.key])}] {hit.speaker}: {hit.text}" if when[hit.key]
                         else f"{hit.speaker}: {hit.text}")
                for hit in index.search(instruction, self.config.evidence_k)]

    def candidates(self, snapshot: UserSnapshot) -> list[Candidate]:
        """The user's documents (not conversation turns: `turn_evidence` ranks those) and liked items."""
        vectors = snapshot.document_vectors
        found = [Candidate("document", d.key, d.text, vectors.get(d.key), d.ts) for d in snapshot.documents
                 if d.kind != MESSAGE_KIND]
        liked = _last_positive(snapshot.events, self.config.preference)
        item_vectors = snapshot.item_vectors.get("text", {})
        found += [Candidate("item", key, snapshot.item_texts[key], item_vectors.get(key), ts)
                  for key, ts in liked.items()]
        return found

    # -- conditioning -----------------------------------------------------------------------

    def conditioning(self, snapshot: UserSnapshot,
                     parts: frozenset[str] | None = None) -> tuple[Conditioning, list[str]]:
        """Subjects with their adapters, user-level adapters, face and voice embeddings (only
        `parts` of them if given, see `router.CONDITIONING_PARTS`); and the 'kind:key' of each
        memory item used. The list of voice recordings (`voice_samples`) is a directory, not a
        use: a music request names one as its melody, and only that one joins its lineage."""
        parts = CONDITIONING_ALL if parts is None else parts
        adapters = snapshot.adapters
        subjects = [
            SubjectAsset(key=s.key, name=s.name, class_noun=s.class_noun, image_shas=s.image_shas,
                         adapters=[_adapter(a) for a in adapters if ("subject", s.key) in a.derived_from])
            for s in snapshot.subjects
        ] if "subjects" in parts else []
        user_adapters = [_adapter(a) for a in adapters if not any(k == "subject" for k, _ in a.derived_from)
                         ] if "adapters" in parts else []
        faces = snapshot.faces if "faces" in parts else {}
        voices = snapshot.voices if "voices" in parts else {}
        conditioning = Conditioning(subjects=subjects, adapters=user_adapters,
                                    face_embeddings=[v.tolist() for _, v in sorted(faces.items())],
                                    voice_embedding=_mean_unit(list(voices.values())),
                                    voice_samples=snapshot.voice_blobs if parts & {"voices", "melody"} else {})
        used = [f"subject:{s.key}" for s in subjects]
        used += [f"artifact:{a.key}" for s in subjects for a in s.adapters]
        used += [f"artifact:{a.key}" for a in user_adapters]
        used += [f"face:{key}" for key in sorted(faces)] + [f"voice:{key}" for key in sorted(voices)]
        return conditioning, list(dict.fromkeys(used))


def _interleave(first: list[Evidence], second: list[Evidence]) -> list[Evidence]:
    """Two rankings merged by rank (1st of each, then 2nd of each...), `first` leading a tie."""
    merged: list[Evidence] = []
    for pair in zip_longest(first, second):
        merged += [e for e in pair if e is not None]
    return merged


def _adapter(record: Any) -> AdapterRef:
    return AdapterRef(key=record.key, method=(record.meta or {}).get("method", "lora"), blob_sha=record.blob_sha,
                      meta=record.meta)


def _last_positive(events: Sequence[EventIn | EventRow], config: PreferenceConfig) -> dict[str, datetime]:
    """Items with a positive event, with the time of their latest one (newest first)."""
    latest: dict[str, datetime] = {}
    for event in events:
        if config.event_weight(event.type, event.value) > 0:
            latest[event.item] = max(event.ts, latest.get(event.item, event.ts))
    return dict(sorted(latest.items(), key=lambda pair: pair[1], reverse=True))


def _mean_unit(vectors: list[np.ndarray]) -> list[float] | None:
    if not vectors:
        return None
    mean = np.mean(np.stack(vectors), axis=0)
    unit: list[float] = (mean / (np.linalg.norm(mean) or 1.0)).tolist()
    return unit
