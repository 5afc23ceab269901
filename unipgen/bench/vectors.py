"""Benchmarks of ``unipgen.memory.vectors.VectorIndex``: per-user exact search and catalog ANN.

Each function returns a plain dict of numbers (latencies in ms, times in s) and
the configuration it ran with, each next to a naive baseline measured in the
same process. Query timings run faiss on one thread; numpy keeps its BLAS
default (OpenBLAS may use both cores for a large matrix-vector product). `unipgen bench memory`
runs both: a 1M catalog and 1000 users (100k and 200 with `--quick`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from unipgen.memory.vectors import CATALOG, AnnConfig, VectorIndex

K = 10  # results per query
_EXACT_QUERIES = 50  # the exact 1M baseline takes ~0.1 s a query: time a subset


def bench_user_search(
    n_users: int = 1000, per_user: int = 1000, dim: int = 384, queries: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Warm per-user exact top-10 latency, against a boolean mask over the full matrix."""
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    vectors = _normalise(rng.standard_normal((n_users * per_user, dim), dtype=np.float32))
    owners = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    index = VectorIndex(dim, "ip")
    started = time.perf_counter()
    index.add(np.arange(len(vectors), dtype=np.int64), owners, vectors)
    add_s = time.perf_counter() - started

    users = rng.integers(n_users, size=queries).tolist()
    qs = _normalise(rng.standard_normal((queries, dim), dtype=np.float32))
    work = list(zip(users, qs))
    indexed = _warm_latencies_ms(lambda u, q: index.search_user(u, q, K), work)
    naive = _warm_latencies_ms(lambda u, q: _masked_top_k(vectors, owners, u, q), work)
    return {
        "user_search_p50_ms": _pct(indexed, 50),
        "user_search_p99_ms": _pct(indexed, 99),
        "baseline_user_search_p50_ms": _pct(naive, 50),
        "baseline_user_search_p99_ms": _pct(naive, 99),
        "user_search_add_s": round(add_s, 2),
        "user_search_config": {
            "n_users": n_users,
            "per_user": per_user,
            "dim": dim,
            "queries": queries,
            "k": K,
            "faiss_threads": 1,
            "baseline": "numpy over the full matrix with a boolean mask of the user's rows",
        },
    }


