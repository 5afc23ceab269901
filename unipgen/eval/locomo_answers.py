"""Answers to LoCoMo questions from a profile's text model, scored with LoCoMo's token F1.

Each answer is a text generation through the product's path (`InlineGenerator`: the question as
the instruction, the stored conversation's turns as the retrieved evidence in the prompt, the
profile's text model), so the figure says what a user of `unipgen chat` or `generate -m text`
would get. The score is LoCoMo's (Maharana et al., 2024, `task_eval/evaluation.py`): answers
lower-cased, commas, punctuation and the words a/an/the/and removed, tokens Porter-stemmed,
token-level F1; a multi-hop answer (category 1) is a comma-separated list, each gold part
scored against its best predicted part and averaged; a category-3 gold answer is read up to its
first ";". Reported, not targeted: a 135M model does not answer well.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Words LoCoMo's normalisation removes.
_DROPPED = re.compile(r"\b(a|an|the|and)\b")


def normalize_answer(text: str) -> str:
    """LoCoMo's normalisation: no commas, articles, "and" or punctuation; lower case; single spaces."""
    text = text.replace(",", "").lower()
    text = _DROPPED.sub(" ", text)
    text = "".join(ch for ch in text if ch not in string.punctuation)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    from nltk.stem import PorterStemmer

    stem = PorterStemmer().stem
    return [stem(word) for word in normalize_answer(text).split()]


def token_f1(prediction: str, gold: str) -> float:
    """Token F1 of two answers after normalisation and stemming (0 when either is empty)."""
    predicted, wanted = _tokens(prediction), _tokens(gold)
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if not predicted or not wanted or common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def locomo_f1(prediction: str, gold: str, category: int) -> float:
    """A question's score as LoCoMo computes it for its category."""
    if category == 1:
        parts = [p for p in prediction.split(",") if p.strip()] or [prediction]
        golds = [g for g in gold.split(",") if g.strip()] or [gold]
        return float(np.mean([max(token_f1(p, g) for p in parts) for g in golds]))
    if category == 3:
        gold = gold.split(";")[0]
    return token_f1(prediction, gold)


def answer_all(generator: Any, tenant: str, user: str, questions: Sequence[Any], max_new_tokens: int = 32,
               ) -> list[dict[str, Any]]:
    """Each question answered by `generator` (an `InlineGenerator`), with its F1 and the gold answer."""
    from unipgen.schema.generation import GenerationOptions

    store = generator.model.store
    rows = []
    for question in questions:
        [made] = generator.generate(tenant, user, "text", question.question,
                                    GenerationOptions(max_new_tokens=max_new_tokens))
        answer = store.artifacts.artifact_blob(tenant, made.key)[0].decode("utf-8", "replace").strip()
        rows.append({"category": question.category, "question": question.question, "gold": question.answer,
                     "answer": answer, "f1": locomo_f1(answer, question.answer, question.category)})
    return rows


def f1_table(rows: Sequence[dict[str, Any]], categories: Sequence[int]) -> dict[str, float | None]:
    """Mean F1 per category ("1".."4") and over all of them (None where no question)."""
    def mean(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 4) if values else None

    table = {str(c): mean([r["f1"] for r in rows if r["category"] == c]) for c in categories}
    table["all"] = mean([r["f1"] for r in rows])
    return table
