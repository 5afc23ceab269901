"""The fitted behavior space: the harness's factors, content blend, cold items placed by the mapping."""

from __future__ import annotations

import numpy as np
import pytest

from unipgen.core.behavior_space import FitConfig, event_weights, fit_behavior_space, place_items
from unipgen.core.collaborative import fit_item_factors


def _events(seed: int = 0, users: int = 40, items: int = 30, n: int = 400) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    user = rng.integers(users, size=n)
    item = (user % 3) * 10 + rng.integers(10, size=n)  # three tastes: items 0-9, 10-19, 20-29
    item[item >= items - 2] = items - 3  # the last two items get no event: they are cold
    return user, item, np.array(["rate"] * n, dtype=object), rng.integers(1, 11, size=n) / 2.0


def _text(items: int = 30, dim: int = 8, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((items, dim)).astype(np.float32)
    return text / np.linalg.norm(text, axis=1, keepdims=True)


def test_the_behavior_part_is_the_harness_factors_scaled_to_unit_mean_length() -> None:
    user, item, types, values = _events()
    keys = [f"i{n}" for n in range(30)]
    config = FitConfig(dim=5, content_blend=1.0, cold_scale=0.0)
    fitted = fit_behavior_space(user, item, types, values, keys, _text(), config)
    factors = fit_item_factors(user, item, values, 30, dim=5, singular_value_power=config.singular_value_power)
    warm = np.linalg.norm(factors, axis=1) > 0
    expected = factors / np.linalg.norm(factors[warm], axis=1).mean()
    np.testing.assert_allclose(fitted.vectors[:, :5], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted.vectors[:, 5:], _text(), rtol=1e-6)  # content part, blend 1
    assert fitted.stats == {"users": 40, "items": 30, "events": 400, "items_with_events": 28}
    assert fitted.vectors.dtype == np.float32 and fitted.vectors.shape == (30, 13)


def test_cold_items_get_a_place_from_their_text_and_new_items_the_same() -> None:
    user, item, types, values = _events()
    text = _text()
    text[28] = text[3]  # a cold item that reads exactly like a warm one...
    fitted = fit_behavior_space(user, item, types, values, [f"i{n}" for n in range(30)], text, FitConfig(dim=4))
    cold = fitted.vectors[28, :4]
    assert np.linalg.norm(cold) > 0  # ...gets behavior factors, not zeros
    warm = fitted.vectors[:28, :4]
    similar = warm @ cold / (np.linalg.norm(warm, axis=1) * np.linalg.norm(cold))
    assert similar[3] > np.median(similar)  # and lands nearer its look-alike than most items
    placed = place_items(text[[28]], fitted.mapping, fitted.config)
    np.testing.assert_allclose(placed[0], fitted.vectors[28], rtol=1e-5, atol=1e-6)  # after the fit: same place


def test_negative_events_and_low_ratings_are_left_out_of_the_matrix() -> None:
    types = np.array(["rate", "rate", "dislike", "skip", "click", "rate"], dtype=object)
    values = np.array([4.0, 1.0, np.nan, np.nan, np.nan, np.nan])
    assert event_weights(types, values, FitConfig()).tolist() == [4.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    assert event_weights(types, values, FitConfig(min_rating=2.0, weighting="implicit")).tolist() == \
        [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]


def test_too_few_users_fit_content_only_and_settings_round_trip() -> None:
    fitted = fit_behavior_space(np.zeros(3, int), np.array([0, 1, 2]), np.array(["like"] * 3, dtype=object),
                                np.full(3, np.nan), ["a", "b", "c"], _text(3), FitConfig())
    assert fitted.factor_dim == 0 and fitted.vectors.shape == (3, 8)
    config = FitConfig(dim=32, mapping_l2=2.0)
    assert FitConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown FitConfig fields"):
        FitConfig.from_dict({"dims": 3})
    with pytest.raises(ValueError, match="dim must be an integer from 1 to 1024"):
        FitConfig(dim=0)


def test_a_fit_is_deterministic() -> None:
    user, item, types, values = _events(3)
    keys = [f"i{n}" for n in range(30)]
    one = fit_behavior_space(user, item, types, values, keys, _text(), FitConfig(dim=6))
    two = fit_behavior_space(user, item, types, values, keys, _text(), FitConfig(dim=6))
    assert np.array_equal(one.vectors, two.vectors) and np.array_equal(one.mapping, two.mapping)


@pytest.mark.parametrize("bad", [{"content_blend": 1e308}, {"dim": 5000}, {"dim": 2.5}, {"mapping_l2": -1},
                                 {"cold_scale": True}, {"min_rating": float("nan")}, {"weighting": "stars"}])
def test_settings_out_of_bounds_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        FitConfig(**bad)
