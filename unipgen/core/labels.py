"""The user model's part in an answer that is a label or a rating: three sources, mixed per user.

A labels / scale request is answered by ranking the allowed answers (docs/generation.md,
'Answers that are labels'). Three sources each give a distribution over the answers:

* ``model``: the language model's likelihood of each answer after the prompt (softmax of the
  summed token log-probabilities; `unipgen.modalities.text_scoring`);
* ``prior``: the user's own answers in their history, the latest weighing most (a weight that
  halves every `half_life` answers back), smoothed toward uniform;
* ``neighbours``: the answers the user gave to the history items nearest the question (the
  hybrid retrieval of `core.retrieval`), each weighted by its fused retrieval score.

The answer's distribution is their mixture ``w_model p_model + w_prior p_prior + w_neighbours
p_neighbours``. The weights are fitted per user on their own history, leave-one-out: each of
their latest items is predicted from the rest (its own prior, neighbours and model scores), and
the weights on a grid of the simplex that give the gold answers the highest mean log-likelihood
win, pulled toward an even split by `shrink` pseudo-items (a short history keeps a balanced
mix). A user with a strong habit gets the prior; one whose answers follow the items gets the
neighbours; a varied user gets the model. Labels take the likeliest answer; a scale takes the
weighted median (the answer with the least expected absolute error). Each answer records the
weights and how much of its probability each source gave (`Decision.shares`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]

#: The sources of an answer's distribution, in the order weights are given.
SOURCES = ("model", "prior", "neighbours")


@dataclass(frozen=True)
class LabelConfig:
    """How the sources are built and mixed (the defaults were chosen on MovieLens tags: docs/benchmarks.md)."""

    half_life: float | None = 8.0  # the prior's recency, in answers (None: every answer counts the same)
    smoothing: float = 1.0  # pseudo-answers spread evenly over the answers (prior and neighbours)
    neighbours_k: int = 8  # history items retrieved for the neighbours' vote
    fit_items: int = 16  # the latest items predicted leave-one-out to fit the weights
    grid: int = 10  # the weights' grid step is 1 / grid
    shrink: float = 4.0  # pseudo-items of the even split in the fitted weights


@dataclass(frozen=True)
class Item:
    """One item of the user's history: its text and the answers they gave it (indexes)."""

    text: str
    answers: tuple[int, ...]


@dataclass(frozen=True)
class Row:
    """The three sources' distributions for one question, and its gold answers when known."""

    model: Vector | None
    prior: Vector
    neighbours: Vector
    golds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Mix:
    """Fitted weights (model, prior, neighbours) and what they were fitted on."""

    weights: tuple[float, float, float]
    fitted_on: int
    loo_loglik: float | None = None

    def as_dict(self) -> dict[str, float]:
        return {name: round(w, 4) for name, w in zip(SOURCES, self.weights, strict=True)}


@dataclass(frozen=True)
class Decision:
    """The answer chosen, the mixed distribution, and each source's share of the answer's probability."""

    answer: int
    probabilities: Vector
    shares: dict[str, float]
    mix: Mix
    tops: dict[str, int]  # each source's own likeliest answer

    def meta(self, answers: Sequence[str]) -> dict[str, object]:
        """What an output records about how its answer was chosen."""
        return {"answer": answers[self.answer], "sources": self.shares, "weights": self.mix.as_dict(),
                "fitted_on": self.mix.fitted_on,
                "probabilities": {a: round(float(p), 4) for a, p in zip(answers, self.probabilities, strict=True)},
                "source_answers": {name: answers[i] for name, i in self.tops.items()}}


# -- the sources ---------------------------------------------------------------------------------


def uniform(count: int) -> Vector:
    return np.full(count, 1.0 / count)


def model_distribution(logprobs: Sequence[float]) -> Vector:
    """Softmax of the answers' summed log-probabilities: the model's choice among the allowed answers."""
    values = np.asarray(logprobs, dtype=np.float64)
    exp = np.exp(values - values.max())
    result: Vector = exp / exp.sum()
    return result


def recency_weights(count: int, half_life: float | None) -> Vector:
    """Weights of `count` history items, oldest first: 1 for the latest, halving every `half_life` back."""
    if half_life is None:
        return np.ones(count)
    result: Vector = 0.5 ** (np.arange(count - 1, -1, -1, dtype=np.float64) / half_life)
    return result


