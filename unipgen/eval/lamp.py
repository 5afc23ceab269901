"""`unipgen eval lamp-style`: does a user's history make a real LM answer like that user?

The LaMP protocol (Salemi et al., 2023) on three kinds of data, each a `Task` of questions and
per-user profiles (earlier items with the user's answers):

* a MovieLens folder (the default: the shared ``movielens-latest-small``): a LaMP-2-style tagging
  task. Labels are the K most frequent tags (lower-cased); each selected user's latest labelled
  movies are the questions, the earlier (movie, tag) pairs the profile;
* a folder in the LaMP layout (`unipgen.memory.lamp.load_lamp`): each question is its own user;
* a JSONL file of users with past items and one held-out target (`load_user_jsonl`).

Three ways to answer the same questions, one model, greedy decoding: ``nonpersonal`` (the question
alone), ``rag`` (the user's top-k profile entries by BM25 written into the prompt LaMP's way) and
``lora`` (a per-user LoRA fitted with `train_text_lora` on the profile as prompt -> answer chat
turns, served by `TransformersTextBackend`). Baselines without a model: the most frequent profile
answer overall (``majority``) and each user's own (``user_majority``).

Scores (`unipgen.eval.text_metrics`): label tasks by accuracy and macro F1 over the label set
(an answer maps to a label by exact match, else the longest label it contains; else it is wrong),
rating tasks by MAE / RMSE of the first digit 1-5 (no digit: the worst rating), generation tasks
by ROUGE-1 / ROUGE-L F1 and corpus BLEU. The tiny random LM (``quick``) checks the harness only.
"""

from __future__ import annotations

import copy
import hashlib
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError
from unipgen.eval import text_metrics
from unipgen.eval.environment import machine, shared_data_dir, shown_data_path
from unipgen.eval.lamp_tasks import (
    BASELINES,
    METHODS,
    NOW,
    QUICK,
    Entry,
    Question,
    Settings,
    Task,
    load_task,
)
from unipgen.tiny import MEASURE, MECHANICAL, is_random

if TYPE_CHECKING:
    from unipgen.schema.context import AdapterRef, Method
    from unipgen.schema.generation import GenerationRequest

MAX_NEW_TOKENS = {"classification": 16, "rating": 4, "generation": 32}
METRICS = {"classification": ("acc", "f1_macro", "rouge1", "unmapped"), "rating": ("mae", "rmse", "unparsed"),
           "generation": ("rouge1", "rougeL", "bleu")}
HEADLINE = {"classification": ("acc", "f1_macro"), "rating": ("mae", "rmse"), "generation": ("rouge1", "rougeL")}

def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- entry points --------------------------------------------------------------------------------


