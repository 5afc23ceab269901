"""The user's preference model: time-decayed taste vectors built from behavior events.

A user's behaviors (view, click, like, rate, purchase, skip, dislike on catalog items) become
three vectors in one item-embedding space (e.g. MiniLM text vectors, or collaborative factors):

* **long-term**: positive events, decayed with `long_half_life_days` (stable taste);
* **short-term**: the same positive events, decayed with `short_half_life_days` (current mood);
* **negative**: negative events (skip, dislike, low ratings), decayed with the long half-life.

Each is a weighted sum of item vectors, ``S(T) = Σ w_i · 0.5 ** ((T - t_i) / half_life) · x_i``,
kept with its total weight ``Σ |w_i| · 0.5 ** ((T - t_i) / half_life)``. Only the directions are
used for ranking (`preference_vectors` normalises them); the weights say how much evidence is
behind each.

Order independence. The sum is stored as ``2 ** (-T / h) · A`` with
``A = Σ w_i · 2 ** (t_i / h) · x_i`` referenced to the Unix epoch, so an event contributes the
same amount whenever it arrives: out-of-order events are weighted by their own timestamp, exactly
as if they had come in order. ``2 ** (t_i / h)`` overflows float64 after ~1000 half-lives, so
`A` is kept as a mantissa vector and an integer power-of-two exponent (`DecayedSum`). Rescaling
by a power of two is exact in floating point, which makes `update` event by event and the
vectorised `build` agree bit for bit when they see the events in the same order (floating-point
addition itself is not associative, so another order agrees to ~1e-15, not bit for bit).

Pure numpy: `update` is O(dim); `build` is one pass over the event log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np

SECONDS_PER_DAY = 86_400.0

#: What `ts` may be: Unix seconds, or an aware datetime.
Timestamp = float | int | datetime


@dataclass(frozen=True)
class PreferenceConfig:
    """How behaviors turn into preference: event weights, rating mapping, decay and scoring.

    Event weights are signed evidence per event: positive ones feed the long- and short-term
    vectors, negative ones (by magnitude) the negative vector. A `rate` event's weight comes from
    its rating: ``rate * (value - rating_neutral) / rating_scale``, so with the defaults a
    5-star rating weighs +1, 3 stars 0 (ignored), 1 star -1 (negative) and 0.5 stars -1.25.
    A `rate` event without a value weighs `rate` (a plain positive).

    Half-lives are in days: after one half-life an event counts half as much. `decay=False`
    weighs every event the same whatever its age. `short_term_weight` (α) and `negative_weight`
    (β) mix the three vectors in `score_items`: ``cos(long) + α·cos(short) − β·cos(negative)``.

    A `PreferenceState` is tied to the half-lives and `decay` it was built with; changing them
    means rebuilding states from the event log (`build`).

    The defaults are product defaults (a year / two weeks), not tuned values. On MovieLens
    next-item ranking (`unipgen bench usermodel`) tuning picks far shorter ones (~7 days /
    ~30 minutes, rating_neutral 3.5): MovieLens users rate in sessions and the next rating
    follows the last few.
    """

    view: float = 0.3
    click: float = 0.5
    like: float = 1.0
    rate: float = 1.0
    purchase: float = 1.5
    skip: float = -0.3
    dislike: float = -1.0
    rating_neutral: float = 3.0
    rating_scale: float = 2.0
    long_half_life_days: float = 365.0
    short_half_life_days: float = 14.0
    decay: bool = True
    short_term_weight: float = 0.5
    negative_weight: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreferenceConfig:
        """Inverse of `to_dict`; missing fields take their defaults, unknown ones are an error."""
        return cls(**known_fields(cls, data))

    def event_weight(self, event_type: str, value: float | None = None) -> float:
        """Signed weight of one event (see the class docstring); unknown types are an error."""
        if event_type not in _EVENT_FIELDS:
            raise ValueError(f"unknown event type {event_type!r}; expected one of {_EVENT_FIELDS}")
        base = float(getattr(self, event_type))
        if event_type == "rate" and value is not None:
            return base * (float(value) - self.rating_neutral) / self.rating_scale
        return base

    def half_life_seconds(self, which: str) -> float | None:
        """The `long` or `short` half-life in seconds, or None when decay is off."""
        if not self.decay:
            return None
        days = self.long_half_life_days if which == "long" else self.short_half_life_days
        return days * SECONDS_PER_DAY


def known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` as keyword arguments of the dataclass `cls`; a field it does not have is a ValueError."""
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return dict(data)


