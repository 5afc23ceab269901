"""What one labels / scale request asks of the model, and its answer from the model's scores.

`plan` takes the user's labelled history (`HistoryItem`s, oldest first), the question and the
allowed answers, and returns the prompts the text backend must score: the question's (with
the nearest history items written in as examples, `with_examples`) and, to fit the user's mix
of sources leave-one-out (`core.labels`), one prompt per recent history item, built the same
way from the rest of the history. `finish` turns the backend's log-likelihoods of the answers
into the `Decision`. The product's generation (`orchestrator.labels`) and the LaMP-style harness
(`eval.lamp_scored`) both answer through these two functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from unipgen.core import labels
from unipgen.core.labels import Decision, Item, LabelConfig, Mix, Row
from unipgen.core.retrieval import Candidate, hybrid_search

#: How a scored answer is made: the model alone, the user's history alone, or both mixed.
Mode = Literal["model", "user", "mixed"]
#: How retrieved examples are written before the question (docs/benchmarks.md measures them).
ExampleFormat = Literal["lamp", "pairs"]
EXAMPLE_FORMATS: tuple[str, ...] = ("lamp", "pairs")
#: LaMP's question wordings (LaMP-2 and LaMP-3) with "item" in place of the task's noun.
LABEL_QUESTION = ("Which label does this item relate to among the following labels? Just answer with the label "
                  "name without further explanation. labels: [{labels}] item: {text}")
SCALE_QUESTION = ("What is the score of the following item on a scale of {low} to {high}? Just answer with "
                  "{values} without further explanation. item: {text}")


@dataclass(frozen=True)
class HistoryItem:
    """One item the user answered: a lineage key ("kind:key"), its text, the answers (indexes)."""

    key: str
    text: str
    answers: tuple[int, ...]
    vector: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class Question:
    """The question: its text (the retrieval query), its prompt without examples, its vector."""

    text: str
    prompt: str
    vector: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class Settings:
    """What one plan uses: the mode, the examples in prompts, and the mixing config."""

    mode: Mode = "mixed"
    examples_k: int = 4
    example_format: ExampleFormat = "pairs"
    answer_name: str = "answer"  # what an example's answer is called ("tag", "score")
    item_name: str = "item"  # what an example's item is called ("movie"), as the question calls it
    config: LabelConfig = field(default_factory=LabelConfig)


@dataclass(frozen=True)
class Plan:
    """The prompts to score (the question's first), each one's user-side row, and the examples shown."""

    answers: list[str]
    ordinal: bool
    settings: Settings
    prompts: list[str]
    rows: list[Row]  # the question's row first, then the fit items' (with golds); model filled by `finish`
    examples: list[str]  # keys of the history items written into the question's prompt
    neighbours: list[str]  # keys of the history items whose answers vote for the question


def plan(history: Sequence[HistoryItem], question: Question, answers: Sequence[str], ordinal: bool,
         question_for: Callable[[str], str], settings: Settings) -> Plan:
    """The prompts and user-side rows of one request (see the module docstring)."""
    count = len(answers)
    items = [Item(h.text, h.answers) for h in history]
    config = settings.config
    found = nearest(history, question.text, question.vector, max(config.neighbours_k, settings.examples_k))
    shown = found[: settings.examples_k] if settings.mode != "user" else []
    voters = found[: config.neighbours_k]
    rows = [Row(None, labels.prior(items, count, config), _vote(items, voters, count, config))]
    prompts = [with_examples(question.prompt, [_example(history[i], answers) for i, _ in shown], settings)] \
        if settings.mode != "user" else []
    if settings.mode != "model":
        for index in range(max(0, len(history) - config.fit_items), len(history)):
            item = history[index]
            near = nearest(history, item.text, item.vector, max(config.neighbours_k, settings.examples_k), skip=index)
            rows.append(Row(None, labels.prior(items, count, config, skip=index),
                            _vote(items, near[: config.neighbours_k], count, config), item.answers))
            if settings.mode == "mixed":
                prompts.append(with_examples(question_for(item.text),
                                             [_example(history[i], answers) for i, _ in near[: settings.examples_k]],
                                             settings))
    return Plan(answers=list(answers), ordinal=ordinal, settings=settings, prompts=prompts, rows=rows,
                examples=[history[i].key for i, _ in shown], neighbours=[history[i].key for i, _ in voters])


def finish(scoring: Plan, logprobs: Sequence[Sequence[float]]) -> Decision:
    """The answer, from the backend's answer log-likelihoods of `scoring.prompts` (in order)."""
    if len(logprobs) != len(scoring.prompts):
        raise ValueError(f"{len(scoring.prompts)} prompts scored but {len(logprobs)} results")
    mode = scoring.settings.mode
    models = [labels.model_distribution(values) for values in logprobs]
    question = scoring.rows[0]
    if mode == "model":
        return labels.decide(Row(models[0], question.prior, question.neighbours), Mix((1.0, 0.0, 0.0), 0),
                             scoring.ordinal)
    fit_rows = scoring.rows[1:]
    if mode == "mixed":
        fit_rows = [Row(m, r.prior, r.neighbours, r.golds) for m, r in zip(models[1:], fit_rows, strict=True)]
        question = Row(models[0], question.prior, question.neighbours)
    mix = labels.fit(fit_rows, scoring.settings.config, with_model=mode == "mixed")
    return labels.decide(question, mix, scoring.ordinal)


def listing(answers: Sequence[str], ordinal: bool) -> str:
    """The allowed answers as a question lists them: "a, b, c" (labels), "1, 2, 3, 4, or 5" (a scale)."""
    if ordinal and len(answers) > 1:
        return f"{', '.join(answers[:-1])}{', or ' if len(answers) > 2 else ' or '}{answers[-1]}"
    return ", ".join(answers)


def question_template(answers: Sequence[str], ordinal: bool) -> str:
    """The generic question for an item ({text}): LaMP's wording, the answers listed."""
    if ordinal:
        return (SCALE_QUESTION.replace("{low}", answers[0]).replace("{high}", answers[-1])
                .replace("{values}", listing(answers, True)))
    return LABEL_QUESTION.replace("{labels}", listing(answers, False))


def instruction_prompt(instruction: str, answers: Sequence[str], ordinal: bool) -> str:
    """A request's own instruction, with how to answer after it."""
    how = f"Just answer with {listing(answers, True)} without further explanation." if ordinal else \
        f"Just answer with one of these labels, without further explanation: [{listing(answers, False)}]."
    return f"{instruction.rstrip()}\n{how}"


def nearest(history: Sequence[HistoryItem], text: str, vector: npt.NDArray[np.float32] | None, k: int,
            skip: int | None = None) -> list[tuple[int, float]]:
    """(index, fused score) of the `k` history items nearest `text` by the hybrid retrieval
    (BM25 and, where vectors exist, dense), `skip` left out."""
    if k <= 0:
        return []
    candidates = [Candidate("item", str(i), h.text, h.vector) for i, h in enumerate(history) if i != skip]
    return [(int(e.key), e.score) for e in hybrid_search(text, vector, candidates, k=k)]


def _vote(items: Sequence[Item], found: Sequence[tuple[int, float]], count: int,
          config: LabelConfig) -> npt.NDArray[np.float64]:
    return labels.vote([(items[i], score) for i, score in found], count, config)


def _example(item: HistoryItem, answers: Sequence[str]) -> tuple[str, str]:
    return item.text, ", ".join(answers[a] for a in item.answers)


def with_examples(prompt: str, examples: Sequence[tuple[str, str]], settings: Settings) -> str:
    """The question's prompt after the retrieved examples, nearest last (closest to the question).

    ``pairs``: the examples in the question's own form, ``<item>: X`` then ``<answer>: Y``, under
    a heading (`settings.item_name`, `settings.answer_name`), then the question; ``lamp``: LaMP's
    sentence, `the tag for "X" is "Y", and ... . <question>`.
    """
    if not examples:
        return prompt
    ordered = list(examples)[::-1]
    answer, item = settings.answer_name, settings.item_name
    if settings.example_format == "lamp":
        shown = ", and ".join(f'the {answer} for "{text}" is "{given}"' for text, given in ordered)
        return f"{shown}. {prompt}"
    lines = "\n".join(f"{item}: {text}\n{answer}: {given}" for text, given in ordered)
    return f"{answer.capitalize()}s this user gave to similar {item}s:\n{lines}\n\n{prompt}"


__all__ = ["EXAMPLE_FORMATS", "LABEL_QUESTION", "SCALE_QUESTION", "ExampleFormat", "HistoryItem", "Mode", "Plan",
           "Question", "Settings", "finish", "instruction_prompt", "listing", "nearest", "plan", "question_template",
           "with_examples"]