def run_lamp(data: Path | str | None = None, *, profile: str | None = None, quick: bool = False,
             methods: Sequence[str] = METHODS, out: Path | str | None = None, max_questions: int | None = None,
             template: str | None = None, seed: int = 0, threads: int | None = 1,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the protocol on `data` and, with `out`, write lamp.json / .md / .html and lamp-metrics.png there.

    `data`: a MovieLens folder (tags.csv), a LaMP task folder, a ``.jsonl`` file, or None (the
    shared MovieLens). `profile`: whose text model answers (its ``transformers-lm`` ref; default
    "tiny" when `quick`, else "offline" = SmolLM2-135M-Instruct). `quick`: a handful of questions,
    3 users, 2 LoRA steps (a harness check). `max_questions`: LaMP / JSONL questions to use.
    `template`: a JSONL task's question prompt ({text}: the target's text; {labels}: the label set).
    `threads`: torch threads (1: two threads on two shared cores run far slower; None: leave as is).
    """
    started = time.perf_counter()
    wanted = list(methods)
    if not wanted or any(m not in METHODS for m in wanted) or len(set(wanted)) != len(wanted):
        raise InvalidInputError(f"methods must be distinct names among {list(METHODS)}, got {wanted}")
    name = profile or ("tiny" if quick else "offline")
    settings = replace(QUICK if quick else Settings(), ref=_profile_ref(name), seed=seed)
    if max_questions is not None:
        settings = replace(settings, max_questions=max_questions)
    if threads:
        import torch

        torch.set_num_threads(threads)
    directory = Path(data) if data is not None else None
    result = {"benchmark": "lamp-style", "profile": name, "methods": wanted,
              **evaluate(directory, settings, quick, wanted, template, log or (lambda _line: None))}
    result["seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        result["report"] = write_lamp_report(Path(out), result)
    return result


def _profile_ref(name: str) -> str:
    from unipgen.schema.profiles import load_profile

    spec = load_profile(name).backends.get("text")
    if spec is None or spec.type != "transformers-lm" or not spec.ref:
        raise InvalidInputError(f"profile {name!r} has no transformers-lm text backend to evaluate")
    return spec.ref


def evaluate(data: Path | None, settings: Settings, quick: bool = False, methods: Sequence[str] = METHODS,
             template: str | None = None, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Every figure of one run (the `unipgen bench textpersonalization` result)."""
    path = data if data is not None else shared_data_dir() / "movielens-latest-small"
    task = load_task(path, settings, template)
    log(f"{task.name}: {len(task.questions)} questions, {len(task.profiles)} users")
    answers, seconds = answer_all(task, settings, methods, log)
    results: dict[str, Any] = {"machine": machine("torch", "transformers", "peft"), "quick": quick,
                               "data": shown_data_path(path), "task": task.name,
                               "kind": task.kind, "n_questions": len(task.questions), "n_users": len(task.profiles),
                               "labels": list(task.labels), **task.notes}
    results |= score_all(task, answers)
    results |= {f"seconds_{name}": round(value, 1) for name, value in seconds.items()}
    results["settings"] = settings.__dict__ | {"retrieval": "BM25 (bm25s) via unipgen.core.retrieval.hybrid_search, "
                                                            "no query vector", "decoding": "greedy"}
    if task.kind == "classification":
        results["acc_by_user"] = accuracy_by_user(task, answers | baselines(task))
    results["answers"] = examples(task, answers)
    # The figures of a random-weight LM's answers check the harness: `unipgen.tiny` says so once.
    results["score_kind"] = MECHANICAL if is_random(settings.ref) else MEASURE
    return results


# -- prompts -------------------------------------------------------------------------------------


def retrieve(task: Task, question: Question, k: int) -> list[Entry]:
    """The user's top-k profile entries for the question by BM25; the most recent fill the rest."""
    from unipgen.core.retrieval import Candidate, hybrid_search

    profile = task.profiles[question.user]
    candidates = [Candidate(kind="document", key=str(i), text=entry.text) for i, entry in enumerate(profile)]
    hits = [int(evidence.key) for evidence in hybrid_search(question.subject, None, candidates, k=k)]
    recent = [i for i in reversed(range(len(profile))) if i not in hits]
    return [profile[i] for i in (hits + recent)[:k]]


def rag_prompt(task: Task, question: Question, entries: Sequence[Entry]) -> str:
    """LaMP's retrieval-augmented prompt: the entries as `the tag for "..." is "..."`, then the question."""
    shown = [f'the {task.answer_name} for "{e.text}" is "{e.answer}"' if e.answer is not None else f'"{e.text}"'
             for e in entries]
    return f"{', and '.join(shown)}. {question.prompt}" if shown else question.prompt


def training_texts(task: Task, entries: Sequence[Entry], tokenizer: Any, steps: int) -> list[str]:
    """The user's profile as chat turns (question prompt -> the user's answer), the latest `steps` of them.

    `train_text_lora` appends EOS: the text is then exactly what the served model sees, plus its answer.
    """
    texts = []
    for entry in entries[-steps:]:
        prompt = task.prompt_for(entry.text)
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=False) if getattr(tokenizer, "chat_template", None) else prompt
        texts.append(text + (entry.answer if entry.answer is not None else ""))
    return texts


# -- answering -----------------------------------------------------------------------------------


def request(prompt: str, max_new_tokens: int, adapter: AdapterRef | None = None, seed: int = 0) -> GenerationRequest:
    """A GenerationRequest as the orchestrator builds it; `adapter` (an AdapterRef) makes it a LoRA request."""
    from unipgen.schema.context import Conditioning, PersonalizationPlan, UserContext
    from unipgen.schema.generation import GenerationOptions, GenerationRequest

    refs = [adapter] if adapter else []
    method: Method = "lora" if adapter else "prompt_only"
    context = UserContext(tenant="bench", user="u", modality="text", instruction=prompt, profile={},
                          conditioning=Conditioning(adapters=refs), built_at=NOW)
    plan = PersonalizationPlan(modality="text", method=method, prompt=prompt, reasons=["bench"],
                               adapters=[r.key for r in refs], budget_tokens=2048, used_tokens=0)
    return GenerationRequest(context=context, plan=plan,
                             options=GenerationOptions(seed=seed, max_new_tokens=max_new_tokens))


