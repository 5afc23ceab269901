"""Session- and time-aware retrieval over one conversation's turns (a user's messages).

A question about a long conversation names a speaker, asks about something said in passing, and
the answer often sits in the reply to the turn that matches. Scoring each turn alone, as plain
BM25 or dense search does, misses those turns. `ConversationIndex` scores every turn from five
signals, all without an LLM (MiniLM vectors and bm25s only), and returns TURNS, each under its
own key, so that recall@k counts exactly the k turns a model would read:

1. turn BM25 over "date Speaker: text [photo: caption]" plus BM25 over the turn's window (the turn
   and its neighbours in the same session), on lightly stemmed tokens; the session's date ("8 May
   2023") is part of each text, so "in June" or "in 2022" finds the session it happened in;
2. dense cosine of the question, the speakers' names taken out, with the turn's MiniLM vector (the
   names are the speaker signal's job; left in, they pull towards every turn of that speaker);
3. the turn's session: BM25 over the whole session's text (and date) plus the cosine of the whole
   question with the session's mean vector (a session about the topic lifts all its turns);
4. its neighbours: a turn gets a share of its best neighbour's score within the session (the
   reply to a matching question, the question before a matching answer);
5. the speaker: when a question names exactly one speaker, that speaker's turns are boosted.

The weights (`FusionWeights`) were chosen on LoCoMo's development half (`unipgen eval locomo`;
docs/benchmarks.md has the table of what each signal adds). Everything is deterministic: ties
keep conversation order.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from unipgen.errors import InvalidInputError

#: Suffixes stripped by `light_stem`, longest first; a stem keeps at least 3 letters.
SUFFIXES = ("ing", "ed", "es", "s")


class TurnLike(Protocol):
    """What retrieval needs of a turn (`unipgen.memory.locomo.Turn` is one)."""

    @property
    def key(self) -> str: ...
    @property
    def speaker(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def session(self) -> int: ...
    @property
    def caption(self) -> str | None: ...
    @property
    def session_time(self) -> datetime | None: ...


class TextEncoder(Protocol):
    def encode(self, inputs: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class FusionWeights:
    """How the signals add up (each BM25 score is divided by the query's best one first)."""

    window_bm25: float = 1.5  # the window's BM25, added to the turn's before normalising
    dense: float = 2.5  # the turn's cosine (negatives clipped to 0)
    session: float = 0.7  # the session's normalised BM25 plus its cosine
    neighbour: float = 0.5  # share of the best same-session neighbour's score
    speaker: float = 0.4  # relative boost of the one speaker a question names
    k1: float = 0.9  # BM25 term saturation: short turns, so repeats count less
    b: float = 0.4  # BM25 length normalisation, mild for the same reason


@dataclass(frozen=True)
class TurnHit:
    key: str
    score: float
    speaker: str
    text: str


def light_stem(words: list[str]) -> list[str]:
    """"painting", "painted", "paints" → "paint": enough stemming for chat text, no dependency."""
    stemmed = []
    for word in words:
        for suffix in SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
        stemmed.append(word)
    return stemmed


def turn_document(turn: TurnLike) -> str:
    """The text a turn is indexed under: its speaker, its words and a shared photo's caption."""
    text = turn.text.strip()
    if turn.caption:
        text = f"{text} [photo: {turn.caption}]".strip()
    return f"{turn.speaker}: {text}"


def date_text(ts: datetime | None) -> str:
    """A session date as words BM25 can match ("8 May 2023"); empty when unknown."""
    return f"{ts.day} {ts:%B %Y}" if ts is not None else ""


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, English stop words removed, lightly stemmed tokens (bm25s' tokenizer)."""
    import bm25s

    tokens: list[list[str]] = bm25s.tokenize(texts, stopwords="en", stemmer=light_stem, return_ids=False,
                                             show_progress=False)
    return tokens


def bm25_index(tokens: list[list[str]], weights: FusionWeights) -> Any:
    """A bm25s index of tokenized documents (an empty document gets a placeholder token)."""
    import bm25s

    index = bm25s.BM25(k1=weights.k1, b=weights.b)
    index.index([doc or ["∅"] for doc in tokens], show_progress=False)
    return index


def bm25_scores(index: Any, query_tokens: list[str], size: int) -> np.ndarray:
    """BM25 score of every document for the query (zeros when no query token is indexed)."""
    if not query_tokens:
        return np.zeros(size)
    return np.asarray(index.get_scores(query_tokens), dtype=np.float64)


def scale_to_max(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their maximum, so that BM25 lies in [0, 1] whatever the query's length."""
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 0 else scores


def best_neighbour(scores: np.ndarray, same_as_previous: np.ndarray) -> np.ndarray:
    """Per turn, the larger score of the turns just before and after it in the same session."""
    before = np.r_[0.0, scores[:-1]] * same_as_previous
    after = np.r_[scores[1:], 0.0] * np.r_[same_as_previous[1:], False]
    best: np.ndarray = np.maximum(before, after)
    return best


def session_windows(documents: list[str], sessions: np.ndarray, radius: int = 1) -> list[str]:
    """Each turn's text with its neighbours' within `radius` turns of the same session."""
    windows = []
    for i in range(len(documents)):
        around = range(max(i - radius, 0), min(i + radius + 1, len(documents)))
        windows.append(" ".join(documents[j] for j in around if sessions[j] == sessions[i]))
    return windows


def named_speakers(question: str, speakers: Sequence[str]) -> list[str]:
    """The speakers a question names (whole words, any case, possessives included)."""
    return [s for s in speakers if re.search(rf"\b{re.escape(s)}\b", question, re.IGNORECASE)]


def without_names(question: str, names: Sequence[str]) -> str:
    """The question with `names` (and their possessive 's) removed; the question itself if
    nothing would be left."""
    stripped = question
    for name in names:
        stripped = re.sub(rf"\b{re.escape(name)}(?:'s)?\b", "", stripped, flags=re.IGNORECASE)
    stripped = " ".join(stripped.split())
    return stripped if re.search(r"\w", stripped) else question


class ConversationIndex:
    """One conversation's turns, indexed for `search`: three BM25 indexes (turns, windows,
    sessions), the turns' vectors and the sessions' mean vectors. Build once per conversation
    (one encoder pass over the turns); each search is one encoder call (two texts) and a few
    array operations."""

    def __init__(self, turns: Sequence[TurnLike], encoder: TextEncoder,
                 weights: FusionWeights | None = None, vectors: np.ndarray | None = None) -> None:
        """`vectors`: the turns' `turn_document` vectors when already encoded (the store keeps
        them), one row per turn; else they are encoded here."""
        if not turns:
            raise InvalidInputError("a conversation index needs at least one turn")
        keys = [turn.key for turn in turns]
        if len(set(keys)) != len(keys):
            raise InvalidInputError("turn keys must be unique within a conversation")
        self.turns = list(turns)
        self.encoder = encoder
        self.weights = weights or FusionWeights()
        self.speakers = sorted({turn.speaker for turn in turns})
        self.speaker_of = np.array([turn.speaker for turn in turns])
        session_ids = sorted({turn.session for turn in turns})
        self.session_of = np.array([session_ids.index(turn.session) for turn in turns])
        self.same_as_previous = np.r_[False, self.session_of[1:] == self.session_of[:-1]]
        documents = [turn_document(turn) for turn in turns]
        self.index_texts(documents)
        if vectors is not None and len(vectors) != len(turns):
            raise InvalidInputError(f"{len(vectors)} vectors given for {len(turns)} turns")
        self.vectors = np.asarray(encoder.encode(documents) if vectors is None else vectors, dtype=np.float32)
        self.session_vectors = mean_vectors(self.vectors, self.session_of)

    def index_texts(self, documents: list[str]) -> None:
        """The three BM25 indexes: dated turns, windows of turns, dated sessions."""
        dates = [date_text(turn.session_time) for turn in self.turns]
        self.turn_bm25 = bm25_index(tokenize([f"{d} {doc}" for d, doc in zip(dates, documents, strict=True)]),
                                    self.weights)
        self.window_bm25 = bm25_index(tokenize(session_windows(documents, self.session_of)), self.weights)
        sessions = []
        for j in range(int(self.session_of.max()) + 1):
            members = np.flatnonzero(self.session_of == j)
            sessions.append(" ".join([dates[members[0]], *(documents[i] for i in members)]))
        self.session_bm25 = bm25_index(tokenize(sessions), self.weights)

    def __len__(self) -> int:
        return len(self.turns)

    def query_vectors(self, question: str) -> np.ndarray:
        """The question's two vectors, in one encoder call: as asked (for sessions), and without
        the speakers' names (for turns)."""
        return np.asarray(self.encoder.encode([question, without_names(question, self.speakers)]))

    def scores(self, question: str, vectors: np.ndarray | None = None) -> np.ndarray:
        """Every turn's fused score for `question` (the recipe of the module docstring);
        `vectors`: `query_vectors(question)` when the caller has them."""
        w = self.weights
        size, sessions = len(self.turns), int(self.session_of.max()) + 1
        asked, unnamed = self.query_vectors(question) if vectors is None else vectors
        query_tokens = tokenize([question])[0]
        lexical = bm25_scores(self.turn_bm25, query_tokens, size)
        lexical += w.window_bm25 * bm25_scores(self.window_bm25, query_tokens, size)
        scores: np.ndarray = scale_to_max(lexical) + w.dense * np.clip(self.vectors @ unnamed, 0.0, None)
        session = scale_to_max(bm25_scores(self.session_bm25, query_tokens, sessions)) + self.session_vectors @ asked
        scores = scores + w.session * session[self.session_of]
        scores = scores + w.neighbour * best_neighbour(scores, self.same_as_previous)
        named = named_speakers(question, self.speakers)
        if len(named) == 1:
            scores = scores * (1.0 + w.speaker * (self.speaker_of == named[0]))
        return scores

    def search(self, question: str, k: int = 10, vectors: np.ndarray | None = None) -> list[TurnHit]:
        """The k best turns, best first; each is one of the k (no turn is returned twice)."""
        if k < 1:
            raise InvalidInputError(f"k must be at least 1, got {k}")
        if not question.strip():
            raise InvalidInputError("the question is empty")
        scores = self.scores(question, vectors)
        order = np.argsort(-scores, kind="stable")[:k]
        return [TurnHit(self.turns[i].key, float(scores[i]), self.turns[i].speaker, self.turns[i].text)
                for i in order]


def mean_vectors(vectors: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The L2-normalised mean vector of each group (groups numbered 0..n-1)."""
    means = np.stack([vectors[groups == j].mean(axis=0) for j in range(int(groups.max()) + 1)])
    normalised: np.ndarray = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return normalised


# -- a user's stored messages ----------------------------------------------------------------


@dataclass(frozen=True)
class StoredTurn:
    """A stored message (`unipgen.schema.messages`) as a turn of `ConversationIndex`."""

    key: str
    speaker: str
    text: str
    session: int  # sessions numbered in order of first appearance
    session_time: datetime | None
    caption: str | None = None


def stored_turns(messages: Sequence[Any]) -> list[StoredTurn]:
    """Message documents (kind ``message``, oldest first) as turns; `meta` holds the speaker,
    session and caption (`MessageIn.as_document`), `ts` the time."""
    sessions: dict[str, int] = {}
    turns = []
    for message in messages:
        meta = message.meta or {}
        session = sessions.setdefault(str(meta.get("session", "")), len(sessions))
        turns.append(StoredTurn(message.key, str(meta.get("speaker", "")), message.text, session, message.ts,
                                meta.get("caption")))
    return turns


class ConversationCache:
    """The `ConversationIndex` of each user's messages, kept while they do not change (the BM25
    indexes cost more than a search); the `size` most recently used users are kept."""

    def __init__(self, size: int = 64, weights: FusionWeights | None = None) -> None:
        self.size = size
        self.weights = weights
        self._indexes: OrderedDict[tuple[str, str], tuple[int, ConversationIndex]] = OrderedDict()

    def evict(self, tenant: str, user: str) -> None:
        """Drop the user's index (their turns' texts and vectors): after they are forgotten."""
        self._indexes.pop((tenant, user), None)

    def cached(self, tenant: str, user: str) -> ConversationIndex | None:
        """The index last built for the user's messages, if kept."""
        found = self._indexes.get((tenant, user))
        return found[1] if found is not None else None

    def index(self, tenant: str, user: str, turns: Sequence[StoredTurn], vectors: dict[str, np.ndarray],
              encoder: TextEncoder) -> ConversationIndex:
        """The index of `turns`; a turn with no stored vector in `vectors` is encoded here."""
        signature = hash(tuple((t.key, t.text, t.caption, t.session) for t in turns))
        cached = self._indexes.get((tenant, user))
        if cached is not None and cached[0] == signature:
            self._indexes.move_to_end((tenant, user))
            return cached[1]
        missing = [t for t in turns if t.key not in vectors]
        encoded = dict(zip([t.key for t in missing], encoder.encode([turn_document(t) for t in missing]))) \
            if missing else {}
        matrix = np.stack([vectors[t.key] if t.key in vectors else encoded[t.key] for t in turns])
        built = ConversationIndex(turns, encoder, self.weights, vectors=matrix)
        self._indexes[(tenant, user)] = (signature, built)
        while len(self._indexes) > self.size:
            self._indexes.popitem(last=False)
        return built
