"""Scores of the LaMP-style harness: each method's metrics, the baselines without a model, and
paired bootstrap intervals of each method's gain over them.

Label tasks: an answer maps to a label (exact, else the longest label it contains; else wrong),
accuracy against any of the question's golds, macro F1, ROUGE-1. Rating tasks: the first digit
of the answer (none: the worst rating, LaMP's rule), MAE and RMSE. Generation tasks: ROUGE-1 /
ROUGE-L F1 and corpus BLEU (`unipgen.eval.text_metrics`).

Gains are paired over questions (resampled together): accuracy of the method minus the
baseline's, or the baseline's MAE minus the method's (above zero: the method is better). A
second interval resamples users instead (`*_gain_ci95_users`): a user's questions are not
independent, so it is the one to read when a few users carry a gain.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from unipgen.eval import text_metrics
from unipgen.eval.lamp_tasks import Task

#: Baselines that need no model, per task kind.
BASELINES_BY_KIND = {"classification": ("majority", "user_majority"),
                     "rating": ("majority", "user_majority", "user_mean"), "generation": ()}


def rouge1_f1(prediction: str, reference: str) -> float:
    """ROUGE-1 F1 of one pair (`text_metrics.rouge1`: rouge-score, lower case, no stemming)."""
    return text_metrics.rouge1([prediction], [reference])


def f1_macro(predicted: Sequence[str | None], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Macro F1 over `labels` (an unmapped answer is a miss for its gold label)."""
    return text_metrics.macro_f1(predicted, golds, labels) if labels else 0.0


