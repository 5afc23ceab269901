"""Hybrid retrieval over one user's memory: BM25 (bm25s) and dense similarity, fused by rank.

Reciprocal rank fusion (Cormack et al., 2009) adds 1 / (k + rank) over the two rankings, so a
candidate found by both ranks above one found by either, and the two scores never need to be
on the same scale. An optional recency weight halves a candidate's fused score every
`recency_half_life_days`. Candidates are one user's documents and the items of their
behaviors: retrieval never looks outside the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from unipgen.schema.context import Evidence

RRF_K = 60  # the constant of the original paper; damps the head of each ranking


@dataclass(frozen=True)
class Candidate:
    """A memory item that may be retrieved: its text, time, and its vector in the query's space."""

    kind: Literal["document", "item"]
    key: str
    text: str
    vector: np.ndarray | None = None
    ts: datetime | None = None


def bm25_ranks(query: str, texts: Sequence[str]) -> dict[int, int]:
    """1-based BM25 rank of every text that shares a term with the query."""
    import bm25s

    if not texts or not query.strip():
        return {}
    retriever = _bm25_index(tuple(texts))
    tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
    if not tokens.ids or not tokens.ids[0]:
        return {}  # the query is only stopwords
    ids, scores = retriever.retrieve(tokens, k=len(texts), show_progress=False)
    ranked = [int(i) for i, s in zip(ids[0], scores[0]) if s > 0]
    return {index: rank for rank, index in enumerate(ranked, 1)}


@lru_cache(maxsize=256)
def _bm25_index(texts: tuple[str, ...]) -> Any:
    """The BM25 index of a user's candidate texts. A user's memory changes far less often than
    they make requests, so the index of the same texts is kept (most recent 256 sets); any
    change to the texts is a new key."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)
    return retriever


def dense_ranks(query_vector: np.ndarray | None, candidates: Sequence[Candidate]) -> dict[int, int]:
    """1-based rank by inner product (cosine for normalised vectors) of candidates with a vector."""
    with_vectors = [(i, c.vector) for i, c in enumerate(candidates) if c.vector is not None]
    if query_vector is None or not with_vectors:
        return {}
    matrix = np.stack([vector for _, vector in with_vectors])
    order = np.argsort(-(matrix @ query_vector), kind="stable")
    return {with_vectors[int(j)][0]: rank for rank, j in enumerate(order, 1)}


def hybrid_search(
    query: str,
    query_vector: np.ndarray | None,
    candidates: Sequence[Candidate],
    k: int = 5,
    *,
    rrf_k: int = RRF_K,
    recency_half_life_days: float | None = None,
    now: datetime | None = None,
) -> list[Evidence]:
    """The top-k candidates for `query` by fused BM25 and dense rank (and recency, if asked)."""
    lexical = bm25_ranks(query, [c.text for c in candidates])
    dense = dense_ranks(query_vector, candidates)
    scored = []
    for index in lexical.keys() | dense.keys():
        score = sum(1.0 / (rrf_k + ranks[index]) for ranks in (lexical, dense) if index in ranks)
        score *= _recency(candidates[index].ts, now, recency_half_life_days)
        scored.append((score, index))
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [
        Evidence(kind=candidates[i].kind, key=candidates[i].key, text=candidates[i].text, score=score,
                 bm25_rank=lexical.get(i), dense_rank=dense.get(i), ts=candidates[i].ts)
        for score, i in scored[:k]
    ]


def _recency(ts: datetime | None, now: datetime | None, half_life_days: float | None) -> float:
    if half_life_days is None or ts is None or now is None:
        return 1.0
    age_days = max((now - ts).total_seconds(), 0.0) / 86_400
    return float(0.5 ** (age_days / half_life_days))
