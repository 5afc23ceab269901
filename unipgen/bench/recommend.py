"""Recommendations at scale: request latency over a large catalog, and fit / refit time and memory.

`unipgen bench recommend --json`. Synthetic data with the shapes of a real tenant (items chosen
with a Zipf popularity inside one of 50 taste groups per user), so the figures are about cost,
not quality (`unipgen eval movielens` measures quality). Three parts:

- **recommend**: a tenant of `items` catalog items (100k) whose behavior space is stored as a fit
  of the product's width (256 factors + 384 content = 640-d); one user with `events` (1k) rate
  events. `recommend_p50_ms` / `recommend_p99_ms`: `UserModel.recommend(k=10)` warm, the whole
  request (the user's events from the database, their vectors from the index in memory, the
  taste folded in, the IVF search, reasons, texts). Beside it, in the same process,
  `numpy_p50_ms` / `numpy_p99_ms`: brute force, the same query times the full item matrix,
  seen items masked, top 10 by argpartition (ranking only, no database). `recall_at_10`: share
  of the exact top 10 that the service's list holds (the IVF index is approximate).
- **fit**: `fit_behavior_space` (the product's fit) on `fit_users` x `fit_items` x `fit_events`
  (100k x 50k x 10M), run in a child process so `fit_peak_rss_mb` is that process's peak
  (arrays, sparse matrix, ARPACK); `fit_s` its wall time.
- **refit after forget**: the same fit without one user's events (what the refit job a
  forget queues does), `refit_s`.

`--quick`: 20k items, 200 events, and a 10k x 5k x 200k fit (a smoke run).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

FULL = {"items": 100_000, "events": 1_000, "requests": 300, "fit_users": 100_000, "fit_items": 50_000,
        "fit_events": 10_000_000}
QUICK = {"items": 20_000, "events": 200, "requests": 50, "fit_users": 10_000, "fit_items": 5_000, "fit_events": 200_000}
FACTORS, TEXT_DIM = 256, 384


def run(quick: bool = False) -> dict[str, Any]:
    from unipgen.eval.environment import machine

    sizes = QUICK if quick else FULL
    started = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "recommend", "quick": quick, "sizes": sizes}
    result |= _recommend(sizes["items"], sizes["events"], sizes["requests"])
    result |= _fit_in_child(sizes["fit_users"], sizes["fit_items"], sizes["fit_events"])
    result["machine"] = machine("numpy", "scipy", "faiss")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


# ---------------------------------------------------------------- recommend latency


def _recommend(n_items: int, n_events: int, requests: int) -> dict[str, Any]:
    from unipgen.core.behavior_space import BEHAVIOR_SPACE, FitConfig
    from unipgen.core.recommend import Recommender, taste
    from unipgen.memory import MemoryStore
    from unipgen.memory.fits import FitOutput
    from unipgen.settings import Settings

    rng = np.random.default_rng(0)
    vectors = _item_vectors(rng, n_items)
    keys = [f"i{n}" for n in range(n_items)]
    with tempfile.TemporaryDirectory(prefix="unipgen-bench-recommend-") as home:
        store = MemoryStore.open(Settings(home=Path(home), refit_every_events=0))
        store.users.create_tenant("t")
        store.catalog.add_items("t", [{"key": key, "text": f"item {key}"} for key in keys])
        config = FitConfig()
        store.fits.save_fit("t", FitOutput(space=BEHAVIOR_SPACE, items=keys, vectors=vectors,
                                      mapping=np.zeros((TEXT_DIM, FACTORS), np.float32), config=config.to_dict(),
                                      stats={"users": 1, "items": n_items, "events": n_events}, user_ids=[],
                                      last_event_id=0))
        group = rng.integers(50)
        chosen = (group * (n_items // 50) + rng.zipf(1.5, size=n_events)) % n_items
        t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
        store.events.ingest_events("t", [{"user": "bench", "type": "rate", "item": keys[i], "value": float(rng.integers(1, 6)),
                                   "ts": t0 + timedelta(minutes=n)} for n, i in enumerate(chosen.tolist())],
                            create_users=True)
        recommender = Recommender(store)
        for _ in range(3):  # warm: the IVF index trains on the first search, the key map loads
            recommender.recommend("t", "bench", k=10)
        service = _timed(lambda: recommender.recommend("t", "bench", k=10), requests)
        found = recommender.recommend("t", "bench", k=10)
        read = store.reads.taste_read("t", "bench", BEHAVIOR_SPACE)
        events = read.events
        tasted = taste(events, store.reads.item_vectors("t", BEHAVIOR_SPACE, [e.item for e in events], read=read),
                       config.preference)
        assert tasted is not None  # the bench user has events
        query = tasted.query
        seen = np.array(sorted({int(e.item[1:]) for e in events}))
        exact = _brute_force(vectors, query, seen)
        numpy = _timed(lambda: _brute_force(vectors, query, seen), requests)
        index_params = store.indexes.get(store_tenant_id(store), BEHAVIOR_SPACE).ann_params
        store.close()
    overlap = len({f"i{i}" for i in exact.tolist()} & {r.item for r in found.items}) / 10
    return {"recommend_p50_ms": service[0], "recommend_p99_ms": service[1], "numpy_p50_ms": numpy[0],
            "numpy_p99_ms": numpy[1], "p99_ratio_vs_numpy": round(service[1] / numpy[1], 2),
            "recall_at_10": overlap, "catalog": n_items, "dim": int(vectors.shape[1]), "user_events": n_events,
            "distinct_seen": len(seen), "index": index_params}


def store_tenant_id(store: Any) -> int:
    from unipgen.memory.lookups import tenant_id_of

    with store.session() as session:
        return tenant_id_of(session, "t")


def _item_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clustered vectors of the product's width: factors with popularity in their length, unit content."""
    centers = rng.standard_normal((50, FACTORS + TEXT_DIM)).astype(np.float32)
    vectors = centers[np.arange(n) % 50] + 0.8 * rng.standard_normal((n, FACTORS + TEXT_DIM)).astype(np.float32)
    factors = vectors[:, :FACTORS] / np.linalg.norm(vectors[:, :FACTORS], axis=1, keepdims=True)
    factors *= (1.0 / np.sqrt(1 + np.arange(n) % 997))[:, None] * 3  # popular items are longer
    content = vectors[:, FACTORS:] / np.linalg.norm(vectors[:, FACTORS:], axis=1, keepdims=True)
    return np.ascontiguousarray(np.hstack([factors, content]), dtype=np.float32)


