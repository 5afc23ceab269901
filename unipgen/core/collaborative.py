"""Item vectors learned from behaviors: the collaborative ("behavior") embedding space.

Content embeddings (e.g. MiniLM of "Title (Year) — Genres") say what an item is about; they do
not know which items the same people pick. `fit_item_factors` factorises the user × item
interaction matrix with a truncated SVD (PureSVD, Cremonesi et al. 2010), giving each item a
vector in which items co-chosen by the same users lie close. The preference model
(`unipgen.core.preference`) consumes these vectors exactly like content vectors: a user's
preference is a decayed weighted mean of the vectors of the items they acted on, and
``score = preference · item`` is the classic SVD "folding-in" recommendation.

These vectors are derived from EVERY user's behavior. Forgetting a user (or any of their events)
therefore requires refitting the factors without those events, or the forgotten behavior keeps
shaping everyone's recommendations.

Pure numpy + scipy; deterministic for a given input and `seed`.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.linalg import svds


def interaction_matrix(
    user_idx: np.ndarray, item_idx: np.ndarray, weights: np.ndarray, n_items: int
) -> csr_matrix:
    """Sparse users × items matrix of summed interaction weights (repeat pairs add up)."""
    users = np.asarray(user_idx, dtype=np.int64)
    n_users = int(users.max()) + 1 if len(users) else 1
    data = np.asarray(weights, dtype=np.float64)
    matrix = csr_matrix(
        (data, (users, np.asarray(item_idx, dtype=np.int64))), shape=(n_users, n_items)
    )
    matrix.sum_duplicates()
    return matrix


def fit_item_factors(
    user_idx: np.ndarray,
    item_idx: np.ndarray,
    weights: np.ndarray,
    n_items: int,
    dim: int = 64,
    seed: int = 0,
    singular_value_power: float = 0.5,
) -> np.ndarray:
    """Item factors (n_items, dim) float32 from a truncated SVD of the interaction matrix.

    `user_idx`/`item_idx` are 0-based indices of each interaction and `weights` its strength
    (1 for implicit feedback, or e.g. a rating). With R ≈ U·diag(s)·Vᵀ, item i gets
    ``V[i] · s ** singular_value_power``: power 0 is PureSVD's item space (a user's summed
    item vectors dotted with an item is exactly PureSVD's score), 0.5 splits the singular values
    between users and items, 1 gives the items' projections RᵀU. Vector length grows with how
    many users chose an item, so dot products keep a popularity prior; items nobody interacted
    with get zero vectors. `dim` is capped at min(n_users, n_items) − 1.

    Derived from all users' behavior: a forget must trigger a refit (see the module docstring).
    Deterministic: a seeded ARPACK start vector and a fixed sign per component.
    """
    matrix = interaction_matrix(user_idx, item_idx, weights, n_items)
    k = min(dim, min(matrix.shape) - 1)
    start = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    _, values, vt = svds(matrix, k=k, v0=start, solver="arpack")
    order = np.argsort(-values)  # svds returns ascending singular values
    values, components = values[order], _fix_signs(vt[order])
    factors = components.T * values**singular_value_power
    factors[matrix.getnnz(axis=0) == 0] = 0.0  # exact zeros, not ARPACK's ~1e-16 noise
    return np.ascontiguousarray(factors, dtype=np.float32)


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each singular vector so its largest-magnitude entry is positive (SVD signs are
    arbitrary; this makes the output reproducible across solvers and platforms)."""
    rows = np.arange(len(components))
    signs = np.sign(components[rows, np.abs(components).argmax(axis=1)])
    return components * np.where(signs == 0, 1.0, signs)[:, None]
