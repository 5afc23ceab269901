"""Standard recommender baselines for the MovieLens harness: EASE, item-kNN and SASRec.

Why: a preference model that only beats popularity says little; these are the baselines the
recommender literature reports next-item results against. All three see only the training part
of `leave_last_out` (never a held-out rating), are tuned on the even-userId users with the same
protocol and NDCG@10 as the model, and are reported on the odd-userId users by
`unipgen.eval.movielens` beside the model and popularity.

- EASE (Steck 2019): B = I − P / diag(P) with P = (XᵀX + λI)⁻¹ on the binary user × item
  training matrix X, diag(B) = 0; a user's scores are x_u B. With far fewer users than items
  (610 vs 9.7k) P comes from the Woodbury identity, P = (I − Xᵀ(XXᵀ + λI)⁻¹X)/λ, and one
  eigendecomposition of XXᵀ serves every λ tried.
- item-kNN (Deshpande & Karypis 2004): cosine item-item similarity on X, each item keeps its k
  most similar items, a user's score for j = sum of the similarities of their items to j.
- SASRec (Kang & McAuley 2018): causal self-attention over the user's item sequence
  (`unipgen.eval.sasrec`, torch imported only there), early-stopped on the tuning users.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from unipgen.eval.movielens_data import Baseline, evaluator_ndcg

if TYPE_CHECKING:
    from unipgen.eval.movielens import Evaluator
    from unipgen.eval.movielens_data import MovieLens, Split

EASE_LAMBDAS = (10.0, 30.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
KNN_KS = (10, 20, 50, 100, 200, 500)
#: The baselines the harness reports, in report order (their result keys are `{name}_ndcg_at_10`).
BASELINES = ("ease", "itemknn", "sasrec")


def train_matrix(data: MovieLens, split: Split) -> sparse.csr_matrix:
    """Binary (split position × item) matrix of every user's training ratings."""
    rows = np.repeat(np.arange(len(split.users)), split.ends - split.starts)
    items = np.concatenate([data.item[s:e] for s, e in zip(split.starts, split.ends)])
    x = sparse.csr_matrix((np.ones(len(items)), (rows, items)), shape=(len(split.users), data.n_items))
    x.data[:] = 1.0  # a movie rated twice is still one interaction
    return x


# ---------------------------------------------------------------- EASE


def ease_closed_form(x: np.ndarray | sparse.spmatrix, lam: float) -> np.ndarray:
    """EASE's item-item weights B by the paper's formula (dense inverse: small catalogues)."""
    # scipy's issparse is no TypeGuard: mypy cannot tell that x is sparse where toarray is called.
    x = x.toarray() if sparse.issparse(x) else np.asarray(x, dtype=np.float64)  # type: ignore[union-attr]
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = -p / np.diag(p)  # column j divided by P_jj
    np.fill_diagonal(b, 0.0)
    return b


class Ease:
    """EASE scores x_u B for any λ from one eigendecomposition of the user Gram matrix XXᵀ."""

    def __init__(self, x: sparse.csr_matrix) -> None:
        self.x = sparse.csr_matrix(x, dtype=np.float64)
        gram = (self.x @ self.x.T).toarray()
        self.eigvals, self.eigvecs = np.linalg.eigh(gram)
        # Columns of X in the eigenbasis: diag(Xᵀ K⁻¹ X) = Σ_k (VᵀX)_k,i² / (s_k + λ).
        self.projected = np.asarray((self.x.T @ self.eigvecs).T)  # (users, items)
        self.projected_sq = self.projected**2

    def scores(self, rows: np.ndarray, lam: float) -> np.ndarray:
        """Scores (len(rows) × items) of the users at split positions `rows`."""
        inv = 1.0 / (self.eigvals + lam)
        xu = self.x[rows].toarray()
        # X_u Xᵀ K⁻¹ X = (X_u Xᵀ V) diag(inv) (VᵀX)
        xu_p = (xu - ((self.x[rows] @ self.x.T) @ self.eigvecs * inv) @ self.projected) / lam
        diag = (1.0 - inv @ self.projected_sq) / lam
        return xu - xu_p / diag  # x_u (I − P/diag P); own items are masked by the caller


