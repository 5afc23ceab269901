"""The preference model (decayed long/short/negative taste vectors, drift, scoring, MMR) and the
collaborative item factors, on hand-made vectors and the shipped MovieLens sample."""

from __future__ import annotations

import csv
import json
import random
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

from unipgen.core.collaborative import fit_item_factors
from unipgen.core.preference import (
    SECONDS_PER_DAY,
    PreferenceConfig,
    PreferenceState,
    build,
    drift,
    mmr,
    preference_vectors,
    score_items,
    update,
)

SAMPLE = Path(__file__).resolve().parents[2] / "unipgen" / "data" / "movielens-sample"
DAY = SECONDS_PER_DAY
T0 = 1_600_000_000.0  # 2020-09-13, Unix seconds


def basis(dim: int, i: int) -> np.ndarray:
    """The i-th unit vector."""
    v = np.zeros(dim)
    v[i] = 1.0
    return v


def apply_all(
    events: list[tuple], vectors: np.ndarray, config: PreferenceConfig
) -> PreferenceState:
    """`update` event by event, as the incremental path does."""
    state = PreferenceState.empty(vectors.shape[1], config)
    for item, event_type, value, ts in events:
        update(state, vectors[item], event_type, value, ts, config)
    return state


def assert_states_equal(a: PreferenceState, b: PreferenceState) -> None:
    for part in ("long", "short", "negative"):
        x, y = getattr(a, part), getattr(b, part)
        assert np.array_equal(x.vector, y.vector), part
        assert (x.weight, x.exponent) == (y.weight, y.exponent), part
    assert (a.last_ts, a.count) == (b.last_ts, b.count)


def sample_ratings() -> list[tuple[int, int, float, float]]:
    """(userId, movie row index, stars, ts) of the shipped sample, in file order."""
    with open(SAMPLE / "movies.csv", newline="", encoding="utf-8") as f:
        index = {int(m["movieId"]): i for i, m in enumerate(csv.DictReader(f))}
    with open(SAMPLE / "ratings.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        (int(r["userId"]), index[int(r["movieId"])], float(r["rating"]), float(r["timestamp"]))
        for r in rows
        if int(r["movieId"]) in index
    ]


@pytest.fixture(scope="module")
def sample_factors() -> tuple[list[tuple[int, int, float, float]], np.ndarray]:
    ratings = sample_ratings()
    users, items = np.array([r[0] for r in ratings]), np.array([r[1] for r in ratings])
    n_items = int(items.max()) + 1
    return ratings, fit_item_factors(users, items, np.ones(len(ratings)), n_items, dim=6)


# ---------------------------------------------------------------- incremental vs rebuild


def test_incremental_equals_rebuild_bit_for_bit_even_out_of_order() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 24)).astype(np.float32)
    kinds = ["view", "click", "like", "rate", "purchase", "skip", "dislike"]
    pick = random.Random(0)
    events = [
        (
            int(rng.integers(40)),
            pick.choice(kinds),
            float(rng.integers(1, 11)) / 2,
            T0 + float(rng.integers(0, 400 * 86_400)),
        )
        for _ in range(300)
    ]  # timestamps deliberately unsorted
    config = PreferenceConfig()
    assert_states_equal(apply_all(events, vectors, config), build(events, vectors, config))


def test_incremental_equals_rebuild_on_movielens_sample(sample_factors) -> None:
    ratings, factors = sample_factors
    config = PreferenceConfig(short_half_life_days=1.0)
    for user in {r[0] for r in ratings}:
        events = [(item, "rate", stars, ts) for u, item, stars, ts in ratings if u == user]
        assert_states_equal(apply_all(events, factors, config), build(events, factors, config))


def test_arrival_order_does_not_change_the_preference() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((30, 8))
    events = [(i, "like", None, T0 + i * 3 * DAY) for i in range(30)]
    shuffled = events.copy()
    random.Random(1).shuffle(shuffled)
    config = PreferenceConfig()
    a, b = apply_all(events, vectors, config), apply_all(shuffled, vectors, config)
    for part in ("long", "short", "negative"):
        x, y = preference_vectors(a), preference_vectors(b)
        assert np.allclose(getattr(x, part), getattr(y, part), atol=1e-12)
    assert preference_vectors(a).short_weight == pytest.approx(preference_vectors(b).short_weight)


def test_build_accepts_a_mapping_and_datetimes() -> None:
    from datetime import datetime

    vectors = {"a": basis(3, 0), "b": basis(3, 1)}
    when = datetime(2024, 1, 1, tzinfo=UTC)
    state = build(
        [("a", "like", None, when), ("b", "view", None, when)], vectors, PreferenceConfig()
    )
    assert state.count == 2 and state.last_ts == when.timestamp()


