"""The fitted behavior space: item vectors learned from every user's events, plus where new items go.

`fit_behavior_space` turns a tenant's events into one vector per catalog item, the space that
recommendations and "might enjoy next" rank in (see docs/usermodel.md):

* **behavior part**: item factors of the users × items interaction matrix
  (`unipgen.core.collaborative.fit_item_factors`, PureSVD with a singular-value power), scaled
  so the factors of items with events have mean length 1;
* **content part**: the item's text vector (unit length) times `content_blend`, so two items
  that read alike stay close even when few people chose them;
* **cold items** (no event yet) get their behavior part from their text vector through a ridge
  mapping text → factors learned at fit time on the items that have events, so a catalog item
  added after the fit can be recommended at once (`place_items`).

The vector is the concatenation ``[factors, content_blend · text]``; a user's preference in it is
folded in from their events at request time (`unipgen.core.preference.build`), and a score is
a dot product. These defaults are the ones `unipgen eval movielens` tunes on MovieLens' even
userIds (`FitConfig`'s docstring gives the figures).

Pure numpy + scipy; deterministic for a given input and `FitConfig.seed`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from unipgen.core.collaborative import fit_item_factors
from unipgen.core.preference import PreferenceConfig, known_fields
from unipgen.errors import InvalidInputError
from unipgen.memory.fits import FitData, FitOutput

if TYPE_CHECKING:
    from unipgen.memory import MemoryStore

#: Name of the embedding space a fit's item vectors are stored in.
BEHAVIOR_SPACE = "behavior"

#: Widest behavior part a fit may ask for, and the bounds of the other numeric settings.
MAX_DIM = 1024
_BOUNDS = {"singular_value_power": 2.0, "content_blend": 100.0, "mapping_l2": 1e6, "cold_scale": 10.0}

#: Most chosen items a fit keeps (what a user without usable events is recommended).
POPULAR_KEPT = 100

#: The preference settings that rank best in the fitted space on MovieLens' tuning users
#: (`unipgen eval movielens`): MovieLens users rate in sessions, so the last half hour weighs most.
TUNED_PREFERENCE = PreferenceConfig(rating_neutral=3.5, long_half_life_days=7.0, short_half_life_days=0.02,
                                    short_term_weight=1.0, negative_weight=0.1)


@dataclass(frozen=True)
class FitConfig:
    """How a tenant's behavior space is fitted, and how users' preferences are built in it.

    `dim`: factors per item (capped at min(users, items) - 1). `singular_value_power`: 0 gives
    PureSVD's item space, 0.5 splits the singular values between users and items.
    `weighting`: ``value`` weighs an event by its value when it has one (a rating's stars), else
    1; ``implicit`` weighs every event 1. Negative event types (skip, dislike) and ratings below
    `min_rating` are left out: the matrix says who chose what. `content_blend`: weight of the
    unit text vector beside the unit-mean factors (0: behavior only). `mapping_l2`: the ridge
    penalty of the text → factors mapping that places cold items; `cold_scale` shrinks what it
    gives (0: cold items rank by content only, as they do in the harness without a mapping).
    `preference`: how a user's events become their preference in this space (`TUNED_PREFERENCE`).

    Defaults: tuned by `unipgen eval movielens` on ml-latest-small's even userIds (the odd ones
    are reported): dim 256, power 0.25, star weights, content blend 1.0.
    """

    dim: int = 256
    singular_value_power: float = 0.25
    weighting: Literal["value", "implicit"] = "value"
    min_rating: float | None = None
    content_blend: float = 1.0
    mapping_l2: float = 10.0
    cold_scale: float = 1.0
    seed: int = 0
    preference: PreferenceConfig = field(default_factory=lambda: TUNED_PREFERENCE)

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or not 1 <= self.dim <= MAX_DIM:
            raise ValueError(f"dim must be an integer from 1 to {MAX_DIM}, got {self.dim!r}")
        if self.weighting not in ("value", "implicit"):
            raise ValueError(f"weighting must be 'value' or 'implicit', got {self.weighting!r}")
        for name, top in _BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
                raise ValueError(f"{name} must be a number from 0 to {top}, got {value!r}")
        if self.min_rating is not None and not (isinstance(self.min_rating, int | float) and
                                                math.isfinite(self.min_rating)):
            raise ValueError(f"min_rating must be a finite number or null, got {self.min_rating!r}")
        if not isinstance(self.seed, int) or not isinstance(self.preference, PreferenceConfig):
            raise ValueError("seed must be an integer and preference an object of preference settings")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the preference settings nested)."""
        data = asdict(self)
        data["preference"] = self.preference.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitConfig:
        """Inverse of `to_dict`; missing fields take their defaults, unknown ones are an error."""
        values = known_fields(cls, data)
        if "preference" in values:
            values["preference"] = PreferenceConfig.from_dict(values["preference"])
        return cls(**values)