_EVENT_FIELDS = ("view", "click", "like", "rate", "purchase", "skip", "dislike")


def _coefficient(weight: float, ts: float, half_life_s: float | None) -> tuple[float, int]:
    """Split ``weight · 2 ** (ts / half_life)`` into a mantissa factor and a power-of-two exponent.

    The exponent is ``floor(ts / half_life)``; the factor carries the fractional part, so it
    stays within [weight, 2·weight). Without decay the exponent is 0 and the factor is the weight.
    Used by both `update` and `build` so they compute the very same numbers.
    """
    if half_life_s is None:
        return weight, 0
    scaled = ts / half_life_s
    exponent = math.floor(scaled)
    return weight * 2.0 ** (scaled - exponent), exponent


@dataclass
class DecayedSum:
    """An exponentially decayed weighted sum of vectors, independent of arrival order.

    The represented sum at time T is ``vector · 2 ** (exponent - T / half_life)`` (and likewise
    for `weight`, the decayed sum of |weights|). `exponent` is the largest
    ``floor(t_i / half_life)`` seen; older terms are stored scaled down by exact powers of two.
    With `half_life_s` None there is no decay and `exponent` stays 0.
    """

    vector: np.ndarray
    weight: float = 0.0
    exponent: int = 0
    half_life_s: float | None = None

    def add(self, x: np.ndarray, weight: float, ts: float) -> None:
        """Add ``weight · x`` observed at `ts` (x float64, weight ≥ 0)."""
        factor, exponent = _coefficient(weight, ts, self.half_life_s)
        if self.weight == 0.0:
            self.exponent = exponent  # empty sum: take the first event's exponent as reference
        elif exponent > self.exponent:
            shift = self.exponent - exponent  # exact power-of-two rescale of what is stored
            self.vector = np.ldexp(self.vector, shift)
            self.weight = math.ldexp(self.weight, shift)
            self.exponent = exponent
        factor = math.ldexp(factor, exponent - self.exponent)
        self.vector += factor * x
        self.weight += factor

    def decay_factor(self, at_ts: float) -> float:
        """What the stored mantissa is multiplied by to give the sum at `at_ts`."""
        if self.half_life_s is None:
            return 1.0
        return float(2.0 ** (self.exponent - at_ts / self.half_life_s))

    def copy(self) -> DecayedSum:
        """An independent copy (the vector is not shared)."""
        return DecayedSum(self.vector.copy(), self.weight, self.exponent, self.half_life_s)


@dataclass
class PreferenceState:
    """One user's preference in one embedding space, updated event by event.

    `long`, `short` and `negative` are the decayed sums described in the module docstring;
    `last_ts` is the latest event time seen (Unix seconds, None before any event) and `count`
    the number of events applied. Events with weight 0 (e.g. a neutral rating) only count.
    """

    dim: int
    long: DecayedSum
    short: DecayedSum
    negative: DecayedSum
    last_ts: float | None = None
    count: int = 0

    @classmethod
    def empty(cls, dim: int, config: PreferenceConfig) -> PreferenceState:
        """A state with no events, with the half-lives of `config`."""
        long_hl, short_hl = config.half_life_seconds("long"), config.half_life_seconds("short")
        return cls(
            dim=dim,
            long=DecayedSum(np.zeros(dim), half_life_s=long_hl),
            short=DecayedSum(np.zeros(dim), half_life_s=short_hl),
            negative=DecayedSum(np.zeros(dim), half_life_s=long_hl),
        )

    def check_config(self, config: PreferenceConfig) -> None:
        """Fail if `config`'s half-lives or decay differ from those this state was built with."""
        expected = (config.half_life_seconds("long"), config.half_life_seconds("short"))
        if (self.long.half_life_s, self.short.half_life_s) != expected:
            raise ValueError("PreferenceState was built with other half-lives/decay: rebuild it")


