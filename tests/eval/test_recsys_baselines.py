"""EASE, item-kNN and SASRec (unipgen.eval.recsys_baselines, unipgen.eval.sasrec) on tiny
synthetic data: EASE equals its closed form (a hand-computed 2-item case and the dense formula),
both EASE and item-kNN rank a planted co-occurrence first, and SASRec learns a planted
deterministic order (item i is always followed by i + 1) far above chance in seconds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from unipgen.eval.recsys_baselines import Ease, ItemKnn, ease_closed_form


def planted(n_users: int = 40, n_items: int = 30, seed: int = 0) -> sparse.csr_matrix:
    """Random sparse interactions plus a planted pair: whoever has item 0 also has item 1."""
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.1).astype(np.float64)
    x[: n_users // 2, 0] = 1.0
    x[: n_users // 2, 1] = 1.0
    x[n_users // 2 :, [0, 1]] = 0.0
    return sparse.csr_matrix(x)


def test_ease_hand_computed_two_items() -> None:
    # X = [[1, 1], [1, 1]], λ = 1: XᵀX + I = [[3, 2], [2, 3]], P = [[3, -2], [-2, 3]] / 5,
    # B_01 = −P_01 / P_11 = (2/5) / (3/5) = 2/3, diag(B) = 0.
    x = np.ones((2, 2))
    assert np.allclose(ease_closed_form(x, 1.0), [[0.0, 2 / 3], [2 / 3, 0.0]])
    assert np.allclose(Ease(sparse.csr_matrix(x)).scores(np.array([0]), 1.0), [[2 / 3, 2 / 3]])


@pytest.mark.parametrize("lam", [0.5, 10.0, 300.0])
def test_ease_woodbury_equals_closed_form(lam: float) -> None:
    x = planted()
    rows = np.array([0, 5, 25, 39])
    expected = x[rows].toarray() @ ease_closed_form(x, lam)
    assert np.allclose(Ease(x).scores(rows, lam), expected, atol=1e-8)


def test_ease_and_itemknn_rank_the_planted_co_occurrence_first() -> None:
    x = planted()
    # A user who has only item 0: item 1 (always seen with 0) must come first among the rest.
    probe = sparse.vstack([x, sparse.csr_matrix(np.eye(1, x.shape[1]))]).tocsr()
    row = np.array([probe.shape[0] - 1])
    for scores in (Ease(probe).scores(row, 10.0)[0], ItemKnn(probe, max_k=5).scores(row, 5)[0]):
        scores[0] = -np.inf  # the user's own item
        assert int(np.argmax(scores)) == 1


def test_itemknn_keeps_k_cosine_neighbours() -> None:
    x = sparse.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=float))
    knn = ItemKnn(x, max_k=3)
    dense = x.toarray()
    unit = dense / np.linalg.norm(dense, axis=0)
    cosine = unit.T @ unit
    np.fill_diagonal(cosine, 0.0)
    assert np.allclose(knn.weights(3).toarray(), cosine, atol=1e-6)  # k = all others: plain cosine
    one = knn.weights(1).toarray()
    assert (np.count_nonzero(one, axis=1) == 1).all()
    assert np.allclose(one.max(axis=1), cosine.max(axis=1), atol=1e-6)  # the nearest one kept
    assert np.allclose(knn.scores(np.array([0]), 3), dense[[0]] @ cosine, atol=1e-6)


def test_sasrec_learns_a_planted_order() -> None:
    pytest.importorskip("torch")
    from unipgen.eval import sasrec

    n_items, rng = 40, np.random.default_rng(0)
    # Each user walks i, i+1, i+2, ... (mod n) from a random start: the next item is determined.
    seqs = [(rng.integers(n_items) + np.arange(int(rng.integers(8, 20)))) % n_items + 1 for _ in range(200)]
    config = sasrec.SasRecConfig(hidden=32, blocks=1, max_len=10, dropout=0.0, lr=5e-3, max_epochs=40, patience=40)
    model, _, _ = sasrec.train(seqs, n_items, config, seed=0)
    scores = sasrec.score_users(model, seqs, np.arange(len(seqs)), config.max_len)
    expected = np.array([s[-1] % n_items for s in seqs])  # the id after the last (0-based item index)
    hit1 = float(np.mean(np.argmax(scores, axis=1) == expected))
    assert hit1 > 0.8, hit1  # chance is 1/40