@dataclass(frozen=True)
class FittedSpace:
    """A fit's item vectors and what places new items: `vectors[i]` is item `items[i]`'s vector
    (``[factors, content_blend · text]``), `mapping` the (text dim, factors dim) ridge matrix,
    `factor_dim` the factors' width. `stats`: users, items, events and items with events."""

    items: list[str]
    vectors: np.ndarray
    mapping: np.ndarray
    factor_dim: int
    config: FitConfig
    stats: dict[str, int]


def event_weights(types: np.ndarray, values: np.ndarray, config: FitConfig) -> np.ndarray:
    """Each event's weight in the interaction matrix (0: left out); see `FitConfig`."""
    preference = config.preference
    signed = np.array([preference.event_weight(str(t)) for t in types.tolist()]) if len(types) else np.zeros(0)
    has_value = ~np.isnan(values)
    weights = np.where(has_value, values, 1.0) if config.weighting == "value" else np.ones(len(types))
    keep = signed > 0
    if config.min_rating is not None:
        keep &= ~((types == "rate") & has_value & (values < config.min_rating))
    return np.where(keep, weights, 0.0)


def fit_behavior_space(
    user_idx: np.ndarray, item_idx: np.ndarray, types: np.ndarray, values: np.ndarray,
    items: list[str], text_vectors: np.ndarray, config: FitConfig | None = None,
) -> FittedSpace:
    """Fit the space from events given as parallel arrays.

    `user_idx`/`item_idx`: 0-based indices of each event's user and item (`items[i]` is item
    i's key); `types`: event type names; `values`: the event values (NaN where none);
    `text_vectors`: (len(items), text dim) unit text vectors of every item, in `items` order.
    Every item gets a vector, with events or not.
    """
    config = config or FitConfig()
    text = np.asarray(text_vectors, dtype=np.float32)
    if text.shape[0] != len(items):
        raise ValueError(f"{len(items)} items but {text.shape[0]} text vectors")
    weights = event_weights(np.asarray(types), np.asarray(values, dtype=np.float64), config)
    used = weights > 0
    users, chosen = np.asarray(user_idx)[used], np.asarray(item_idx)[used]
    n_users = len(np.unique(users))
    if n_users < 2 or len(np.unique(chosen)) < 2:
        factors = np.zeros((len(items), 0), dtype=np.float32)  # nothing to factorise yet: content only
    else:
        factors = fit_item_factors(users, chosen, weights[used], len(items), dim=config.dim, seed=config.seed,
                                   singular_value_power=config.singular_value_power)
    warm = np.linalg.norm(factors, axis=1) > 0
    if warm.any():
        factors /= float(np.linalg.norm(factors[warm], axis=1).mean())
    mapping = _ridge(text[warm], factors[warm], config.mapping_l2)
    factors[~warm] = config.cold_scale * (text[~warm] @ mapping)
    stats = {"users": int(n_users), "items": len(items), "events": int(used.sum()), "items_with_events": int(warm.sum())}
    return FittedSpace(items=list(items), vectors=_blend(factors, text, config.content_blend), mapping=mapping,
                       factor_dim=int(factors.shape[1]), config=config, stats=stats)


