"""A tenant's keyword vocabulary: words that can name preferences, embedded once.

Preference vectors live in the item embedding space; generators that read only a prompt need
words. The vocabulary holds the catalog's metadata tags (e.g. MovieLens genres), the frequent
lower-case words of item texts (descriptions; capitalised title words are names, not taste),
and a built-in lexicon of moods and styles that prompts for images, music and video use. Each
word is embedded with the same text encoder as the items, so the words nearest a preference
vector describe it (the PMG / Pigeon idea of distilling history into prompt keywords). Users'
own documents are not used: one user's words must not surface in another's prompt.
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

_WORD = re.compile(r"[a-z][a-z'-]{3,}")  # lower case only: capitalised words are mostly names
_STOPWORDS = frozenset(
    "this that with from have they them their there were what when which while about into over "
    "under your yours than then also only just more most some such very will would could should "
    "been being after before again other these those each many much part story movie film".split()
)


#: Moods and styles: the words prompt-only generators respond to.
DESCRIPTIVE_WORDS = tuple(
    "dark gritty bleak moody noir gloomy haunting eerie creepy suspenseful tense thrilling mysterious "
    "violent brutal intense explosive epic grand heroic adventurous action-packed fast-paced "
    "funny witty quirky absurd satirical playful lighthearted cheerful upbeat joyful whimsical "
    "romantic tender heartwarming sentimental nostalgic melancholic bittersweet emotional dramatic "
    "thoughtful philosophical cerebral surreal dreamlike psychedelic magical mythical fantastical "
    "futuristic dystopian cyberpunk retro vintage historical classic old-fashioned modern minimalist "
    "colorful vibrant pastel monochrome cinematic realistic documentary gothic rustic urban pastoral "
    "family-friendly childlike innocent wholesome cozy calm serene peaceful gentle relaxing "
    "energetic rebellious spooky chilling gory sinister ominous uplifting inspiring".split()
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
    """Metadata tags (every `genres`/`tags` value), the built-in lexicon, then the most frequent
    lower-case content words of item texts (seen at least twice), up to `limit` words."""
    words: dict[str, str] = {}  # lower case → first spelling seen, so "Documentary" appears once
    for item_meta in meta.values():
        for field in ("genres", "tags"):
            for tag in item_meta.get(field) or ():
                words.setdefault(str(tag).lower(), str(tag))
    for word in DESCRIPTIVE_WORDS:
        words.setdefault(word, word)
    counts = Counter(w for text in texts for w in _WORD.findall(text) if w not in _STOPWORDS)
    frequent = [w for w, n in counts.most_common() if n >= 2 and w not in words]
    return (list(words.values()) + frequent)[:limit]


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