def answer_all(task: Task, settings: Settings, methods: Sequence[str] = METHODS,
               log: Callable[[str], None] = _stderr) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Answers of each of `methods` to every question, and the seconds each took."""
    from unipgen.modalities.text import TransformersTextBackend

    backend = TransformersTextBackend(ref=settings.ref, temperature=0.0, max_batch=settings.batch,
                                      max_adapters=max(len(task.profiles), 1),
                                      adapter_cache=tempfile.mkdtemp(prefix="unipgen-tp-adapters-"))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    backend.setup()
    seconds["model_load"] = time.perf_counter() - start
    tokens = MAX_NEW_TOKENS[task.kind]
    answers: dict[str, list[str]] = {}
    if "nonpersonal" in methods:
        start = time.perf_counter()
        answers["nonpersonal"] = generate(backend, [request(q.prompt, tokens) for q in task.questions], "nonpersonal",
                                          log=log)
        seconds["nonpersonal"] = time.perf_counter() - start
    if "rag" in methods:
        start = time.perf_counter()
        prompts = [rag_prompt(task, q, retrieve(task, q, settings.rag_k)) for q in task.questions]
        answers["rag"] = generate(backend, [request(p, tokens) for p in prompts], "rag", log=log)
        seconds["rag"] = time.perf_counter() - start
    if "lora" in methods:
        start = time.perf_counter()
        adapters, blobs = train_adapters(task, backend, settings, log)
        seconds["lora_training"] = time.perf_counter() - start
        start = time.perf_counter()
        lora_requests = [request(q.prompt, tokens, adapters[q.user]) for q in task.questions]
        answers["lora"] = generate(backend, lora_requests, "lora", blobs.__getitem__, log)
        seconds["lora_generation"] = time.perf_counter() - start
        seconds["lora"] = seconds["lora_training"] + seconds["lora_generation"]
    return answers, seconds


def generate(backend: Any, requests: list[Any], label: str, fetch: Callable[[str], bytes] | None = None,
             log: Callable[[str], None] = _stderr) -> list[str]:
    """The first output of each request, a batch at a time, with progress through `log`."""
    out: list[str] = []
    for start in range(0, len(requests), backend.max_batch):
        chunk = requests[start: start + backend.max_batch]
        out += [rows[0].data.decode() for rows in backend.generate(chunk, fetch or _no_blobs)]
        log(f"  {label}: {len(out)}/{len(requests)}")
    return out


def _no_blobs(sha: str) -> bytes:
    raise AssertionError(f"unexpected fetch of {sha}")


def train_adapters(task: Task, backend: Any, settings: Settings,
                   log: Callable[[str], None] = _stderr) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One LoRA per user, fitted on a float32 copy of the served base model (same weights, fast to load)."""
    from unipgen.modalities.text_training import train_text_lora
    from unipgen.schema.context import AdapterRef

    adapters, blobs = {}, {}
    with tempfile.TemporaryDirectory(prefix="unipgen-tp-base-") as base:
        save_base(backend, Path(base))
        for number, (user, entries) in enumerate(task.profiles.items(), 1):
            texts = training_texts(task, entries, backend.tokenizer, settings.lora_steps)
            trained = train_text_lora(base, texts, steps=settings.lora_steps, rank=settings.lora_rank,
                                      learning_rate=settings.lora_learning_rate, seed=settings.seed)
            sha = hashlib.sha256(trained.data).hexdigest()
            blobs[sha] = trained.data
            adapters[user] = AdapterRef(key=f"user-{user}-lora", method="lora", blob_sha=sha)
            log(f"  lora {number}/{len(task.profiles)}: user {user}, loss {trained.losses[0]:.2f} -> "
                f"{trained.losses[-1]:.2f}")
    return adapters, blobs


