"""Recommendations: the catalog items a user is likeliest to want next, with the events behind each.

One call serves `unipgen recommend`, ``POST /v1/users/{user}/recommendations``, the SDK, the
context's `top_items` and text requests that ask for a recommendation:

1. the space: the tenant's fitted behavior space when it has a fit (`unipgen fit`), else the
   items' text vectors;
2. the user's taste there, folded in from their events at request time
   (`unipgen.core.preference`: long-term + α·short-term − β·negative, unit vectors), kept
   decomposed by event so each recommendation can say which events weigh most for it;
3. the nearest catalog items to that taste (the space's faiss index), less the items the user
   already acted on (unless `include_seen`) and, with `kind`, items of other kinds
   (``meta["kind"]``); with `diversity` > 0, re-ranked by maximal marginal relevance among 4x as
   many candidates;
4. a user with no usable event gets the fit's most chosen items (space ``popularity``).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, cast

import numpy as np

from unipgen.core.behavior_space import FitConfig
from unipgen.core.preference import PreferenceConfig, mmr
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.memory.snapshot import EventRow, TasteEvent, TasteRead, UserSnapshot
from unipgen.schema.context import Reason, Recommendation, Recommendations
from unipgen.schema.memory import FitRecord

#: Events named as the reasons of one recommendation.
REASONS_PER_ITEM = 3
#: Most items one call returns.
MAX_K = 1000
#: Users whose folded-in taste is kept (each ~0.5 MB for 150 distinct items at 640 dims).
TASTES_KEPT = 256


@dataclass(frozen=True)
class Taste:
    """A user's preference query in one space, kept as the sum of per-item terms:
    ``query = coefficients @ vectors``, where row i of `vectors` is the vector of the item of
    `events[i]` (one row per distinct item, named by its weightiest event)."""

    query: np.ndarray
    events: list[EventRow | TasteEvent]
    vectors: np.ndarray
    coefficients: np.ndarray


def taste(events: Sequence[EventRow | TasteEvent], item_vectors: dict[str, np.ndarray], config: PreferenceConfig) -> Taste | None:
    """The user's query in a space from their events on items that have a vector there (None
    when no event is usable). The same direction as `preference.score_items` on a `build`
    state: each of the long, short and negative sums is normalised, decayed to the last event."""
    usable = [e for e in events if e.item in item_vectors]
    if not usable:
        return None
    vectors = np.array([item_vectors[e.item] for e in usable], dtype=np.float64)
    times = np.array([e.ts if isinstance(e.ts, float) else e.ts.timestamp() for e in usable])
    types = np.array([e.type for e in usable])
    values = np.array([np.nan if e.value is None else e.value for e in usable], dtype=np.float64)
    weights = np.zeros(len(usable))
    for kind in set(types.tolist()):  # a few event types: one vectorised rule each
        mask = types == kind
        if kind == "rate":
            weights[mask] = np.where(np.isnan(values[mask]), config.event_weight("rate"),
                                     config.rate * (values[mask] - config.rating_neutral) / config.rating_scale)
        else:
            weights[mask] = config.event_weight(kind)
    age = times.max() - times
    decay = {which: np.ones(len(usable)) if (h := config.half_life_seconds(which)) is None else 0.5 ** (age / h)
             for which in ("long", "short")}
    positive, negative = np.where(weights > 0, weights, 0.0), np.where(weights < 0, -weights, 0.0)
    parts = ((positive * decay["long"], 1.0), (positive * decay["short"], config.short_term_weight),
             (negative * decay["long"], -config.negative_weight))
    coefficients = np.zeros(len(usable))
    for terms, mix in parts:
        norm = float(np.linalg.norm(terms @ vectors))
        if norm > 0 and mix != 0:
            coefficients += mix * terms / norm
    if not np.isfinite(coefficients).all():
        raise InvalidInputError("the user's events give a preference with NaN or infinity (a stored non-finite "
                                "rating? `unipgen check` names the row; delete that event)")
    if not coefficients.any():
        return None  # only neutral events (a 3-star rating): no direction to rank by
    return _per_item(usable, vectors, coefficients)


def _per_item(events: list[EventRow | TasteEvent], vectors: np.ndarray, coefficients: np.ndarray) -> Taste:
    """The taste with one term per distinct item (the sum of its events' terms), each named by
    its event with the largest term: a user's 1,000 events are often 150 items, and the
    query, the scores and the reasons are the same sums."""
    keys = [e.item for e in events]
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    summed = np.bincount(inverse, weights=coefficients, minlength=len(unique))
    order = np.lexsort((-np.abs(coefficients), inverse))  # per item, its largest term first
    starts = np.searchsorted(inverse[order], np.arange(len(unique)))
    named = [events[i] for i in order[starts]]
    item_vectors = vectors[first]
    return Taste((summed @ item_vectors).astype(np.float32), named, item_vectors.astype(np.float32), summed)


class Recommender:
    """Ranks a tenant's catalog for its users (see the module docstring). `text_config`: how
    events become a preference in the text space, used while the tenant has no fit."""

    def __init__(self, store: MemoryStore, text_config: PreferenceConfig | None = None) -> None:
        self.store = store
        self.text_config = text_config or PreferenceConfig()
        # Folded-in tastes of recent users, keyed by what they were folded from (the space's
        # generation and the user's events' version): a new or deleted event, a refit or a
        # forget changes the key, so an entry is never stale, only unused.
        self._tastes: OrderedDict[tuple[Any, ...], tuple[Taste | None, frozenset[str]]] = OrderedDict()

    def recommend(self, tenant: str, user: str, *, k: int = 10, diversity: float = 0.0, include_seen: bool = False,
                  kind: str | None = None, snapshot: UserSnapshot | None = None) -> Recommendations:
        """The `k` best items for `user` (fewer when the catalog runs out); `snapshot`: the
        user as already read (a context passes its own), else read here."""
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
        if not 0.0 <= diversity <= 1.0:
            raise InvalidInputError(f"diversity must be within [0, 1], got {diversity}")
        read, found, acted = self._taste(tenant, user, snapshot)
        # taste_read ranks in the tenant's fitted space (BEHAVIOR_SPACE) or else in "text".
        fit, space = read.fit, cast(Literal["behavior", "text"], read.space)
        seen = set() if include_seen else set(acted)
        head = functools.partial(Recommendations, user=user, fit_generation=fit.generation if fit else None,
                                 stale=fit is not None and fit.status == "stale", diversity=diversity,
                                 seen_excluded=not include_seen, kind=kind)
        if found is None:
            popular = [key for key in (fit.stats.get("popular", []) if fit else []) if key not in seen]
            keys = self._of_kind(tenant, popular, kind)[:k]
            texts = self.store.catalog.item_texts(tenant, keys)
            items = [Recommendation(item=key, text=texts[key], score=0.0) for key in keys if key in texts]
            return head(space="popularity" if fit else space, items=items)
        keys, scores = self._candidates(tenant, space, read, found.query, k * (4 if diversity > 0 else 1), seen, kind)
        vectors = self.store.reads.item_vectors(tenant, space, keys, read=read) if keys else {}
        if diversity > 0 and keys:
            order = mmr(np.stack([vectors[key] for key in keys]), np.array(scores), k, diversity)
            keys, scores = [keys[i] for i in order], [scores[i] for i in order]
        keys, scores = keys[:k], scores[:k]
        reasons = _reasons(found, [vectors[key] for key in keys]) if keys else []
        texts = self.store.catalog.item_texts(tenant, keys + [found.events[i].item for why in reasons for i, _ in why])
        items = [Recommendation(item=key, text=texts[key], score=round(float(score), 6),
                                reasons=[_reason(found.events[i], texts, term) for i, term in why])
                 for key, score, why in zip(keys, scores, reasons)]
        return head(space=space, items=items)

    def user_taste(self, tenant: str, user: str) -> tuple[TasteRead, Taste | None]:
        """The user's taste in the space recommendations rank in (None: no usable event) and
        the read it came from (its `space` and `fit`): what `recommend` ranks by, from the same
        cache. The user simulator judges candidates by it."""
        read, found, _ = self._taste(tenant, user, None)
        return read, found

    def _taste(self, tenant: str, user: str, snapshot: UserSnapshot | None
               ) -> tuple[TasteRead, Taste | None, frozenset[str]]:
        """The user's taste in the space recommendations rank in, and the items they acted on:
        from the cache when their events and the space are unchanged since it was folded in,
        else folded in now and kept."""
        read = self.store.reads.taste_read(tenant, user, None, events=False)
        space, config = read.space, self._config(read.fit)
        key = (tenant, user, space, read.generation, read.version, config)
        if key in self._tastes:
            self._tastes.move_to_end(key)
            return (read, *self._tastes[key])
        events: Sequence[EventRow | TasteEvent]
        if snapshot is not None and space in snapshot.item_vectors:  # a context read them already
            events, item_vectors = snapshot.events, snapshot.item_vectors[space]
        else:
            read = self.store.reads.taste_read(tenant, user, None)
            events = read.events
            item_vectors = self.store.reads.item_vectors(tenant, space, [e.item for e in events], read=read)
        entry = (taste(events, item_vectors, config), frozenset(e.item for e in events))
        if snapshot is None or read.events:  # a snapshot may predate this read: keep only what this read saw
            self._tastes[(tenant, user, read.space, read.generation, read.version, self._config(read.fit))] = entry
            while len(self._tastes) > TASTES_KEPT:
                self._tastes.popitem(last=False)
        return (read, *entry)

    def _config(self, fit: FitRecord | None) -> PreferenceConfig:
        """How events become a preference in the space: the fit's settings, else `text_config`."""
        return self.text_config if fit is None else FitConfig.from_dict(fit.config).preference

    def _candidates(self, tenant: str, space: str, read: TasteRead, query: np.ndarray, want: int, seen: set[str],
                    kind: str | None) -> tuple[list[str], list[float]]:
        """The `want` nearest items that are not `seen` and of `kind`: asks the index for more
        until enough are left or the catalog is exhausted."""
        fetch = want + len(seen)
        while True:
            hits = self.store.reads.search_items(space, query, fetch, read)
            fresh = [(key, score) for key, score in hits if key not in seen]
            allowed = set(self._of_kind(tenant, [key for key, _ in fresh], kind))
            fresh = [(key, score) for key, score in fresh if key in allowed][:want]
            if len(fresh) >= want or len(hits) < fetch:
                return [key for key, _ in fresh], [score for _, score in fresh]
            fetch *= 4

    def _of_kind(self, tenant: str, keys: list[str], kind: str | None) -> list[str]:
        """`keys` whose item has ``meta["kind"] == kind`` (all of them when `kind` is None)."""
        if kind is None or not keys:
            return keys
        meta = self.store.catalog.item_meta(tenant, keys)
        return [key for key in keys if (meta.get(key) or {}).get("kind") == kind]


def _reasons(found: Taste, item_vectors: list[np.ndarray]) -> list[list[tuple[int, float]]]:
    """Per item, (event index, term) of the events with the largest positive terms in its score."""
    similarity = found.vectors @ np.stack(item_vectors).astype(np.float64).T  # (events, items)
    terms = found.coefficients[:, None] * similarity
    out = []
    for column in terms.T:
        best = np.argpartition(-column, min(REASONS_PER_ITEM, len(column) - 1))[:REASONS_PER_ITEM]
        ranked = sorted(best.tolist(), key=lambda i: (-column[i], i))
        out.append([(i, float(column[i])) for i in ranked if column[i] > 0])
    return out


def _reason(event: EventRow | TasteEvent, texts: dict[str, str], term: float) -> Reason:
    ts = datetime.fromtimestamp(event.ts, timezone.utc) if isinstance(event.ts, float) else event.ts
    return Reason(item=event.item, text=texts.get(event.item, ""), type=event.type, value=event.value, ts=ts,
                  contribution=round(term, 6))


__all__ = ["MAX_K", "Recommender", "Taste", "taste"]
