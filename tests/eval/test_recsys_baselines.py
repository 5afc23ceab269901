"""EASE, item-kNN and SASRec (unipgen.eval.recsys_baselines, unipgen.eval.sasrec) on tiny
synthetic data: EASE equals its closed form (a hand-computed 2-item case and the dense formula),
both EASE and item-kNN rank a planted co-occurrence first; SASRec's epoch covers every prefix
of every sequence exactly once with its own past as context, training is deterministic under a
seed, and both losses learn a planted deterministic order (item i is always followed by i + 1)
far above chance in seconds."""

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


def planted_walks(n_items: int = 40, n_users: int = 200) -> list[np.ndarray]:
    """Each user walks i, i+1, i+2, ... (mod n) from a random start: the next item is determined."""
    rng = np.random.default_rng(0)
    return [(rng.integers(n_items) + np.arange(int(rng.integers(8, 20)))) % n_items + 1 for _ in range(n_users)]


@pytest.mark.parametrize("n, max_len", [(2, 5), (7, 3), (12, 5), (30, 4)])
def test_sasrec_blocks_cover_every_target_once(n: int, max_len: int) -> None:
    pytest.importorskip("torch")
    from unipgen.eval import sasrec

    for first in range(1, max_len + 1):
        blocks = sasrec.target_blocks(n, max_len, first)
        covered = sorted(t for lo, hi in blocks for t in range(lo, hi))
        assert covered == list(range(1, n))
        assert all(hi - lo <= max_len for lo, hi in blocks) and blocks[0][1] - blocks[0][0] <= first


def test_sasrec_windows_train_on_every_prefix_with_its_past() -> None:
    pytest.importorskip("torch")
    from unipgen.eval import sasrec

    max_len, rng = 4, np.random.default_rng(1)
    seqs = [np.arange(1, 12) * 10, np.array([5, 6]), np.array([7])]  # a 1-item user has no target
    inputs, targets = sasrec.windows(seqs, max_len, rng)
    seen = []
    for x, y in zip(inputs, targets):
        for p in np.flatnonzero(y >= 0):
            context = x[: p + 1]
            assert (context > 0).all()  # right-padded: a target sees no padding
            seen.append((tuple(context), int(y[p]) + 1))
    expected = [(tuple(s[max(0, t - max_len) : t]), int(s[t])) for s in seqs for t in range(1, len(s))]
    # every prefix (its last ≤ max_len items) → next item, once; early targets of a block see less
    assert sorted(t for _, t in seen) == sorted(t for _, t in expected)
    for context, target in seen:
        full = next(c for c, t in expected if t == target)
        assert context == full[len(full) - len(context) :]


def test_sasrec_quick_windows_hold_only_the_latest_targets() -> None:
    pytest.importorskip("torch")
    from unipgen.eval import sasrec

    seqs = [np.arange(1, 12), np.array([5, 6])]
    inputs, targets = sasrec.windows(seqs, 4, np.random.default_rng(0), every_prefix=False)
    assert inputs.tolist() == [[7, 8, 9, 10], [5, 0, 0, 0]]
    assert targets.tolist() == [[7, 8, 9, 10], [5, -1, -1, -1]]  # 0-based: items 8..11 and 6


def test_sasrec_training_is_deterministic_under_a_seed() -> None:
    pytest.importorskip("torch")
    from unipgen.eval import sasrec

    seqs = planted_walks(n_users=30)
    config = sasrec.SasRecConfig(hidden=16, blocks=1, max_len=6, batch_size=16, max_epochs=2, patience=2)
    runs = [sasrec.train(seqs, 40, config, seed=3)[0] for _ in range(2)]
    scores = [sasrec.score_users(m, seqs, np.arange(5), config.max_len) for m in runs]
    assert np.array_equal(scores[0], scores[1])
    other = sasrec.train(seqs, 40, config, seed=4)[0]
    assert not np.array_equal(scores[0], sasrec.score_users(other, seqs, np.arange(5), config.max_len))


def test_sasrec_rejects_an_unknown_loss() -> None:
    pytest.importorskip("torch")
    from unipgen.errors import InvalidInputError
    from unipgen.eval import sasrec

    with pytest.raises(InvalidInputError, match="loss 'mse'"):
        sasrec.SasRecConfig(loss="mse")  # type: ignore[arg-type]


@pytest.mark.parametrize("loss, epochs", [("ce", 20), ("bce", 30)])
def test_sasrec_learns_a_planted_order(loss: str, epochs: int) -> None:
    pytest.importorskip("torch")
    from unipgen.eval import sasrec

    n_items, seqs = 40, planted_walks()
    config = sasrec.SasRecConfig(hidden=32, blocks=1, max_len=10, dropout=0.0, lr=5e-3, loss=loss,  # type: ignore[arg-type]
                                 batch_size=32, max_epochs=epochs, patience=epochs)
    model, _, _ = sasrec.train(seqs, n_items, config, seed=0)
    scores = sasrec.score_users(model, seqs, np.arange(len(seqs)), config.max_len)
    expected = np.array([s[-1] % n_items for s in seqs])  # the id after the last (0-based item index)
    hit1 = float(np.mean(np.argmax(scores, axis=1) == expected))
    assert hit1 > 0.8, hit1  # chance is 1/40
