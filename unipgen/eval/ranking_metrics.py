"""Top-k ranking metrics for recommendation and user modeling: NDCG@k, HR@k, recall@k, MRR.

Each user has a ranked list of item ids (best first) and the items that are relevant to them:
a set (binary relevance) or a {item: gain} mapping (graded relevance; gain ≤ 0 = not relevant).
Every metric is computed per user and averaged over users with equal weight.

Defined behaviour at the edges:
- a user with no relevant item carries no information and is left out of the average
  (`empty="skip"`, the default; `per_user` functions give None for them); `empty="zero"` scores
  such users 0 instead. If every user is skipped, InvalidInputError.
- k larger than a list: the whole list is the top k (NDCG's ideal still has up to k items, so
  a short list that misses relevant items is not rewarded for its shortness).
- an item id twice in one ranking: InvalidInputError (it would be counted twice).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Literal

from unipgen.errors import InvalidInputError

Relevant = Collection[Hashable] | Mapping[Hashable, float]
Empty = Literal["skip", "zero"]


def _gains(relevant: Relevant, user: int) -> dict[Hashable, float]:
    """{item: gain > 0} of one user; a set gives gain 1 to each item."""
    if isinstance(relevant, str):
        raise InvalidInputError(f"relevant items of user {user} must be a collection of ids, not a string")
    if isinstance(relevant, Mapping):
        gains = {}
        for item, gain in relevant.items():
            if not isinstance(gain, int | float) or math.isnan(gain) or gain < 0:
                raise InvalidInputError(f"gain of item {item!r} of user {user} must be a number ≥ 0, not {gain!r}")
            if gain > 0:
                gains[item] = float(gain)
        return gains
    return dict.fromkeys(relevant, 1.0)


def _users(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant],
           k: int | None) -> list[tuple[list[Hashable], dict[Hashable, float]]]:
    """Validate the inputs; per user, the top-k list and the relevant items' gains."""
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise InvalidInputError(f"k must be a positive integer, not {k!r}")
    if len(rankings) == 0:
        raise InvalidInputError("no users: rankings is empty")
    if len(rankings) != len(relevant):
        raise InvalidInputError(f"length mismatch: {len(rankings)} rankings but {len(relevant)} relevant sets")
    users = []
    for user, (ranking, rel) in enumerate(zip(rankings, relevant, strict=True)):
        if isinstance(ranking, str):
            raise InvalidInputError(f"ranking of user {user} must be a sequence of item ids, not a string")
        ranking = list(ranking)
        if len(set(ranking)) != len(ranking):
            raise InvalidInputError(f"ranking of user {user} lists an item more than once")
        users.append((ranking if k is None else ranking[:k], _gains(rel, user)))
    return users


def _mean(values: list[float | None], empty: Empty) -> float:
    if empty not in ("skip", "zero"):
        raise InvalidInputError(f"empty must be 'skip' or 'zero', not {empty!r}")
    kept = [0.0 if v is None else v for v in values] if empty == "zero" else [v for v in values if v is not None]
    if not kept:
        raise InvalidInputError("no user has a relevant item: the metric is undefined")
    return sum(kept) / len(kept)


def ndcg_per_user(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant], k: int,
                  gain: Literal["linear", "exponential"] = "linear") -> list[float | None]:
    """Each user's NDCG@k in [0, 1] (None if no relevant item); see `ndcg_at_k`."""
    if gain not in ("linear", "exponential"):
        raise InvalidInputError(f"gain must be 'linear' or 'exponential', not {gain!r}")

    def g(rel: float) -> float:
        return rel if gain == "linear" else 2.0 ** rel - 1.0

    out: list[float | None] = []
    for top, gains in _users(rankings, relevant, k):
        if not gains:
            out.append(None)
            continue
        dcg = sum(g(gains.get(item, 0.0)) / math.log2(rank + 1) for rank, item in enumerate(top, start=1))
        ideal = sorted(gains.values(), reverse=True)[:k]
        idcg = sum(g(rel) / math.log2(rank + 1) for rank, rel in enumerate(ideal, start=1))
        out.append(dcg / idcg)
    return out


def ndcg_at_k(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant], k: int,
              gain: Literal["linear", "exponential"] = "linear", empty: Empty = "skip") -> float:
    """Mean NDCG@k in [0, 1]: how near the top the relevant items are (1 = ideal order).

    DCG@k = Σ_{rank ≤ k} gain(item) / log2(rank + 1), divided by the DCG of the ideal list (the
    user's relevant items sorted by gain, cut at k). Binary relevance gives gain 1; with graded
    relevance `gain="linear"` uses the grade (as scikit-learn's ndcg_score), "exponential" uses
    2^grade - 1 (Burges et al.). One relevant item at rank r ≤ k gives 1 / log2(r + 1).
    """
    return _mean(ndcg_per_user(rankings, relevant, k, gain), empty)


def hit_rate_per_user(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant],
                      k: int) -> list[float | None]:
    """Each user's HR@k: 1.0 if a relevant item is in the top k, else 0.0 (None if none relevant)."""
    return [None if not gains else float(any(item in gains for item in top)) for top, gains in
            _users(rankings, relevant, k)]


def hit_rate_at_k(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant], k: int,
                  empty: Empty = "skip") -> float:
    """HR@k in [0, 1]: the share of users with at least one relevant item in their top k."""
    return _mean(hit_rate_per_user(rankings, relevant, k), empty)


def recall_per_user(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant],
                    k: int) -> list[float | None]:
    """Each user's recall@k: |relevant ∩ top k| / |relevant| (None if none relevant)."""
    return [None if not gains else sum(item in gains for item in top) / len(gains) for top, gains in
            _users(rankings, relevant, k)]


def recall_at_k(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant], k: int,
                empty: Empty = "skip") -> float:
    """Mean recall@k in [0, 1]: the share of each user's relevant items found in the top k.

    The denominator is all of the user's relevant items, so with more relevant items than k the
    best possible value is k / |relevant| (not 1). With one relevant item it equals HR@k.
    """
    return _mean(recall_per_user(rankings, relevant, k), empty)


def reciprocal_rank_per_user(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant],
                             k: int | None = None) -> list[float | None]:
    """Each user's 1 / rank of the first relevant item (0.0 if none in the list or its top k)."""
    out: list[float | None] = []
    for top, gains in _users(rankings, relevant, k):
        rank = next((r for r, item in enumerate(top, start=1) if item in gains), None)
        out.append(None if not gains else (1.0 / rank if rank else 0.0))
    return out


def mrr(rankings: Sequence[Sequence[Hashable]], relevant: Sequence[Relevant], k: int | None = None,
        empty: Empty = "skip") -> float:
    """Mean reciprocal rank in [0, 1]: 1 when every user's first relevant item is ranked first.

    The whole list counts unless `k` is given (MRR@k: a first hit below k scores 0).
    """
    return _mean(reciprocal_rank_per_user(rankings, relevant, k), empty)