def save_base(backend: Any, directory: Path) -> None:
    """Save the backend's base model as a plain float32 folder (a GGUF-loaded model refuses to save itself)."""
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(backend.model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are already de-quantized to float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(backend.model.state_dict())
    plain.save_pretrained(directory)
    backend.tokenizer.save_pretrained(directory)


# -- scoring -------------------------------------------------------------------------------------


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


def _gold_rating(gold: str) -> float:
    try:
        return float(gold)
    except ValueError:
        return float(parse_rating(gold) or 0)


def score_classification(task: Task, answers: Sequence[str]) -> dict[str, float]:
    """Accuracy (any of the question's golds counts), macro F1 and ROUGE-1 (best gold) of one method."""
    labels = [map_to_label(a, task.labels) for a in answers]
    # With several accepted tags, a hit is scored against the tag hit, a miss against the first.
    golds = [p if p in q.golds else q.golds[0] for p, q in zip(labels, task.questions, strict=True)]
    return {"acc": text_metrics.accuracy(labels, golds), "f1_macro": f1_macro(labels, golds, task.labels),
            "rouge1": text_metrics.rouge1(list(answers), [list(q.golds) for q in task.questions]),
            "unmapped": sum(label is None for label in labels) / len(labels)}


def score_rating(task: Task, answers: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE; an answer with no rating counts as the worst one (LaMP's rule: 1 or 5, whichever is farther)."""
    predictions = [parse_rating(a) for a in answers]
    golds = [_gold_rating(q.golds[0]) for q in task.questions]
    filled = [float(p) if p is not None else (1.0 if abs(1 - g) > abs(5 - g) else 5.0)
              for p, g in zip(predictions, golds, strict=True)]
    return {"mae": text_metrics.mae(filled, golds), "rmse": text_metrics.rmse(filled, golds),
            "unparsed": sum(p is None for p in predictions) / len(predictions)}


def score_generation(task: Task, answers: Sequence[str]) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L F1 (mean over questions, 0-1) and corpus BLEU (sacrebleu, 0-100)."""
    golds = [list(q.golds) for q in task.questions]
    return text_metrics.rouge(list(answers), golds) | {"bleu": text_metrics.bleu(list(answers), golds)}


SCORERS = {"classification": score_classification, "rating": score_rating, "generation": score_generation}


def score_all(task: Task, answers: dict[str, list[str]]) -> dict[str, Any]:
    """`<metric>_<method>` for every method and the baselines that need no model; for a label
    task also the accuracy gains of rag and lora over nonpersonal and user_majority, with 95% CIs."""
    every = answers | baselines(task)
    scored = {method: SCORERS[task.kind](task, texts) for method, texts in every.items()}
    results: dict[str, Any] = {f"{metric}_{method}": round(value, 4) for method, metrics in scored.items()
               for metric, value in metrics.items()}
    if task.kind == "classification":
        results["acc_gain_ci95"] = {f"{method}_vs_{base}": accuracy_gain(task, every[method], every[base])
                                    for method in ("rag", "lora") for base in ("nonpersonal", "user_majority")
                                    if method in every and base in every}
    return results


def correct(task: Task, answers: Sequence[str]) -> list[bool]:
    """Per question: does the answer map to one of its gold labels."""
    return [map_to_label(a, task.labels) in q.golds for a, q in zip(answers, task.questions, strict=True)]


def accuracy_gain(task: Task, answers: Sequence[str], baseline: Sequence[str], resamples: int = 2000,
                  seed: int = 0) -> list[float]:
    """[gain, low, high]: accuracy of `answers` minus `baseline`'s, with a paired bootstrap 95% interval
    over questions (questions of one user are not independent: read it as a lower bound on the spread)."""
    import random

    diffs = [int(a) - int(b) for a, b in zip(correct(task, answers), correct(task, baseline), strict=True)]
    draw = random.Random(seed)
    means = sorted(sum(draw.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return [round(sum(diffs) / len(diffs), 4), round(low, 4), round(high, 4)]


def baselines(task: Task) -> dict[str, list[str]]:
    """Answers without a model: the most frequent answer of all profiles, and of the user's own."""
    if task.kind == "generation":
        return {}
    overall = Counter(e.answer for entries in task.profiles.values() for e in entries if e.answer)
    top = overall.most_common(1)[0][0] if overall else ""

    def own(user: str) -> str:
        counts = Counter(e.answer for e in task.profiles[user] if e.answer)
        return counts.most_common(1)[0][0] if counts else top

    return {"majority": [top] * len(task.questions), "user_majority": [own(q.user) for q in task.questions]}


def examples(task: Task, answers: dict[str, list[str]], count: int | None = None) -> list[dict[str, Any]]:
    """The questions (the first `count`; None: all) with every method's raw answer, to read what the model says."""
    return [{"question": q.id, "subject": q.subject, "golds": list(q.golds),
             **{method: texts[i] for method, texts in answers.items()}}
            for i, q in enumerate(task.questions[:count])]


def accuracy_by_user(task: Task, answers: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """user -> questions and accuracy of each method on that user's questions (is a gain one user's?)."""
    hits = {method: correct(task, texts) for method, texts in answers.items()}
    rows: dict[str, dict[str, Any]] = {}
    for user in task.profiles:
        mine = [i for i, q in enumerate(task.questions) if q.user == user]
        rows[user] = {"questions": len(mine), "profile": len(task.profiles[user])} | {
            method: round(sum(flags[i] for i in mine) / len(mine), 3) for method, flags in hits.items()}
    return rows


# -- the report ----------------------------------------------------------------------------------


def write_lamp_report(out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
    """`lamp.json`, `.md`, `.html` and the bar plot `lamp-metrics.png` (headline metrics per method) in `out_dir`."""
    from unipgen.eval import report
    from unipgen.eval.report import Heading, Image, Paragraph, Table

    kind = result["kind"]
    metrics = METRICS[kind]
    rows = [name for name in (*result["methods"], *BASELINES) if f"{HEADLINE[kind][0]}_{name}" in result]
    panel = report.BarPanel("lower is better" if kind == "rating" else "higher is better", list(HEADLINE[kind]),
                            {name: [result[f"{m}_{name}"] for m in HEADLINE[kind]] for name in rows})
    plot = report.bars_png(out_dir / "lamp-metrics.png", [panel],
                           title=f"{result['task']}: {result['n_questions']} questions, profile {result['profile']!r}")
    meaning = {"classification": "acc: share of answers naming a gold label; f1_macro: mean F1 over the label set; "
                                 "unmapped: share of answers naming no label.",
               "rating": "mae / rmse: error of the first digit 1-5 in stars (no digit: the worst rating); "
                         "unparsed: share with no digit.",
               "generation": "rouge1 / rougeL: ROUGE-1 / ROUGE-L F1 with the user's own text (0-1); "
                             "bleu: corpus BLEU (0-100)."}[kind]
    blocks: list[Any] = [Paragraph(
        f"{result['task']} from {result['data']}: {result['n_questions']} questions, {result['n_users']} users, "
        f"model {result['settings']['ref']} (profile {result['profile']!r}), greedy decoding; "
        f"{result['seconds']} s on {result['machine']['cpu']}."), Paragraph(meaning)]
    if result.get("score_kind") == MECHANICAL:
        blocks.append(Paragraph(f"Every figure here is a {MECHANICAL}: the answers come from a random-weight LM, so "
                                "these numbers check the harness and say nothing about the methods."))
    blocks += [Heading("Scores"),
               Table(["method", *metrics, "seconds"],
                     [[name, *(result.get(f"{m}_{name}") for m in metrics), result.get(f"seconds_{name}")]
                      for name in rows]),
               Image(plot.name, "Headline metrics per method (majority baselines need no model)")]
    if "acc_gain_ci95" in result:
        blocks += [Heading("Accuracy gains (paired bootstrap 95% interval)"),
                   Table(["comparison", "gain", "low", "high"],
                         [[name, *values] for name, values in result["acc_gain_ci95"].items()])]
    shown = result["answers"][:10]
    blocks += [Heading(f"Answers (first {len(shown)})"),
               Table(["question", "gold", *result["methods"]],
                     [[a["question"], _cell(", ".join(a["golds"])), *(_cell(a[m]) for m in result["methods"])]
                      for a in shown])]
    files = report.write_report(out_dir, "lamp", f"LaMP-style evaluation: {result['task']}", blocks,
                                result | {"report": {"plot": str(plot), **{k: str(out_dir / f"lamp.{e}") for k, e in
                                          (("json", "json"), ("markdown", "md"), ("html", "html"))}}})
    return {**files.as_dict(), "plot": str(plot)}


def _cell(text: str, width: int = 80) -> str:
    """An answer as one table cell: one line, no pipes (Markdown), at most `width` characters."""
    return " ".join(text.split()).replace("|", "/")[:width]
