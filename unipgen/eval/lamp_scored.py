"""Label and rating tasks of the LaMP-style harness, answered by score, as the product answers a
labels / scale request: `core.label_plan` plans each question (prompts with retrieved examples,
the user's prior and neighbours, leave-one-out rows to fit the mix), the text backend's `score`
ranks the allowed answers (one prompt pass, the answers batched over its cache, the user's LoRA
where the method has one), and `label_plan.finish` decides.

| method | model prompt | user model |
|---|---|---|
| ``nonpersonal`` | the question | none |
| ``rag`` | the nearest `rag_k` profile items as examples, then the question | none |
| ``lora`` | the question, through the user's LoRA | none |
| ``usermodel`` | no model | prior + neighbours, mix fitted per user |
| ``rag_usermodel`` | as ``rag`` | prior + neighbours + model, mix fitted per user |
| ``lora_usermodel`` | as ``lora``, through a LoRA fitted without the items the mix is fitted on | as above |

Every answer is one of the allowed answers: nothing is left unparsed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from unipgen.core import label_plan
from unipgen.core.label_plan import HistoryItem, Plan, Question
from unipgen.core.labels import LabelConfig
from unipgen.eval.lamp_tasks import NOW, Entry, Settings, Task

#: method -> (mode, examples in the prompt, which adapter: None, "full" or "heldout").
SCORED_METHODS: dict[str, tuple[label_plan.Mode, bool, str | None]] = {
    "nonpersonal": ("model", False, None), "rag": ("model", True, None), "lora": ("model", False, "full"),
    "usermodel": ("user", False, None), "rag_usermodel": ("mixed", True, None),
    "lora_usermodel": ("mixed", False, "heldout")}
RATING_ANSWERS = ("1", "2", "3", "4", "5")


@dataclass
class Scored:
    """Each method's answers, how each answer was chosen, and the seconds each method took."""

    answers: dict[str, list[str]]
    decisions: dict[str, list[dict[str, Any]]]
    seconds: dict[str, float]


def answers_of(task: Task) -> tuple[str, ...]:
    """The allowed answers: the task's labels, or the ratings 1-5."""
    return task.labels if task.kind == "classification" else RATING_ANSWERS


def answer_index(task: Task, answer: str | None) -> int | None:
    """Where a profile answer falls among `answers_of(task)` (a rating to the nearest whole star)."""
    if answer is None:
        return None
    if task.kind == "rating":
        try:
            return min(max(int(float(answer) + 0.5), 1), 5) - 1
        except ValueError:
            return None
    label = " ".join(answer.lower().split())
    return task.labels.index(label) if label in task.labels else None


def history(task: Task, user: str, vectors: dict[str, Any]) -> list[HistoryItem]:
    """The user's profile as history items, oldest first: consecutive entries of one text are one item."""
    items: list[HistoryItem] = []
    for entry in task.profiles[user]:
        index = answer_index(task, entry.answer)
        found = (index,) if index is not None else ()
        if items and items[-1].text == entry.text:
            items[-1] = replace(items[-1], answers=tuple(dict.fromkeys(items[-1].answers + found)))
        else:
            items.append(HistoryItem(f"{user}:{len(items)}", entry.text, found, vectors.get(entry.text)))
    return [item for item in items if item.answers]


def plan_settings(task: Task, settings: Settings, method: str) -> label_plan.Settings:
    mode, examples, _ = SCORED_METHODS[method]
    return label_plan.Settings(mode=mode, examples_k=settings.rag_k if examples else 0,
                               example_format=settings.rag_format, answer_name=task.answer_name,
                               item_name=task.item_name,
                               config=LabelConfig(fit_items=settings.fit_items))


