"""The keyword vocabulary: which words it holds, nearest words, the on-disk cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unipgen.core.vocabulary import DESCRIPTIVE_WORDS, Vocabulary, build_vocabulary, catalog_words


def test_words_come_from_tags_lexicon_and_lowercase_text() -> None:
    texts = ["Alien (1979) — a lonely crew, a lonely ship", "Heat (1995) — a heist in a lonely city"]
    meta = {"1": {"genres": ["Horror", "Sci-Fi"]}, "2": {"genres": ["Crime", "horror"]}}
    words = catalog_words(texts, meta)
    assert words[:3] == ["Horror", "Sci-Fi", "Crime"]  # tags first, each once whatever its case
    assert "lonely" in words  # frequent description word
    assert "Alien" not in words and "alien" not in words  # title words are names
    assert set(DESCRIPTIVE_WORDS) <= {w.lower() for w in words}


def test_nearest_words_by_cosine() -> None:
    vocabulary = Vocabulary(["a", "b", "c"], np.eye(3, dtype=np.float32))
    assert vocabulary.nearest(np.array([0.1, 0.9, 0.0]), 2) == [("b", 0.9), ("a", 0.1)]
    assert vocabulary.nearest(np.array([0.1, 0.9, 0.0]), 1, exclude=["B"]) == [("a", 0.1)]
    assert vocabulary.nearest(np.zeros(3), 2) == []


def test_vectors_are_cached_per_encoder(tmp_path: Path) -> None:
    calls = []

    def encode(words: list[str]) -> np.ndarray:
        calls.append(list(words))
        return np.ones((len(words), 2), dtype=np.float32)

    build_vocabulary(["x", "y"], encode, "enc-a", tmp_path)
    again = build_vocabulary(["x", "y"], encode, "enc-a", tmp_path)
    build_vocabulary(["x", "y"], encode, "enc-b", tmp_path)
    assert len(calls) == 2 and again.vectors.shape == (2, 2)