# ---------------------------------------------------------------- decay


def test_weight_halves_after_one_half_life() -> None:
    config = PreferenceConfig(long_half_life_days=10.0, short_half_life_days=2.0)
    state = PreferenceState.empty(3, config)
    update(state, basis(3, 0), "like", None, T0, config)  # weight 1.0
    now = preference_vectors(state)
    assert (now.long_weight, now.short_weight) == pytest.approx((1.0, 1.0))
    later = preference_vectors(state, at_ts=T0 + 10 * DAY)
    assert later.long_weight == pytest.approx(0.5)  # one long half-life
    assert later.short_weight == pytest.approx(0.5**5)  # five short half-lives


def test_older_event_counts_half_in_the_direction() -> None:
    # like x at T0, like y one long half-life later: long ∝ 0.5·x + 1·y (hand-computed).
    config = PreferenceConfig(long_half_life_days=30.0, short_half_life_days=30.0)
    state = PreferenceState.empty(2, config)
    update(state, basis(2, 0), "like", None, T0, config)
    update(state, basis(2, 1), "like", None, T0 + 30 * DAY, config)
    expected = np.array([0.5, 1.0]) / np.hypot(0.5, 1.0)
    vectors = preference_vectors(state)
    assert np.allclose(vectors.long, expected) and vectors.long_weight == pytest.approx(1.5)


def test_without_decay_every_event_counts_the_same() -> None:
    config = PreferenceConfig(decay=False)
    state = PreferenceState.empty(2, config)
    update(state, basis(2, 0), "like", None, T0, config)
    update(state, basis(2, 1), "like", None, T0 + 3000 * DAY, config)
    assert np.allclose(preference_vectors(state).long, [2**-0.5, 2**-0.5])
    assert preference_vectors(state, at_ts=T0 + 9000 * DAY).long_weight == pytest.approx(2.0)


def test_a_state_refuses_a_config_with_other_half_lives() -> None:
    state = PreferenceState.empty(2, PreferenceConfig())
    with pytest.raises(ValueError, match="rebuild"):
        update(state, basis(2, 0), "like", None, T0, PreferenceConfig(short_half_life_days=1.0))


# ---------------------------------------------------------------- negatives and ratings


def test_rating_maps_to_signed_weight() -> None:
    config = PreferenceConfig()
    assert config.event_weight("rate", 5.0) == pytest.approx(1.0)
    assert config.event_weight("rate", 3.0) == 0.0
    assert config.event_weight("rate", 1.0) == pytest.approx(-1.0)
    assert config.event_weight("rate", None) == config.rate
    with pytest.raises(ValueError, match="unknown event type"):
        config.event_weight("share")


def test_negative_events_go_to_the_negative_vector() -> None:
    config = PreferenceConfig()
    state = PreferenceState.empty(3, config)
    update(state, basis(3, 0), "like", None, T0, config)
    update(state, basis(3, 1), "dislike", None, T0 + 1, config)
    update(state, basis(3, 2), "rate", 1.0, T0 + 2, config)  # 1 star: negative
    update(state, basis(3, 0) + basis(3, 1), "rate", 3.0, T0 + 3, config)  # neutral: counted only
    vectors = preference_vectors(state)
    assert np.allclose(vectors.long, basis(3, 0)) and np.allclose(vectors.short, basis(3, 0))
    assert np.allclose(vectors.negative, np.array([0, 1, 1]) / np.sqrt(2))
    assert vectors.negative_weight == pytest.approx(2.0, rel=1e-6)
    assert state.count == 4


# ---------------------------------------------------------------- drift


def test_drift_is_zero_for_a_stable_user_and_high_after_a_switch() -> None:
    config = PreferenceConfig(long_half_life_days=365.0, short_half_life_days=7.0)
    comedy, horror = basis(4, 0), basis(4, 1)
    stable = PreferenceState.empty(4, config)
    assert drift(stable) == 0.0  # no evidence yet
    for day in range(0, 360, 3):
        update(stable, comedy, "like", None, T0 + day * DAY, config)
    assert drift(stable) == pytest.approx(0.0, abs=1e-12)

    switched = build([(0, "like", None, T0 + d * DAY) for d in range(0, 360, 3)], np.eye(4), config)
    for day in range(360, 374):  # two weeks of horror after a year of comedy
        update(switched, horror, "like", None, T0 + day * DAY, config)
    assert drift(switched) > 0.5
    assert float(preference_vectors(switched).long @ comedy) > float(
        preference_vectors(switched).long @ horror
    )