def map_to_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label an answer names: exact (case and spacing aside), else the longest label it contains."""
    text = " " + " ".join(re.sub(r"[^\w\s-]", " ", answer.lower()).split()) + " "
    if text.strip() in labels:
        return text.strip()
    contained = [label for label in labels if f" {label} " in text]
    return max(contained, key=lambda label: (len(label), -text.index(f" {label} "))) if contained else None


def parse_rating(answer: str) -> int | None:
    """The first digit 1-5 in the answer, else None."""
    found = re.search(r"[1-5]", answer)
    return int(found.group()) if found else None


def gold_rating(gold: str) -> float:
    try:
        return float(gold)
    except ValueError:
        return float(parse_rating(gold) or 0)


def filled_ratings(task: Task, answers: Sequence[str]) -> list[float]:
    """Per question, the rating the answer gives; none in it: the worst one, 1 or 5, whichever is farther
    from the gold (LaMP's rule)."""
    filled = []
    for answer, question in zip(answers, task.questions, strict=True):
        gold, predicted = gold_rating(question.golds[0]), parse_rating(answer)
        filled.append(float(predicted) if predicted is not None else (1.0 if abs(1 - gold) > abs(5 - gold) else 5.0))
    return filled


def rating_errors(task: Task, answers: Sequence[str]) -> list[float]:
    """Per question, the absolute error in stars of `filled_ratings`."""
    return [abs(f - gold_rating(q.golds[0])) for f, q in zip(filled_ratings(task, answers), task.questions,
                                                             strict=True)]


def score_classification(task: Task, answers: Sequence[str]) -> dict[str, float]:
    """Accuracy (any of the question's golds counts), macro F1 and ROUGE-1 (best gold) of one method."""
    labels = [map_to_label(a, task.labels) for a in answers]
    # With several accepted tags, a hit is scored against the tag hit, a miss against the first.
    golds = [p if p in q.golds else q.golds[0] for p, q in zip(labels, task.questions, strict=True)]
    return {"acc": text_metrics.accuracy(labels, golds), "f1_macro": f1_macro(labels, golds, task.labels),
            "rouge1": text_metrics.rouge1(list(answers), [list(q.golds) for q in task.questions]),
            "unmapped": sum(label is None for label in labels) / len(labels)}


def score_rating(task: Task, answers: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE in stars (`filled_ratings`), and the share of answers with no rating in them."""
    filled = filled_ratings(task, answers)
    golds = [gold_rating(q.golds[0]) for q in task.questions]
    return {"mae": text_metrics.mae(filled, golds), "rmse": text_metrics.rmse(filled, golds),
            "unparsed": sum(parse_rating(a) is None for a in answers) / len(answers)}


def score_generation(task: Task, answers: Sequence[str]) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L F1 (mean over questions, 0-1) and corpus BLEU (sacrebleu, 0-100)."""
    golds = [list(q.golds) for q in task.questions]
    return text_metrics.rouge(list(answers), golds) | {"bleu": text_metrics.bleu(list(answers), golds)}


SCORERS = {"classification": score_classification, "rating": score_rating, "generation": score_generation}


def score_all(task: Task, answers: dict[str, list[str]], methods: Sequence[str]) -> dict[str, Any]:
    """`<metric>_<method>` for every method and baseline; for label and rating tasks also each
    method's gain over every baseline (and over `nonpersonal`), with 95% bootstrap intervals."""
    every = answers | baselines(task)
    scored = {method: SCORERS[task.kind](task, texts) for method, texts in every.items()}
    results: dict[str, Any] = {f"{metric}_{method}": round(value, 4) for method, metrics in scored.items()
                               for metric, value in metrics.items()}
    if task.kind != "generation":
        name = "acc" if task.kind == "classification" else "mae"
        bases = [b for b in ("nonpersonal", *BASELINES_BY_KIND[task.kind]) if b in every]
        pairs = [(m, b) for m in methods if m in answers for b in bases if m != b]
        results[f"{name}_gain_ci95"] = {f"{m}_vs_{b}": gain(task, every[m], every[b]) for m, b in pairs}
        results[f"{name}_gain_ci95_users"] = {f"{m}_vs_{b}": gain(task, every[m], every[b], by_user=True)
                                              for m, b in pairs}
    return results


def goodness(task: Task, answers: Sequence[str]) -> list[float]:
    """Per question, higher is better: 1 / 0 for a right / wrong label, minus the error for a rating."""
    if task.kind == "rating":
        return [-e for e in rating_errors(task, answers)]
    return [float(flag) for flag in correct(task, answers)]


def correct(task: Task, answers: Sequence[str]) -> list[bool]:
    """Per question: does the answer map to one of its gold labels."""
    return [map_to_label(a, task.labels) in q.golds for a, q in zip(answers, task.questions, strict=True)]


def gain(task: Task, answers: Sequence[str], baseline: Sequence[str], resamples: int = 2000, seed: int = 0,
         by_user: bool = False) -> list[float]:
    """[gain, low, high]: how much better `answers` are than `baseline` (accuracy up, or MAE down), with
    a paired bootstrap 95% interval: questions resampled, or whole users' questions with `by_user`."""
    diffs = [a - b for a, b in zip(goodness(task, answers), goodness(task, baseline), strict=True)]
    groups: dict[str, list[float]] = {}
    for diff, question in zip(diffs, task.questions, strict=True):
        groups.setdefault(question.user if by_user else question.id, []).append(diff)
    clusters = list(groups.values())
    draw = random.Random(seed)
    means = []
    for _ in range(resamples):
        picked = draw.choices(clusters, k=len(clusters))
        means.append(sum(sum(c) for c in picked) / sum(len(c) for c in picked))
    means.sort()
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return [round(sum(diffs) / len(diffs), 4), round(low, 4), round(high, 4)]


def baselines(task: Task) -> dict[str, list[str]]:
    """Answers without a model: the most frequent answer of all profiles and of the user's own; for a
    rating task also the user's mean rating, rounded to a whole star."""
    if task.kind == "generation":
        return {}
    overall = Counter(e.answer for entries in task.profiles.values() for e in entries if e.answer)
    top = overall.most_common(1)[0][0] if overall else ""

    def own(user: str) -> str:
        counts = Counter(e.answer for e in task.profiles[user] if e.answer)
        return counts.most_common(1)[0][0] if counts else top

    found = {"majority": [top] * len(task.questions), "user_majority": [own(q.user) for q in task.questions]}
    if task.kind == "rating":
        found["user_mean"] = [_mean_rating(task, q.user, top) for q in task.questions]
    return found


def _mean_rating(task: Task, user: str, fallback: str) -> str:
    scores = [gold_rating(e.answer) for e in task.profiles[user] if e.answer]
    return str(int(sum(scores) / len(scores) + 0.5)) if scores else fallback


def examples(task: Task, answers: dict[str, list[str]], count: int | None = None) -> list[dict[str, Any]]:
    """The questions (the first `count`; None: all) with every method's raw answer, to read what the model says."""
    return [{"question": q.id, "subject": q.subject, "golds": list(q.golds),
             **{method: texts[i] for method, texts in answers.items()}}
            for i, q in enumerate(task.questions[:count])]


def scores_by_user(task: Task, answers: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """user -> questions and each method's accuracy (labels) or MAE (ratings) on that user's questions."""
    values = {method: goodness(task, texts) for method, texts in answers.items()}
    sign = -1.0 if task.kind == "rating" else 1.0
    rows: dict[str, dict[str, Any]] = {}
    for user in task.profiles:
        mine = [i for i, q in enumerate(task.questions) if q.user == user]
        if mine:
            rows[user] = {"questions": len(mine), "profile": len(task.profiles[user])} | {
                # + 0.0: an exact rating's MAE is 0.0, not the -0.0 that negating its goodness gives
                method: round(sign * sum(flags[i] for i in mine) / len(mine), 3) + 0.0
                for method, flags in values.items()}
    return rows


__all__ = ["BASELINES_BY_KIND", "SCORERS", "baselines", "correct", "examples", "f1_macro", "filled_ratings", "gain", "gold_rating",
           "goodness", "map_to_label", "parse_rating", "rating_errors", "rouge1_f1", "score_all",
           "score_classification", "score_generation", "score_rating", "scores_by_user"]
