"""A user's answers to a labels / scale request's question, as their memory holds them.

* A scale (`GenerationOptions.scale`): the user's ``rate`` events, the latest per item, each value
  rounded half up to a whole step of the scale and kept inside it (a MovieLens 3.5 is a 4 on
  1-5). The item's text is the question's subject.
* Labels (`GenerationOptions.labels`): the user's documents that are one of the labels (case and
  spacing aside) and name an item in ``meta["item"]`` (MovieLens tags load so), and events whose
  ``meta["label"]`` is one. An item may carry several labels.

Only items whose text the snapshot holds (the items the user has events on) count. The history
is oldest first, by the time of each item's first answer; `sources` lists every memory item it
read ("kind:key"), so an answer's lineage names them and forgetting one removes the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from unipgen.core.label_plan import HistoryItem
from unipgen.memory.snapshot import UserSnapshot


@dataclass(frozen=True)
class LabelHistory:
    """The user's answered items (oldest first) and the memory items they were read from."""

    items: list[HistoryItem]
    sources: list[str]


def normalised(label: str) -> str:
    return " ".join(label.lower().split())


def on_scale(value: float, low: int, high: int) -> int:
    """`value` rounded half up to a whole step, kept within [low, high]."""
    return min(max(math.floor(value + 0.5), low), high)


def history(snapshot: UserSnapshot, answers: Sequence[str], scale: tuple[int, int] | None) -> LabelHistory:
    """The user's history for a request whose allowed answers are `answers` (see the module docstring)."""
    found = _ratings(snapshot, scale) if scale is not None else _labels(snapshot, answers)
    vectors = snapshot.item_vectors.get("text", {})
    ordered = sorted(found.items(), key=lambda pair: (pair[1][0], pair[0]))
    items = [HistoryItem(f"item:{key}", snapshot.item_texts[key], tuple(dict.fromkeys(picked)), vectors.get(key))
             for key, (_, picked, _) in ordered]
    sources = [f"item:{key}" for key, _ in ordered] + [s for _, (_, _, extra) in ordered for s in extra]
    return LabelHistory(items=items, sources=list(dict.fromkeys(sources)))


#: item key -> (time of its first answer, answer indexes, lineage beyond the item itself)
_Found = dict[str, tuple[datetime, list[int], list[str]]]


def _ratings(snapshot: UserSnapshot, scale: tuple[int, int]) -> _Found:
    low, high = scale
    found: _Found = {}
    for event in snapshot.events:  # oldest first: a later rating of an item replaces an earlier one
        if event.type == "rate" and event.value is not None and event.item in snapshot.item_texts:
            found[event.item] = (event.ts, [on_scale(event.value, low, high) - low], [])
    return found


def _labels(snapshot: UserSnapshot, answers: Sequence[str]) -> _Found:
    index = {normalised(a): i for i, a in enumerate(answers)}
    found: _Found = {}

    def add(item: object, label: object, ts: datetime | None, source: str | None) -> None:
        if not isinstance(item, str) or not isinstance(label, str) or item not in snapshot.item_texts:
            return
        if normalised(label) not in index or ts is None:
            return
        first, picked, extra = found.get(item, (ts, [], []))
        found[item] = (min(first, ts), [*picked, index[normalised(label)]], extra + ([source] if source else []))

    for document in snapshot.documents:
        add((document.meta or {}).get("item"), document.text, document.ts, f"document:{document.key}")
    for event in snapshot.events:
        add(event.item, (event.meta or {}).get("label"), event.ts, None)
    return found


__all__ = ["LabelHistory", "history", "normalised", "on_scale"]
