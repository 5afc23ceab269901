"""Ranking metrics against hand-computed values and scikit-learn's ndcg_score; edge cases."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from unipgen.errors import InvalidInputError
from unipgen.eval import ranking_metrics as rm

L2_3, L2_5 = math.log2(3), math.log2(5)


def test_ndcg_binary_by_hand() -> None:
    ranking, relevant = [["a", "b", "c", "d"]], [{"b", "d"}]
    ideal = 1 + 1 / L2_3
    assert rm.ndcg_at_k(ranking, relevant, 3) == pytest.approx((1 / L2_3) / ideal)
    assert rm.ndcg_at_k(ranking, relevant, 4) == pytest.approx((1 / L2_3 + 1 / L2_5) / ideal)
    assert rm.ndcg_at_k([["b", "d", "a"]], relevant, 3) == pytest.approx(1.0)
    assert rm.ndcg_at_k([["x", "y"]], relevant, 2) == 0.0


def test_ndcg_single_relevant_item_is_one_over_log_rank() -> None:
    # The formula `unipgen bench usermodel` (unipgen.eval.movielens) uses for its held-out movie.
    rankings = [[f"i{j}" for j in range(20)] for _ in range(3)]
    relevant = [{"i0"}, {"i4"}, {"i15"}]
    assert rm.ndcg_per_user(rankings, relevant, 10) == pytest.approx([1.0, 1 / math.log2(6), 0.0])
    assert rm.ndcg_at_k(rankings, relevant, 10) == pytest.approx((1 + 1 / math.log2(6)) / 3)


def test_ndcg_graded_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    items = ["a", "b", "c", "d", "e", "f"]
    rankings = [["c", "a", "f", "b", "e", "d"], ["a", "b", "c", "d", "e", "f"]]
    grades = [{"a": 3, "b": 2, "d": 1, "e": 0}, {"f": 2, "c": 1}]
    for k in (1, 3, 6):
        ours = rm.ndcg_per_user(rankings, grades, k)
        for ranking, grade, value in zip(rankings, grades, ours, strict=True):
            scores = [[len(items) - ranking.index(i) for i in items]]  # distinct: no ties
            truth = [[grade.get(i, 0) for i in items]]
            assert value == pytest.approx(metrics.ndcg_score(truth, scores, k=k))


def test_ndcg_exponential_gain_by_hand() -> None:
    value = rm.ndcg_at_k([["b", "a"]], [{"a": 2, "b": 1}], 2, gain="exponential")
    assert value == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)))


def test_hit_rate_recall_mrr_by_hand() -> None:
    rankings = [["a", "b", "c", "d"], ["x", "y", "z"], ["p", "q"]]
    relevant = [{"c", "d", "e"}, {"x"}, {"r"}]
    assert rm.hit_rate_per_user(rankings, relevant, 2) == [0.0, 1.0, 0.0]
    assert rm.hit_rate_at_k(rankings, relevant, 3) == pytest.approx(2 / 3)
    assert rm.recall_per_user(rankings, relevant, 4) == pytest.approx([2 / 3, 1.0, 0.0])
    assert rm.recall_at_k(rankings, relevant, 3) == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert rm.reciprocal_rank_per_user(rankings, relevant) == pytest.approx([1 / 3, 1.0, 0.0])
    assert rm.mrr(rankings, relevant) == pytest.approx((1 / 3 + 1) / 3)
    assert rm.mrr(rankings, relevant, k=2) == pytest.approx(1 / 3)  # the first user's hit is at rank 3


def test_graded_relevance_zero_gain_is_not_relevant() -> None:
    assert rm.hit_rate_at_k([["a", "b"]], [{"a": 0, "b": 2}], 1) == 0.0
    assert rm.mrr([["a", "b"]], [{"a": 0.0, "b": 2}]) == 0.5
    with pytest.raises(InvalidInputError, match="gain"):
        rm.ndcg_at_k([["a"]], [{"a": -1}], 1)


def test_k_larger_than_the_list() -> None:
    # The whole list is the top k; the ideal list still holds both relevant items.
    assert rm.ndcg_at_k([["a"]], [{"a", "b"}], 10) == pytest.approx(1 / (1 + 1 / L2_3))
    assert rm.hit_rate_at_k([["a"]], [{"a"}], 10) == 1.0
    assert rm.recall_at_k([["a"]], [{"a", "b"}], 10) == 0.5


def test_users_with_no_relevant_item() -> None:
    rankings, relevant = [["a", "b"], ["c"]], [{"b"}, set()]
    assert rm.ndcg_per_user(rankings, relevant, 2)[1] is None
    assert rm.hit_rate_at_k(rankings, relevant, 2) == 1.0  # skipped
    assert rm.hit_rate_at_k(rankings, relevant, 2, empty="zero") == 0.5
    assert rm.ndcg_at_k(rankings, relevant, 2, empty="zero") == pytest.approx(0.5 / L2_3)
    with pytest.raises(InvalidInputError, match="no user has a relevant item"):
        rm.mrr([["a"]], [set()])
    with pytest.raises(InvalidInputError, match="empty"):
        rm.mrr(rankings, relevant, empty="nan")  # type: ignore[arg-type]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: rm.ndcg_at_k([["a"]], [{"a"}, {"b"}], 1), "length mismatch"),
    (lambda: rm.hit_rate_at_k([], [], 1), "rankings is empty"),
    (lambda: rm.recall_at_k([["a", "a"]], [{"a"}], 2), "more than once"),
    (lambda: rm.ndcg_at_k([["a"]], [{"a"}], 0), "positive integer"),
    (lambda: rm.mrr(["ab"], [{"a"}]), "not a string"),
    (lambda: rm.mrr([["a"]], ["a"]), "not a string"),
    (lambda: rm.ndcg_at_k([["a"]], [{"a"}], 1, gain="log"), "gain must be"),  # type: ignore[arg-type]
])
def test_bad_input(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        call()


def test_accepts_any_hashable_ids() -> None:
    assert rm.ndcg_at_k([[3, 1, 2]], [{1}], 3) == pytest.approx(1 / L2_3)
    assert rm.mrr([(3, 1, 2)], [frozenset({2})]) == pytest.approx(1 / 3)
