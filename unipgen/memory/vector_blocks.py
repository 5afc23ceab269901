"""The storage under a `VectorIndex`: one owner's vectors in a growable contiguous block, and
exact top-k over a block's scores."""

from __future__ import annotations

import numpy as np


class VectorBlock:
    """Growable contiguous storage of one owner's vectors; rows ``[0, size)`` are live."""

    __slots__ = ("ids", "size", "sqnorms", "vectors")

    def __init__(self, dim: int) -> None:
        self.vectors = np.empty((0, dim), dtype=np.float32)
        self.ids = np.empty(0, dtype=np.int64)
        self.sqnorms = np.empty(0, dtype=np.float32)  # squared L2 norms, for the l2 metric
        self.size = 0

    def live(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the live (vectors, ids, squared norms)."""
        n = self.size
        return self.vectors[:n], self.ids[:n], self.sqnorms[:n]

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows, growing capacity geometrically so appends are amortised O(1) per row."""
        end = self.size + len(ids)
        if end > len(self.ids):
            self._grow(max(end, 2 * len(self.ids), 16))
        self.vectors[self.size : end] = vectors
        self.ids[self.size : end] = ids
        self.sqnorms[self.size : end] = np.einsum("ij,ij->i", vectors, vectors)
        self.size = end

    def remove(self, ids: np.ndarray) -> int:
        """Remove the rows whose id is in ``ids``; return how many were removed.

        Holes are filled with live rows from the tail, so only the removed rows'
        worth of data moves (row order is not kept).
        """
        doomed = np.isin(self.ids[: self.size], ids)
        removed = int(doomed.sum())
        new_size = self.size - removed
        holes = np.flatnonzero(doomed[:new_size])
        movers = new_size + np.flatnonzero(~doomed[new_size : self.size])
        for array in (self.vectors, self.ids, self.sqnorms):
            array[holes] = array[movers]
        self.size = new_size
        return removed

    def _grow(self, capacity: int) -> None:
        n = self.size
        vectors = np.empty((capacity, self.vectors.shape[1]), dtype=np.float32)
        vectors[:n] = self.vectors[:n]
        ids = np.empty(capacity, dtype=np.int64)
        ids[:n] = self.ids[:n]
        sqnorms = np.empty(capacity, dtype=np.float32)
        sqnorms[:n] = self.sqnorms[:n]
        self.vectors, self.ids, self.sqnorms = vectors, ids, sqnorms


def empty_result() -> tuple[np.ndarray, np.ndarray]:
    """No results: (ids, scores) of length 0."""
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)


def top_k(
    scores: np.ndarray, ids: np.ndarray, k: int, smaller_is_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (ids, scores), best first."""
    key = scores if smaller_is_better else -scores
    if k < len(key):
        candidates = np.argpartition(key, k - 1)[:k]
    else:
        candidates = np.arange(len(key))
    order = candidates[np.argsort(key[candidates], kind="stable")]
    return ids[order], scores[order].astype(np.float32, copy=False)
