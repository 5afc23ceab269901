"""The live path on the MovieLens protocol: what the product itself recommends, through its own code.

The harness model (`unipgen.eval.movielens`) ranks with numpy on arrays. This runs the code the
service runs, with its default settings: the training ratings go into a fresh embedded store
(items with their text vectors, every rating a ``rate`` event with its timestamp), the tenant's
behavior space is fitted by `UserModel.fit` (`unipgen.core.behavior_space`, `FitConfig()`), and
each test user's ranking is `UserModel.recommend` (`unipgen.core.recommend`: their taste folded
in from their events at request time, the nearest unseen items in the space's faiss index).

Only the held-out ratings are absent from the store, as in the harness. The recommendation
lists (top `LIST_K`) become scores for the harness's ranking code: a held-out movie outside the
list ranks below every listed one (it scores 0 at NDCG@10 and HR@10 either way).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unipgen.eval.movielens_data import Baseline, evaluator_ndcg

if TYPE_CHECKING:
    from unipgen.eval.movielens import Evaluator
    from unipgen.eval.movielens_data import MovieLens, Split

#: Items each live recommendation list holds (the report's curves go up to NDCG@50).
LIST_K = 50
TENANT = "movielens"


def item_key(index: int) -> str:
    return f"m{index}"


def live_store(home: Path, data: MovieLens, train: np.ndarray, content: np.ndarray) -> object:
    """A fresh embedded store holding the catalog (with `content` as text vectors) and every
    user's training ratings (the rows `train` masks); returns the `UserModel` over it (tiny
    profile: no encoder is loaded, every item already has its text vector)."""
    from unipgen.core.usermodel import UserModel
    from unipgen.eval.movielens_data import item_text
    from unipgen.memory import MemoryStore
    from unipgen.schema.memory import EventIn, ItemIn
    from unipgen.settings import Settings

    store = MemoryStore.open(Settings(home=home, refit_every_events=0))
    store.users.create_tenant(TENANT)
    keys = [item_key(i) for i in range(data.n_items)]
    items = [ItemIn(key=key, text=item_text(title, genres)) for key, title, genres in zip(keys, data.titles, data.genres)]
    store.catalog.add_items(TENANT, items, vectors={"text": dict(zip(keys, content))})
    rows = np.flatnonzero(train)
    events = [EventIn.model_construct(user=str(int(data.user[i])), type="rate", item=keys[int(data.item[i])],
                                      value=float(data.rating[i]), meta=None,
                                      ts=datetime.fromtimestamp(int(data.ts[i]), timezone.utc)) for i in rows]
    store.events.ingest_events(TENANT, events, create_users=True)
    return UserModel(store, "tiny")


def live_scores(model: object, data: MovieLens, users: np.ndarray, split: Split) -> np.ndarray:
    """One row per user (split positions): their top-`LIST_K` recommendations scored by rank."""
    scores = np.full((len(users), data.n_items), -1.0, dtype=np.float32)
    for row, position in enumerate(users.tolist()):
        found = model.recommend(TENANT, str(int(split.users[position])), k=LIST_K)  # type: ignore[attr-defined]
        for rank, recommendation in enumerate(found.items):
            scores[row, int(recommendation.item[1:])] = LIST_K - rank
    return scores


def fit_live(data: MovieLens, split: Split, content: np.ndarray, tuning: Evaluator, test: Evaluator,
             log: Callable[[str], None] | None = None) -> tuple[Baseline, dict[str, float]]:
    """The live path with the product's defaults, scored on the tuning and test users, and the
    timings (store load, fit, recommend per user). Returned as a `Baseline` so the report treats
    it like the others; its `params` are the fit's settings."""
    say = log or (lambda _message: None)
    with tempfile.TemporaryDirectory(prefix="unipgen-live-") as home:
        started = time.perf_counter()
        model = live_store(Path(home), data, split.train, content)
        loaded = time.perf_counter()
        fit = model.fit(TENANT)  # type: ignore[attr-defined]
        fitted = time.perf_counter()
        say(f"live path: store loaded in {loaded - started:.1f} s, fitted in {fitted - loaded:.1f} s "
            f"({fit.stats['factor_dim']} factors + content, {fit.stats['items_with_events']} items with events)")
        tuning_scores = live_scores(model, data, tuning.users, split)
        test_scores = live_scores(model, data, test.users, split)
        ranked = time.perf_counter()
        model.store.close()  # type: ignore[attr-defined]
    users = len(tuning.users) + len(test.users)
    timings = {"load_s": round(loaded - started, 1), "fit_s": round(fitted - loaded, 1),
               "recommend_ms_per_user": round(1000 * (ranked - fitted) / max(users, 1), 1)}
    params = {key: value for key, value in fit.config.items() if key != "preference"}
    baseline = Baseline("live", test_scores, params, round(evaluator_ndcg(tuning, tuning_scores), 4),
                        seconds=round(ranked - started, 1))
    return baseline, timings