def _seconds(ts: Timestamp) -> float:
    """Unix seconds of `ts` (datetimes must be timezone-aware)."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) timestamp")
        return ts.timestamp()
    return float(ts)


def update(
    state: PreferenceState,
    vector: np.ndarray,
    event_type: str,
    value: float | None,
    ts: Timestamp,
    config: PreferenceConfig,
) -> None:
    """Apply one event (O(dim)): `vector` is the item's embedding in the state's space.

    Positive weight goes to the long- and short-term sums, negative weight (by magnitude) to the
    negative sum. Events may arrive in any time order; see the module docstring.
    """
    x = np.asarray(vector, dtype=np.float64).reshape(-1)
    if x.shape[0] != state.dim:
        raise ValueError(f"vector has dim {x.shape[0]}, state has dim {state.dim}")
    state.check_config(config)
    t = _seconds(ts)
    weight = config.event_weight(event_type, value)
    if weight > 0:
        state.long.add(x, weight, t)
        state.short.add(x, weight, t)
    elif weight < 0:
        state.negative.add(x, -weight, t)
    state.last_ts = t if state.last_ts is None else max(state.last_ts, t)
    state.count += 1


@dataclass(frozen=True)
class Event:
    """One behavior event as `build` reads it: `item` indexes the item-vector matrix/mapping."""

    item: Any
    event_type: str
    value: float | None
    ts: Timestamp


def build(
    events: Iterable[Event | Sequence[Any]],
    item_vectors: np.ndarray | Mapping[Any, np.ndarray],
    config: PreferenceConfig,
) -> PreferenceState:
    """Rebuild a state from an event log, equal (bit for bit) to `update` applied in log order.

    `events` are `Event`s or ``(item, event_type, value, ts)`` tuples; `item_vectors` is a
    matrix indexed by item or a mapping from item to vector. Vectorised: the per-event factors
    are computed in Python (the same function `update` uses), the vector sums in numpy.
    """
    rows = [e if isinstance(e, Event) else Event(*e) for e in events]
    dim = _dim_of(item_vectors)
    state = PreferenceState.empty(dim, config)
    if not rows:
        return state
    times = [_seconds(e.ts) for e in rows]
    weights = np.array([config.event_weight(e.event_type, e.value) for e in rows])
    matrix = np.stack([np.asarray(item_vectors[e.item], dtype=np.float64) for e in rows])
    positive, negative = weights > 0, weights < 0
    _fill(state.long, matrix[positive], weights[positive], _pick(times, positive))
    _fill(state.short, matrix[positive], weights[positive], _pick(times, positive))
    _fill(state.negative, matrix[negative], -weights[negative], _pick(times, negative))
    state.last_ts, state.count = max(times), len(rows)
    return state


def _dim_of(item_vectors: np.ndarray | Mapping[Any, np.ndarray]) -> int:
    """Vector size of a matrix or of the first vector of a mapping."""
    if isinstance(item_vectors, np.ndarray):
        return int(item_vectors.shape[1])
    first = next(iter(item_vectors.values()))
    return int(np.asarray(first).shape[-1])


def _pick(values: list[float], mask: np.ndarray) -> list[float]:
    """The entries of `values` where `mask` is true, in order."""
    return [v for v, keep in zip(values, mask.tolist()) if keep]


def _fill(target: DecayedSum, matrix: np.ndarray, weights: np.ndarray, times: list[float]) -> None:
    """Set an empty `DecayedSum` to the sum of ``weights[i] · matrix[i]`` at `times[i]`.

    Mirrors `DecayedSum.add` exactly: every term is scaled to the final (largest) exponent by
    a power of two, and the terms are added in order (axis-0 reduction and cumsum are
    sequential in numpy, not pairwise).
    """
    if not times:
        return
    coefs = [_coefficient(float(w), t, target.half_life_s) for w, t in zip(weights, times)]
    top = max(e for _, e in coefs)
    factors = np.array([math.ldexp(f, e - top) for f, e in coefs])
    target.vector = np.add.reduce(factors[:, None] * matrix, axis=0)
    target.weight = float(np.cumsum(factors)[-1])
    target.exponent = top


@dataclass(frozen=True)
class PreferenceVectors:
    """Unit-length long, short and negative vectors (zeros when there is no such evidence) and
    the decayed evidence behind each (sum of |event weight| · 0.5 ** (age / half-life))."""

    long: np.ndarray
    short: np.ndarray
    negative: np.ndarray
    long_weight: float
    short_weight: float
    negative_weight: float


def preference_vectors(state: PreferenceState, at_ts: Timestamp | None = None) -> PreferenceVectors:
    """The normalised preference vectors, with their weights decayed to `at_ts` (default: the
    last event). Decay scales a whole sum, so it changes the weights but never the directions."""
    t = state.last_ts if at_ts is None else _seconds(at_ts)
    parts = (state.long, state.short, state.negative)
    long, short, negative = (_unit(p.vector) for p in parts)
    long_weight, short_weight, negative_weight = (p.weight * p.decay_factor(t) if t is not None else 0.0 for p in parts)
    return PreferenceVectors(long, short, negative, long_weight, short_weight, negative_weight)


def _unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to length 1 (a zero vector stays zero)."""
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else np.zeros_like(vector)