# ---------------------------------------------------------------- scoring and MMR


def test_score_items_ranks_liked_neighbours_above_disliked_ones() -> None:
    rng = np.random.default_rng(2)
    liked_centre, disliked_centre = rng.standard_normal(16), rng.standard_normal(16)
    items = np.vstack(
        [
            liked_centre + 0.3 * rng.standard_normal((10, 16)),
            disliked_centre + 0.3 * rng.standard_normal((10, 16)),
        ]
    )
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    config = PreferenceConfig()
    events = [
        (0, "like", None, T0),
        (1, "rate", 5.0, T0 + 60),
        (10, "dislike", None, T0 + 120),
        (11, "rate", 0.5, T0 + 180),
    ]
    scores = score_items(build(events, items, config), items, config)
    assert scores[2:10].min() > scores[12:20].max()  # unseen neighbours of liked vs disliked


def test_score_items_is_zero_without_events() -> None:
    items = np.eye(3)
    assert np.array_equal(
        score_items(PreferenceState.empty(3, PreferenceConfig()), items), np.zeros(3)
    )


def test_mmr_without_diversity_is_top_k_by_relevance() -> None:
    rng = np.random.default_rng(3)
    vectors, relevance = rng.standard_normal((50, 8)), rng.standard_normal(50)
    assert mmr(vectors, relevance, 10, 0.0) == np.argsort(-relevance, kind="stable")[:10].tolist()


def test_mmr_with_diversity_skips_near_duplicates() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal(8)
    duplicates = base + 0.01 * rng.standard_normal((4, 8))  # the 4 most relevant, near-identical
    others = rng.standard_normal((6, 8))
    vectors = np.vstack([duplicates, others])
    relevance = np.array([1.0, 0.99, 0.98, 0.97, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35])
    assert mmr(vectors, relevance, 4, 0.0) == [0, 1, 2, 3]
    diverse = mmr(vectors, relevance, 4, 0.7)
    assert diverse[0] == 0 and len(set(diverse) & {0, 1, 2, 3}) == 1
    with pytest.raises(ValueError):
        mmr(vectors, relevance, 4, 1.5)


# ---------------------------------------------------------------- config


def test_config_round_trips_through_json() -> None:
    config = PreferenceConfig(like=2.0, short_half_life_days=0.5, decay=False, negative_weight=0.0)
    assert PreferenceConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert PreferenceConfig.from_dict({}) == PreferenceConfig()
    with pytest.raises(ValueError, match="unknown"):
        PreferenceConfig.from_dict({"half_life": 3})


# ---------------------------------------------------------------- collaborative factors


def test_item_factors_shape_determinism_and_unrated_items(sample_factors) -> None:
    ratings, factors = sample_factors
    users, items = np.array([r[0] for r in ratings]), np.array([r[1] for r in ratings])
    n_items = factors.shape[0]
    assert factors.shape == (n_items, 6) and factors.dtype == np.float32
    again = fit_item_factors(users, items, np.ones(len(ratings)), n_items, dim=6)
    assert np.array_equal(factors, again)
    unrated = np.setdiff1d(np.arange(n_items), items)
    if len(unrated):
        assert not factors[unrated].any()


def test_item_factors_put_co_chosen_items_together() -> None:
    # Users 0-9 pick items 0-4, users 10-19 items 5-9: two blocks of co-chosen items.
    users = np.repeat(np.arange(20), 5)
    items = np.concatenate([np.arange(5) if u < 10 else np.arange(5, 10) for u in range(20)])
    factors = fit_item_factors(users, items, np.ones(len(users)), 12, dim=4)
    unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-9)
    assert unit[0] @ unit[1] > 0.99 and abs(unit[0] @ unit[6]) < 0.01
    assert not factors[10:].any()  # items 10 and 11: nobody chose them


def test_preference_over_item_factors_recommends_what_similar_users_chose(sample_factors) -> None:
    ratings, factors = sample_factors
    counts = np.bincount([r[1] for r in ratings], minlength=len(factors))
    config = PreferenceConfig()
    user = max({r[0] for r in ratings}, key=lambda u: sum(r[0] == u for r in ratings))
    events = [(item, "rate", stars, ts) for u, item, stars, ts in ratings if u == user]
    scores = score_items(build(events, factors, config), factors, config)
    top = np.argsort(-scores)[:20]
    assert counts[top].mean() > counts[counts > 0].mean()  # co-rated (hence rated) items first