def answer_scored(task: Task, settings: Settings, methods: Sequence[str], backend: Any, encode: Callable[..., Any],
                  adapters: dict[str, dict[str, Any]], fetch: Callable[[str], bytes],
                  log: Callable[[str], None]) -> Scored:
    """Every method's answers to every question (see the module docstring)."""
    texts = sorted({e.text for entries in task.profiles.values() for e in entries} |
                   {q.subject for q in task.questions})
    vectors = dict(zip(texts, encode(texts), strict=True)) if texts else {}
    histories = {user: history(task, user, vectors) for user in task.profiles}
    answers = list(answers_of(task))
    scores: dict[tuple[str | None, str], list[float]] = {}  # (adapter sha, prompt) -> answer log-probs
    result = Scored({}, {}, {})
    for method in methods:
        start = time.perf_counter()
        which = SCORED_METHODS[method][2]
        plans = [label_plan.plan(histories[q.user], Question(q.subject, q.prompt, vectors.get(q.subject)), answers,
                                 task.kind == "rating", task.prompt_for, plan_settings(task, settings, method))
                 for q in task.questions]
        refs = [adapters[which][q.user] if which else None for q in task.questions]
        score_all(backend, plans, refs, answers, task.kind == "rating", scores, fetch, method, log)
        decisions = [label_plan.finish(p, [scores[(_sha(ref), prompt)] for prompt in p.prompts])
                     for p, ref in zip(plans, refs, strict=True)]
        result.answers[method] = [answers[d.answer] for d in decisions]
        result.decisions[method] = [_how(d.meta(answers), p) for d, p in zip(decisions, plans, strict=True)]
        result.seconds[method] = time.perf_counter() - start
    return result


def _how(meta: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """How one answer was chosen, as the harness keeps it (the answers' probabilities left out: the
    likeliest is the answer, and the sources' shares say where it came from)."""
    return {key: value for key, value in meta.items() if key != "probabilities"} | {"examples": plan.examples}


def score_all(backend: Any, plans: Sequence[Plan], refs: Sequence[Any], answers: Sequence[str], ordinal: bool,
              scores: dict[tuple[str | None, str], list[float]], fetch: Callable[[str], bytes], label: str,
              log: Callable[[str], None]) -> None:
    """Score every prompt of `plans` not yet in `scores` (each with its plan's adapter), a batch at a time."""
    todo = list(dict.fromkeys((ref, prompt) for p, ref in zip(plans, refs, strict=True) for prompt in p.prompts
                              if (_sha(ref), prompt) not in scores))
    for start in range(0, len(todo), backend.max_batch):
        chunk = todo[start: start + backend.max_batch]
        outputs = backend.score([scored_request(prompt, answers, ordinal, ref) for ref, prompt in chunk], fetch)
        for (ref, prompt), rows in zip(chunk, outputs, strict=True):
            scores[(_sha(ref), prompt)] = rows[0].meta["answer_logprobs"]
        log(f"  {label}: {min(start + len(chunk), len(todo))}/{len(todo)} prompts scored")


def _sha(ref: Any) -> str | None:
    return ref.blob_sha if ref is not None else None


def scored_request(prompt: str, answers: Sequence[str], ordinal: bool, adapter: Any = None) -> Any:
    """A labels (or 1-5 scale) GenerationRequest for `prompt`, through `adapter` (an AdapterRef) if given."""
    from unipgen.schema.context import Conditioning, PersonalizationPlan, UserContext
    from unipgen.schema.generation import GenerationOptions, GenerationRequest

    refs = [adapter] if adapter is not None else []
    context = UserContext(tenant="bench", user="u", modality="text", instruction=prompt, profile={},
                          conditioning=Conditioning(adapters=refs), built_at=NOW)
    plan = PersonalizationPlan(modality="text", method="lora" if refs else "prompt_only", prompt=prompt,
                               reasons=["bench"], adapters=[r.key for r in refs], budget_tokens=2048, used_tokens=0)
    options = GenerationOptions(scale=(1, len(answers))) if ordinal else GenerationOptions(labels=tuple(answers))
    return GenerationRequest(context=context, plan=plan, options=options)


def heldout_entries(task: Task, user: str, settings: Settings) -> list[Entry]:
    """The profile entries a ``lora_usermodel`` adapter trains on: all but the items its mix is fitted on."""
    items = history(task, user, {})
    held = {item.text for item in items[-settings.fit_items:]}
    return [e for e in task.profiles[user] if e.text not in held]


def sources(decisions: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per method, the mean share of the answers' probability that came from each source."""
    found = {}
    for method, rows in decisions.items():
        names = rows[0]["sources"] if rows else {}
        found[method] = {name: round(sum(r["sources"][name] for r in rows) / len(rows), 3) for name in names}
    return found


__all__ = ["RATING_ANSWERS", "SCORED_METHODS", "Scored", "answer_index", "answer_scored", "answers_of",
           "heldout_entries", "history", "plan_settings", "score_all", "scored_request", "sources"]