# ---------------------------------------------------------------- item-kNN


class ItemKnn:
    """Cosine item-item similarities, each item's top `max_k` neighbours kept (chunked)."""

    def __init__(self, x: sparse.csr_matrix, max_k: int = max(KNN_KS), chunk: int = 1024) -> None:
        x = sparse.csc_matrix(x, dtype=np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel())
        xn = (x @ sparse.diags(1.0 / np.maximum(norms, 1e-12))).tocsc()
        xt = xn.T.tocsr()
        n = x.shape[1]
        self.max_k = min(max_k, n - 1)
        self.neighbours = np.zeros((n, self.max_k), dtype=np.int64)
        self.sims = np.zeros((n, self.max_k), dtype=np.float32)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            sim = (xt[start:stop] @ xn).toarray()
            sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never its own neighbour
            top = np.argpartition(-sim, self.max_k - 1, axis=1)[:, : self.max_k]
            values = np.take_along_axis(sim, top, axis=1)
            order = np.argsort(-values, axis=1, kind="stable")  # best neighbour first
            self.neighbours[start:stop] = np.take_along_axis(top, order, axis=1)
            self.sims[start:stop] = np.maximum(np.take_along_axis(values, order, axis=1), 0.0)
        self.x = sparse.csr_matrix(x)

    def weights(self, k: int) -> sparse.csr_matrix:
        """Item × item matrix S_k: row i holds i's k nearest neighbours' similarities."""
        k = min(k, self.max_k)
        n = self.neighbours.shape[0]
        rows = np.repeat(np.arange(n), k)
        return sparse.csr_matrix(
            (self.sims[:, :k].ravel(), (rows, self.neighbours[:, :k].ravel())), shape=(n, n)
        )

    def scores(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Scores (len(rows) × items): Σ over the user's items i of S_k[i, j]."""
        return np.asarray((self.x[rows] @ self.weights(k)).todense(), dtype=np.float64)


# ---------------------------------------------------------------- tuning and the harness


def tune_grid(
    name: str,
    grid: Sequence[Any],
    key: str,
    score: Callable[[np.ndarray, Any], np.ndarray],
    tuning: Evaluator,
    test: Evaluator,
) -> Baseline:
    """Try every value of one hyperparameter on the tuning users; score the test users with the best."""
    trials = []
    for value in grid:
        trials.append({key: value, "ndcg": round(evaluator_ndcg(tuning, score(tuning.users, value)), 4)})
    best = max(trials, key=lambda t: t["ndcg"])  # first of equals: the smaller value
    return Baseline(name, score(test.users, best[key]), {key: best[key]}, best["ndcg"], trials=trials)


def fit_baselines(
    data: MovieLens,
    split: Split,
    tuning: Evaluator,
    test: Evaluator,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
    seed: int = 0,
) -> dict[str, Baseline]:
    """EASE, item-kNN and SASRec, each tuned on `tuning` and scored on `test` (keys: BASELINES)."""
    import time

    say = log or (lambda _message: None)
    x = train_matrix(data, split)
    out: dict[str, Baseline] = {}
    started = time.perf_counter()
    ease = Ease(x)
    out["ease"] = tune_grid("ease", EASE_LAMBDAS, "lambda", ease.scores, tuning, test)
    out["ease"].seconds = round(time.perf_counter() - started, 1)
    say(f"EASE: lambda {out['ease'].params['lambda']} (tuning NDCG@10 {out['ease'].tuning_ndcg})")
    started = time.perf_counter()
    knn = ItemKnn(x)
    out["itemknn"] = tune_grid("itemknn", KNN_KS, "k", knn.scores, tuning, test)
    out["itemknn"].seconds = round(time.perf_counter() - started, 1)
    say(f"item-kNN: k {out['itemknn'].params['k']} (tuning NDCG@10 {out['itemknn'].tuning_ndcg})")
    started = time.perf_counter()
    from unipgen.eval import sasrec

    config = sasrec.SasRecConfig.quick() if quick else sasrec.SasRecConfig()
    out["sasrec"] = sasrec.fit_and_score(data, split, tuning, test, config, seed=seed, log=say)
    out["sasrec"].seconds = round(time.perf_counter() - started, 1)
    return out