def prior(items: Sequence[Item], count: int, config: LabelConfig, skip: int | None = None) -> Vector:
    """The user's answer distribution over `count` answers from `items` (oldest first), recency-weighted
    and smoothed; `skip`: an item left out (leave-one-out), the others keep their places."""
    weights = recency_weights(len(items), config.half_life)
    totals = np.zeros(count)
    for index, item in enumerate(items):
        if index != skip and item.answers:
            np.add.at(totals, list(item.answers), weights[index] / len(item.answers))
    return _smoothed(totals, config.smoothing)


def vote(neighbours: Sequence[tuple[Item, float]], count: int, config: LabelConfig) -> Vector:
    """The answers of the retrieved items, each item weighted by its retrieval score, smoothed."""
    totals = np.zeros(count)
    for item, score in neighbours:
        if item.answers:
            np.add.at(totals, list(item.answers), max(score, 0.0) / len(item.answers))
    if totals.sum() > 0:  # scale the votes to item counts, so smoothing means the same as in the prior
        totals *= sum(1 for item, score in neighbours if item.answers and score > 0) / totals.sum()
    return _smoothed(totals, config.smoothing)


def _smoothed(totals: Vector, smoothing: float) -> Vector:
    total = totals.sum() + smoothing
    if total <= 0:
        return uniform(len(totals))
    result: Vector = (totals + smoothing / len(totals)) / total
    return result


# -- mixing --------------------------------------------------------------------------------------


def simplex(grid: int, with_model: bool = True) -> list[tuple[float, float, float]]:
    """Every weight triple on the simplex with step 1 / `grid` (the model's weight 0 when it has no scores)."""
    points = [(a / grid, b / grid, (grid - a - b) / grid) for a, b in product(range(grid + 1), repeat=2)
              if a + b <= grid]
    return [p for p in points if with_model or p[0] == 0]


def mixed(row: Row, weights: Sequence[float]) -> Vector:
    """The mixture of a row's sources under `weights` (a missing model counts as uniform)."""
    model = row.model if row.model is not None else uniform(len(row.prior))
    result: Vector = weights[0] * model + weights[1] * row.prior + weights[2] * row.neighbours
    return result


def fit(rows: Sequence[Row], config: LabelConfig, with_model: bool = True) -> Mix:
    """The weights that give `rows`' golds the highest mean log-likelihood, shrunk toward an even split."""
    even = (1 / 3, 1 / 3, 1 / 3) if with_model else (0.0, 0.5, 0.5)
    scored = [row for row in rows if row.golds]
    if not scored:
        return Mix(weights=even, fitted_on=0)
    best, best_score = even, -np.inf
    for weights in simplex(config.grid, with_model):
        score = float(np.mean([np.log(max(mixed(row, weights)[list(row.golds)].sum(), 1e-12)) for row in scored]))
        if score > best_score + 1e-12:
            best, best_score = weights, score
    n = len(scored)
    shrunk = tuple((n * b + config.shrink * e) / (n + config.shrink) for b, e in zip(best, even, strict=True))
    return Mix(weights=(shrunk[0], shrunk[1], shrunk[2]), fitted_on=n, loo_loglik=round(best_score, 4))


def decide(row: Row, mix: Mix, ordinal: bool = False) -> Decision:
    """The answer under `mix`: the likeliest, or for a scale (`ordinal`) the weighted median."""
    probabilities = mixed(row, mix.weights)
    probabilities = probabilities / probabilities.sum()
    answer = weighted_median(probabilities) if ordinal else int(np.argmax(probabilities))
    parts = [row.model if row.model is not None else uniform(len(row.prior)), row.prior, row.neighbours]
    total = float(probabilities[answer]) or 1.0
    shares = {name: round(float(w * part[answer]) / total, 4) for name, w, part in zip(SOURCES, mix.weights, parts,
                                                                                       strict=True)}
    tops = {name: int(np.argmax(part)) for name, part in zip(SOURCES, parts, strict=True)
            if name != "model" or row.model is not None}
    return Decision(answer=answer, probabilities=probabilities, shares=shares, mix=mix, tops=tops)


def weighted_median(probabilities: Vector) -> int:
    """The first answer at which the cumulative probability reaches one half."""
    return int(np.searchsorted(np.cumsum(probabilities), 0.5 - 1e-12))


__all__ = ["SOURCES", "Decision", "Item", "LabelConfig", "Mix", "Row", "decide", "fit", "model_distribution",
           "mixed", "prior", "recency_weights", "simplex", "uniform", "vote", "weighted_median"]