def bench_ann(
    n: int = 1_000_000, dim: int = 384, queries: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Catalog ANN (VectorIndex with default AnnConfig) latency, recall@10 and build time.

    Recall is against exact faiss IndexFlatIP on the same queries, which is also
    the latency baseline (single query, one thread). Build uses two faiss
    threads; queries use one.
    """
    import faiss

    data = ClusteredData(dim, np.random.default_rng(seed))
    base = data.sample(n)
    qs = data.sample(queries)

    faiss.omp_set_num_threads(2)
    index, build_s = _build_catalog(base, dim)
    flat = faiss.IndexFlatIP(dim)
    flat.add(base)
    del base
    _, truth = flat.search(qs, K)

    faiss.omp_set_num_threads(1)
    found: list[np.ndarray] = []
    ann_ms = _warm_latencies_ms(
        lambda q: found.append(index.search_global(q, K)[0]), ((q,) for q in qs)
    )
    recall = np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found[-queries:], truth)])
    exact_work = [(q[None, :],) for q in qs[:_EXACT_QUERIES]]
    exact_ms = _warm_latencies_ms(lambda q: flat.search(q, K), exact_work, warmup=5)
    return {
        "ann_p50_ms": _pct(ann_ms, 50),
        "ann_p99_ms": _pct(ann_ms, 99),
        "ann_recall_at_10": round(float(recall), 4),
        "ann_build_s": round(build_s, 1),
        "exact_p50_ms": _pct(exact_ms, 50),
        "exact_p99_ms": _pct(exact_ms, 99),
        "ann_index": index.ann_params,
        "ann_config": {
            "n": n,
            "dim": dim,
            "queries": queries,
            "exact_queries": len(exact_work),
            "k": K,
            "faiss_threads_query": 1,
            "faiss_threads_build": 2,
            "data": data.describe(),
            "baseline": "faiss IndexFlatIP, one query at a time",
        },
    }


class ClusteredData:
    """Synthetic embeddings of low intrinsic dimension, L2-normalised.

    A point is a random one of ``centres`` cluster centres in a ``latent_dim``
    space plus Gaussian spread, projected linearly to ``dim`` dims, plus small
    isotropic noise. Base vectors and queries are independent draws from it.
    """

    def __init__(
        self,
        dim: int,
        rng: np.random.Generator,
        latent_dim: int = 24,
        centres: int = 1000,
        spread: float = 0.8,  # within-cluster std vs the centres' std of 1: clusters overlap
        noise: float = 0.1,  # per-dim noise std, relative to the projected signal's ~1
    ) -> None:
        self._rng = rng
        self._centres = rng.standard_normal((centres, latent_dim), dtype=np.float32)
        # scaled so a projected coordinate has about the latent point's per-dim variance
        projection = rng.standard_normal((latent_dim, dim), dtype=np.float32)
        self._projection = projection / np.sqrt(latent_dim)
        self._spread, self._noise = spread, noise

    def describe(self) -> dict[str, Any]:
        """The generator's parameters, for reports."""
        centres, latent_dim = self._centres.shape
        return {
            "centres": centres,
            "latent_dim": latent_dim,
            "spread": self._spread,
            "noise": self._noise,
        }

    def sample(self, n: int, chunk: int = 100_000) -> np.ndarray:
        """``n`` fresh float32 unit vectors, made in chunks to bound temporary memory."""
        out = np.empty((n, self._projection.shape[1]), dtype=np.float32)
        for start in range(0, n, chunk):
            out[start : start + chunk] = self._sample_chunk(min(chunk, n - start))
        return out

    def _sample_chunk(self, n: int) -> np.ndarray:
        rng = self._rng
        centres, latent_dim = self._centres.shape
        latent = self._centres[rng.integers(centres, size=n)]
        latent += self._spread * rng.standard_normal((n, latent_dim), dtype=np.float32)
        x = latent @ self._projection
        x += self._noise * rng.standard_normal(x.shape, dtype=np.float32)
        return _normalise(x)


def _build_catalog(base: np.ndarray, dim: int) -> tuple[VectorIndex, float]:
    """A catalog-only index of ``base`` with its IVF trained; returns it and the seconds taken."""
    index = VectorIndex(dim, "ip", AnnConfig())
    started = time.perf_counter()
    index.add(np.arange(len(base), dtype=np.int64), np.full(len(base), CATALOG), base)
    index.search_global(base[0], 1)  # the first global search trains the IVF
    return index, time.perf_counter() - started


def _masked_top_k(vectors: np.ndarray, owners: np.ndarray, user: int, q: np.ndarray) -> np.ndarray:
    """The naive per-user search: select the user's rows by a mask, score them all."""
    mask = owners == user
    scores = vectors[mask] @ q
    top = np.argpartition(-scores, K - 1)[:K]
    return np.flatnonzero(mask)[top[np.argsort(-scores[top])]]


def _warm_latencies_ms(
    search: Callable[..., object], work: Iterable[tuple], warmup: int | None = None
) -> np.ndarray:
    """Per-call latencies of ``search(*args)`` over ``work``, after an untimed warm-up.

    The warm-up runs the first ``warmup`` items (all of them when None).
    """
    work = list(work)
    for args in work[:warmup]:
        search(*args)
    latencies = np.empty(len(work))
    for i, args in enumerate(work):
        started = time.perf_counter_ns()
        search(*args)
        latencies[i] = (time.perf_counter_ns() - started) / 1e6
    return latencies


def _pct(latencies_ms: np.ndarray, q: float) -> float:
    return round(float(np.percentile(latencies_ms, q)), 3)


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x