def place_items(text_vectors: np.ndarray, mapping: np.ndarray, config: FitConfig) -> np.ndarray:
    """Vectors in a fitted space for items it has never seen (added after the fit), from their
    text vectors: the fit's mapping gives the behavior part, as for the fit's own cold items."""
    text = unit_rows(text_vectors)
    return _blend(config.cold_scale * (text @ mapping), text, config.content_blend)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, float32 (the blend assumes unit text vectors; zero rows stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    unit: np.ndarray = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return unit


def _ridge(x: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """W minimising |xW - y|² + l2·|W|² (x: n × a, y: n × b); zeros when there is nothing to learn."""
    if len(x) == 0 or y.shape[1] == 0:
        return np.zeros((x.shape[1], y.shape[1]), dtype=np.float32)
    x64 = x.astype(np.float64)
    gram = x64.T @ x64 + l2 * np.eye(x.shape[1])
    return np.linalg.solve(gram, x64.T @ y.astype(np.float64)).astype(np.float32)


def _blend(factors: np.ndarray, text: np.ndarray, content_blend: float) -> np.ndarray:
    """``[factors, content_blend · text]`` as one float32 matrix (no text part when the blend is 0)."""
    if content_blend == 0:
        return np.ascontiguousarray(factors, dtype=np.float32)
    return np.hstack([factors, content_blend * text]).astype(np.float32)


# ---------------------------------------------------------------- a fit of a tenant, from the store


@dataclass(frozen=True)
class FitInputs:
    """Everything a fit job's work needs, as plain data (it may run in another process)."""

    tenant: str
    data: FitData
    text_vectors: np.ndarray
    config: FitConfig


def fit_config_for(store: MemoryStore, tenant: str, overrides: Mapping[str, Any] | None = None) -> FitConfig:
    """The tenant's current fit's settings (or the defaults), with `overrides` applied; a bad
    setting is an `InvalidInputError` naming it."""
    current = store.fits.current_fit(tenant)
    base = current.config if current is not None else FitConfig().to_dict()
    merged = {**base, **dict(overrides or {})}
    preference = (overrides or {}).get("preference")
    if isinstance(preference, Mapping):
        merged["preference"] = {**base.get("preference", {}), **preference}
    try:
        return FitConfig.from_dict(merged)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"fit settings: {exc}") from None


def fit_inputs(store: MemoryStore, tenant: str, config: FitConfig) -> FitInputs:
    """Read the tenant's events and its items' text vectors (items without one count as
    content-less: zeros). Run `UserModel.embed_catalog` first so every item has one."""
    data = store.fits.fit_data(tenant)
    text = store.content.vectors(tenant, "text", "item") if "text" in store.content.spaces(tenant) else {}
    dim = len(next(iter(text.values()))) if text else 0
    matrix = np.zeros((len(data.items), dim), dtype=np.float32)
    for n, key in enumerate(data.items):
        if key in text:
            matrix[n] = text[key]
    return FitInputs(tenant, data, unit_rows(matrix), config)


def run_fit(inputs: FitInputs) -> FitOutput:
    """Fit the space (`fit_behavior_space`) and package it for `MemoryStore.fits.save_fit`."""
    started = time.perf_counter()
    data = inputs.data
    if not data.items:
        raise InvalidInputError(f"tenant {inputs.tenant!r} has no catalog items to fit a behavior space over")
    fitted = fit_behavior_space(data.user_idx, data.item_idx, data.types, data.values, data.items,
                                inputs.text_vectors, inputs.config)
    used = event_weights(data.types, data.values, inputs.config) > 0
    counts = np.bincount(data.item_idx[used], minlength=len(data.items))
    popular = [data.items[i] for i in np.argsort(-counts, kind="stable")[:POPULAR_KEPT] if counts[i] > 0]
    stats = {**fitted.stats, "dim": int(fitted.vectors.shape[1]), "factor_dim": fitted.factor_dim,
             "seconds": round(time.perf_counter() - started, 3), "popular": popular}
    users = np.unique(data.user_idx[used])
    return FitOutput(space=BEHAVIOR_SPACE, items=fitted.items, vectors=fitted.vectors, mapping=fitted.mapping,
                     config=inputs.config.to_dict(), stats=stats, user_ids=data.user_ids[users].tolist(),
                     last_event_id=data.last_event_id)
