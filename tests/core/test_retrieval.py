"""Hybrid retrieval: BM25 and dense ranks fused by reciprocal rank, recency, per-user scope."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from unipgen.core.retrieval import RRF_K, Candidate, bm25_ranks, dense_ranks, hybrid_search

TEXTS = ["I love westerns and cowboys", "Quantum physics lecture notes", "Cowboy boots review"]


def _candidates(ts: list[datetime] | None = None) -> list[Candidate]:
    return [Candidate("document", f"d{i}", t, np.eye(3, dtype=np.float32)[i], ts[i] if ts else None)
            for i, t in enumerate(TEXTS)]


def test_bm25_ranks_only_matching_texts() -> None:
    assert bm25_ranks("westerns cowboys", TEXTS) == {0: 1}
    assert bm25_ranks("the and of", TEXTS) == {}  # stopwords only
    assert bm25_ranks("zebra", TEXTS) == {}


def test_dense_ranks_follow_inner_product() -> None:
    assert dense_ranks(np.array([0.1, 0.0, 0.9], dtype=np.float32), _candidates()) == {2: 1, 0: 2, 1: 3}
    assert dense_ranks(None, _candidates()) == {}


def test_fusion_is_the_sum_of_reciprocal_ranks() -> None:
    hits = hybrid_search("westerns", np.array([1.0, 0.0, 0.0], dtype=np.float32), _candidates(), k=3)
    assert [h.key for h in hits] == ["d0", "d1", "d2"]  # d0: first in both; the others: dense only
    assert hits[0].score == pytest.approx(2 / (RRF_K + 1))
    assert (hits[0].bm25_rank, hits[0].dense_rank) == (1, 1)
    assert hits[1].bm25_rank is None and hits[1].score == pytest.approx(1 / (RRF_K + 2))


def test_a_candidate_found_by_both_beats_one_found_by_either() -> None:
    query = np.array([0.0, 0.6, 0.8], dtype=np.float32)  # dense prefers d2 over d1
    hits = hybrid_search("quantum lecture", query, _candidates(), k=3)
    assert hits[0].key == "d1"  # rank 1 by BM25 and 2 by dense beats rank 1 by dense alone


def test_recency_halves_the_score_per_half_life() -> None:
    now = datetime(2024, 1, 31, tzinfo=timezone.utc)
    ts = [now - timedelta(days=30), now, now]
    fresh = hybrid_search("westerns", None, _candidates(ts), k=1, recency_half_life_days=30, now=now)
    assert fresh[0].score == pytest.approx(0.5 / (RRF_K + 1))


def test_nothing_to_search() -> None:
    assert hybrid_search("anything", None, [], k=3) == []


def test_bm25_index_reuse_never_serves_stale_texts() -> None:
    """The index of a text set is kept between requests; other texts are another index."""
    assert bm25_ranks("cowboys", ["cowboys ride west", "a space opera"]) == {0: 1}
    assert bm25_ranks("space", ["cowboys ride west", "a space opera"]) == {1: 1}  # same texts, new query
    assert bm25_ranks("cowboys", ["a space opera", "cowboys ride west"]) == {1: 1}  # the texts changed
