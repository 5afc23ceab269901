"""A tenant's keyword vocabulary: words from its catalog, embedded once, to name preferences.

Preference vectors live in the item embedding space; generators that read only a prompt need
words. The vocabulary is the catalog's own language: metadata tags (e.g. MovieLens genres)
plus the most frequent content words of item texts. Each word is embedded with the same text
encoder as the items, so the words nearest a preference vector describe it (the PMG / Pigeon
idea of distilling history into prompt keywords).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOPWORDS = frozenset(
    "this that with from have they them their there were what when which while about into over "
    "under your yours than then also only just more most some such very will would could should "
    "been being after before again other these those each many much part story movie film".split()
)


@dataclass(frozen=True)
class Vocabulary:
    """Words and their unit vectors (one row per word)."""

    words: list[str]
    vectors: np.ndarray

    def nearest(self, query: np.ndarray, k: int, exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
        """The `k` words with the highest cosine to `query` (skipping `exclude`), best first."""
        if not self.words or not np.any(query):
            return []
        skip = {w.lower() for w in exclude}
        scores = self.vectors @ query
        ranked = (int(i) for i in np.argsort(-scores, kind="stable"))
        picked = [(self.words[i], float(scores[i])) for i in ranked if self.words[i].lower() not in skip]
        return picked[:k]


def catalog_words(texts: Iterable[str], meta: Mapping[str, Mapping[str, Any]], limit: int = 1500) -> list[str]:
    """Metadata tags first (every `genres`/`tags` value), then the most frequent content words."""
    tags: dict[str, None] = {}
    for item_meta in meta.values():
        for field in ("genres", "tags"):
            for tag in item_meta.get(field) or ():
                tags.setdefault(str(tag), None)
    counts = Counter(w.lower() for text in texts for w in _WORD.findall(text) if w.lower() not in _STOPWORDS)
    known = {t.lower() for t in tags}
    frequent = [w for w, n in counts.most_common() if n >= 2 and w not in known]
    return (list(tags) + frequent)[:limit]


def build_vocabulary(words: list[str], encode: Any, encoder_id: str, cache_dir: Path | None = None) -> Vocabulary:
    """Embed `words` with `encode` (texts → unit vectors), cached on disk by encoder and words."""
    digest = hashlib.sha256("\n".join([encoder_id, *words]).encode()).hexdigest()[:16]
    path = cache_dir / f"vocabulary-{digest}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return Vocabulary(words, np.load(path))
    vectors = encode(words) if words else np.zeros((0, 1), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return Vocabulary(words, vectors)
