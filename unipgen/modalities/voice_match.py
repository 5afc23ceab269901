"""Find a Kokoro style that sounds like a user: derivative-free search scored by a speaker encoder.

Kokoro-82M has no speaker encoder of its own: its voices are 256-d style vectors (the first 128
numbers drive the decoder's timbre, the last 128 the prosody predictor's pitch, energy and
durations), one row per input length (a "voice pack", shape (510, 256)). A user's voice is known
only as a Resemblyzer embedding of their recordings, so the search treats synthesis followed by
Resemblyzer as a black box `score(pack) -> cosine to the user` and spends a fixed budget of
candidate syntheses:

1. the bundled voices, the default first (so the result never scores below the default voice);
2. a blend of them weighted by a softmax of their scores (voices nearer the user count more);
3. a (1+1) evolution strategy around the best pack so far: each step adds one random offset,
   scaled per dimension by how much the bundled voices differ there, to every row; the step
   grows after a success and shrinks after a failure (the 1/5th success rule, roughly).

Everything random comes from `numpy.random.default_rng(seed)`: the same inputs give the same
pack. The score is measured on one probe sentence, so the gain on other sentences is smaller
than the gain the search reports (see the voice benchmark for the held-out figure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: Softmax temperature of the blend, in cosine units: 0.02 puts about 7x more weight on a voice
#: that scores 0.04 higher.
BLEND_TEMPERATURE = 0.02


@dataclass
class SearchResult:
    """The best pack found, its probe score, and every candidate's score in the order tried."""

    pack: np.ndarray
    score: float
    default_score: float
    trace: list[tuple[str, float]] = field(default_factory=list)


def match_style(voices: dict[str, np.ndarray], default: str, score: Callable[[np.ndarray], float],
                budget: int, seed: int = 0, step: float = 0.5) -> SearchResult:
    """The voice pack (510, 256) that scores highest among `budget` candidates (see module doc).

    `voices` maps names to packs, `default` names the one to start from; `step` is the first
    offset's size in units of the voices' per-dimension spread.
    """
    if budget < 1:
        raise ValueError("the search budget must be at least one synthesis")
    names = [default] + sorted(name for name in voices if name != default)
    trace: list[tuple[str, float]] = []
    best_pack, best = voices[default], -np.inf

    def tried(label: str, pack: np.ndarray) -> bool:
        nonlocal best_pack, best
        value = float(score(pack))
        trace.append((label, round(value, 4)))
        scores[label] = value
        if value > best:
            best_pack, best = pack, value
            return True
        return False

    scores: dict[str, float] = {}
    for name in names[:budget]:
        tried(name, voices[name])
    default_score = scores[default]
    remaining = budget - len(scores)
    if remaining > 0 and len(scores) > 1:
        tried_voices = list(scores)
        values = np.array([scores[name] for name in tried_voices])
        weights = np.exp((values - values.max()) / BLEND_TEMPERATURE)
        weights /= weights.sum()
        blend = sum(w * voices[name] for w, name in zip(weights, tried_voices))
        tried("blend", blend.astype(np.float32))
        remaining -= 1

    rng = np.random.default_rng(seed)
    spread = voice_spread(voices)
    for index in range(remaining):
        offset = (step * spread * rng.standard_normal(spread.shape)).astype(np.float32)
        if tried(f"step{index}", best_pack + offset):
            step *= 1.5
        else:
            step *= 0.8
    return SearchResult(pack=np.asarray(best_pack, np.float32), score=best, default_score=default_score,
                        trace=trace)


def voice_spread(voices: dict[str, np.ndarray]) -> np.ndarray:
    """(256,): how far the voice packs differ per style dimension (the unit of every step)."""
    stack = np.stack(list(voices.values()))
    return (stack.std(axis=0).mean(axis=0) + 1e-3).astype(np.float32)


def voice_step(spread: np.ndarray, size: float, seed: int) -> np.ndarray:
    """One random step of `size` spreads, drawn from `seed`, added to every row of a pack."""
    return (size * spread * np.random.default_rng(seed).standard_normal(spread.shape)).astype(np.float32)


__all__ = ["BLEND_TEMPERATURE", "SearchResult", "match_style", "voice_spread", "voice_step"]