def _brute_force(matrix: np.ndarray, query: np.ndarray, seen: np.ndarray) -> np.ndarray:
    scores = matrix @ query
    scores[seen] = -np.inf
    top = np.argpartition(-scores, 10)[:10]
    return top[np.argsort(-scores[top])]


def _timed(call: Any, n: int) -> tuple[float, float]:
    """p50 and p99 in milliseconds of `n` calls."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return round(float(np.percentile(times, 50)), 2), round(float(np.percentile(times, 99)), 2)


# ---------------------------------------------------------------- fit and refit at scale


def _fit_in_child(users: int, items: int, events: int) -> dict[str, Any]:
    """Run `_fit_and_refit` in a fresh process (`python -m unipgen.bench.recommend --fit ...`), so its
    peak RSS is the fit's alone."""
    import json
    import subprocess

    done = subprocess.run([sys.executable, "-m", __name__, "--fit", str(users), str(items), str(events)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _fit_and_refit(users: int, items: int, events: int) -> dict[str, Any]:
    from unipgen.core.behavior_space import FitConfig, fit_behavior_space

    rng = np.random.default_rng(0)
    user = rng.integers(users, size=events)
    item = ((user % 50) * (items // 50) + rng.zipf(1.3, size=events)) % items
    types = np.full(events, "rate", dtype=object)
    values = rng.integers(1, 11, size=events) / 2.0
    text = rng.standard_normal((items, TEXT_DIM)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    keys = [f"i{n}" for n in range(items)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    fitted = fit_behavior_space(user, item, types, values, keys, text, FitConfig())
    fit_s = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    keep = user != user[0]  # forget one user: the refit job's work
    started = time.perf_counter()
    refitted = fit_behavior_space(user[keep], item[keep], types[keep], values[keep], keys, text, FitConfig())
    refit_s = time.perf_counter() - started
    return {"fit_s": round(fit_s, 1), "fit_peak_rss_mb": round(peak), "rss_before_fit_mb": round(before),
            "refit_after_forget_s": round(refit_s, 1), "fit_users": users, "fit_items": items, "fit_events": events,
            "fit_dim": int(fitted.vectors.shape[1]), "refit_changed": bool(not np.array_equal(fitted.vectors,
                                                                                               refitted.vectors))}


if __name__ == "__main__":  # the fit's own process (`_fit_in_child`)
    import json

    print(json.dumps(_fit_and_refit(*map(int, sys.argv[2:5]))))