def drift(state: PreferenceState) -> float:
    """How far current (short-term) taste has moved from long-term taste: 1 − cos(long, short).

    Range [0, 2]: 0 when they point the same way (a stable user) or when there is no positive
    evidence yet; 1 when orthogonal. With MiniLM text vectors, whose cosines between unrelated
    items are ~0.1–0.3, a switch between unrelated genres lands around 0.3–0.7.
    """
    vectors = preference_vectors(state)
    if vectors.short_weight == 0.0:
        return 0.0
    cosine = float(np.dot(vectors.long, vectors.short))
    return max(0.0, 1.0 - cosine)  # clip the tiny negative rounding of identical vectors


def score_items(
    state: PreferenceState, item_matrix: np.ndarray, config: PreferenceConfig | None = None
) -> np.ndarray:
    """Ranking score of every row of `item_matrix`: long·x + α·short·x − β·negative·x.

    α and β are `config.short_term_weight` and `config.negative_weight` (defaults if None).
    The user vectors are unit length and the items are used as given: L2-normalised items give
    ``cos(long) + α·cos(short) − β·cos(negative)``, each term in [-1, 1]; un-normalised items
    (collaborative factors, whose length grows with popularity) give a popularity-aware dot
    product. A user without events scores every item 0. Scores come in the matrix's float
    dtype (a float32 catalog is not copied to float64 on every call).
    """
    config = config or PreferenceConfig()
    vectors = preference_vectors(state)
    query = (
        vectors.long
        + config.short_term_weight * vectors.short
        - config.negative_weight * vectors.negative
    )
    matrix = np.asarray(item_matrix)
    if matrix.dtype not in (np.float32, np.float64):
        matrix = matrix.astype(np.float64)
    scores: np.ndarray = matrix @ query.astype(matrix.dtype)
    return scores


def mmr(
    candidate_vectors: np.ndarray, relevance: np.ndarray, k: int, diversity: float
) -> list[int]:
    """Maximal marginal relevance: pick `k` candidates that are relevant but not alike.

    Each step takes the candidate maximising ``(1 − diversity)·rel − diversity·max_sim``, where
    `rel` is relevance min-max scaled to [0, 1] over the candidates (so `diversity` means the same
    whatever the scorer's scale) and `max_sim` its largest cosine to those already picked.
    `diversity` 0 gives top-k by relevance (ties by index); 1 only avoids similarity after the
    first (most relevant) pick. Returns candidate indices in pick order. O(k · n · dim).
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be within [0, 1]")
    units = np.asarray(candidate_vectors, dtype=np.float64)
    units = units / np.maximum(np.linalg.norm(units, axis=1, keepdims=True), 1e-12)
    rel = _minmax(np.asarray(relevance, dtype=np.float64))
    max_sim = np.full(len(rel), -np.inf)  # nothing picked yet: no similarity penalty
    available = np.ones(len(rel), dtype=bool)
    picked: list[int] = []
    for _ in range(min(k, len(rel))):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        gain = np.where(available, (1.0 - diversity) * rel - diversity * penalty, -np.inf)
        if not picked:
            gain = np.where(available, rel, -np.inf)  # the first pick is always the most relevant
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        max_sim = np.maximum(max_sim, units @ units[best])
    return picked


def _minmax(values: np.ndarray) -> np.ndarray:
    """`values` scaled to [0, 1] (all zeros when they are all equal)."""
    span = float(values.max() - values.min()) if len(values) else 0.0
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)
