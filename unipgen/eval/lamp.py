"""`unipgen eval lamp-style`: does a user's history make a real LM answer like that user?

The LaMP protocol (Salemi et al., 2023) on three kinds of data, each a `Task` of questions and
per-user profiles (earlier items with the user's answers):

* a MovieLens folder (the default: the shared ``movielens-latest-small``): a LaMP-2-style tagging
  task. Labels are the K most frequent tags (lower-cased); each selected user's latest labelled
  movies are the questions, the earlier (movie, tag) pairs the profile;
* a folder in the LaMP layout (`unipgen.memory.lamp.load_lamp`): each question is its own user;
* a JSONL file of users with past items and one held-out target (`load_user_jsonl`).

Label and rating tasks are answered by score, as the product answers a labels / scale request
(`unipgen.eval.lamp_scored`: the allowed answers ranked by the model's likelihood, alone or
mixed with the user's own prior and their nearest items' answers): ``nonpersonal``, ``rag``,
``lora``, ``usermodel``, ``rag_usermodel``, ``lora_usermodel``. Generation tasks are sampled
(greedy): ``nonpersonal`` (the question alone), ``rag`` (the user's top-k profile entries by BM25
written in LaMP's way) and ``lora`` (a per-user LoRA fitted with `train_text_lora` on the profile
as prompt -> answer chat turns). Baselines without a model: the most frequent profile answer
overall (``majority``), each user's own (``user_majority``) and, for ratings, their mean
(``user_mean``). Scores and intervals: `unipgen.eval.lamp_scores`; the report: `lamp_report`.
The tiny random LM (``quick``) checks the harness only.
"""

from __future__ import annotations

import copy
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from unipgen.core.label_plan import EXAMPLE_FORMATS
from unipgen.errors import InvalidInputError
from unipgen.eval import lamp_scored
from unipgen.eval.environment import machine, shared_data_dir, shown_data_path
from unipgen.eval.lamp_report import HEADLINE, METRICS, write_lamp_report
from unipgen.eval.lamp_scores import (
    BASELINES_BY_KIND,
    SCORERS,
    baselines,
    correct,
    examples,
    f1_macro,
    gain,
    map_to_label,
    parse_rating,
    rouge1_f1,
    score_all,
    score_classification,
    score_generation,
    score_rating,
    scores_by_user,
)
from unipgen.eval.lamp_tasks import (
    METHODS,
    NOW,
    QUICK,
    SAMPLED_METHODS,
    Entry,
    Question,
    Settings,
    Task,
    load_task,
)
from unipgen.tiny import MEASURE, MECHANICAL, is_random

if TYPE_CHECKING:
    from unipgen.core.label_plan import ExampleFormat
    from unipgen.schema.context import AdapterRef, Method
    from unipgen.schema.generation import GenerationRequest

MAX_NEW_TOKENS = {"classification": 16, "rating": 4, "generation": 32}

def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- entry points --------------------------------------------------------------------------------


def run_lamp(data: Path | str | None = None, *, profile: str | None = None, quick: bool = False,
             methods: Sequence[str] = METHODS, out: Path | str | None = None, max_questions: int | None = None,
             template: str | None = None, seed: int = 0, threads: int | None = 1, rag_k: int | None = None,
             rag_format: str | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the protocol on `data` and, with `out`, write lamp.json / .md / .html and lamp-metrics.png there.

    `data`: a MovieLens folder (tags.csv), a LaMP task folder, a ``.jsonl`` file, or None (the
    shared MovieLens). `profile`: whose text model answers (its ``transformers-lm`` ref; default
    "tiny" when `quick`, else "offline" = SmolLM2-135M-Instruct). `quick`: a handful of questions,
    3 users, 2 LoRA steps (a harness check). `max_questions`: LaMP / JSONL questions to use.
    `template`: a JSONL task's question prompt ({text}: the target's text; {labels}: the label set).
    `threads`: torch threads (1: two threads on two shared cores run far slower; None: leave as is).
    `rag_k`, `rag_format`: how many retrieved examples a ``rag`` prompt shows, and how they are
    written (``pairs`` or ``lamp``, `unipgen.core.label_plan.with_examples`).
    """
    started = time.perf_counter()
    wanted = list(methods)
    if not wanted or any(m not in METHODS for m in wanted) or len(set(wanted)) != len(wanted):
        raise InvalidInputError(f"methods must be distinct names among {list(METHODS)}, got {wanted}")
    name = profile or ("tiny" if quick else "offline")
    settings = replace(QUICK if quick else Settings(), ref=_profile_ref(name), encoder=_encoder_ref(name), seed=seed)
    if max_questions is not None:
        settings = replace(settings, max_questions=max_questions)
    if rag_k is not None:
        settings = replace(settings, rag_k=rag_k)
    if rag_format is not None:
        if rag_format not in EXAMPLE_FORMATS:
            raise InvalidInputError(f"rag_format must be one of {list(EXAMPLE_FORMATS)}, got {rag_format!r}")
        settings = replace(settings, rag_format=cast("ExampleFormat", rag_format))
    if threads:
        import torch

        torch.set_num_threads(threads)
    directory = Path(data) if data is not None else None
    result = {"benchmark": "lamp-style", "profile": name,
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


def _encoder_ref(name: str) -> str | None:
    """The profile's sentence-transformers text encoder (dense half of the retrieval), if it has one."""
    from unipgen.schema.profiles import load_profile

    spec = load_profile(name).encoders.get("text")
    return spec.ref if spec is not None and spec.type == "sentence-transformers" else None


def evaluate(data: Path | None, settings: Settings, quick: bool = False, methods: Sequence[str] = METHODS,
             template: str | None = None, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Every figure of one run (the `unipgen bench textpersonalization` result)."""
    path = data if data is not None else shared_data_dir() / "movielens-latest-small"
    task = load_task(path, settings, template)
    run = [m for m in methods if task.kind != "generation" or m in SAMPLED_METHODS]
    log(f"{task.name}: {len(task.questions)} questions, {len(task.profiles)} users")
    answers, seconds, decisions = answer_all(task, settings, run, log)
    results: dict[str, Any] = {"machine": machine("torch", "transformers", "peft"), "quick": quick,
                               "data": shown_data_path(path), "task": task.name, "methods": run,
                               "baselines": list(BASELINES_BY_KIND[task.kind]),
                               "kind": task.kind, "n_questions": len(task.questions), "n_users": len(task.profiles),
                               "labels": list(task.labels), **task.notes}
    if len(run) < len(methods):
        results["methods_skipped"] = {m: "scored methods apply to label and rating tasks" for m in methods
                                      if m not in run}
    results |= score_all(task, answers, run)
    results |= {f"seconds_{name}": round(value, 1) for name, value in seconds.items()}
    scored = task.kind != "generation"
    results["settings"] = settings.__dict__ | {
        "retrieval": "unipgen.core.retrieval.hybrid_search: BM25 (bm25s)" + (
            f" + dense ({settings.encoder})" if scored and settings.encoder else ", no query vector"),
        "decoding": "scored: the allowed answers ranked by likelihood" if scored else "greedy"}
    if scored:
        results["scores_by_user"] = scores_by_user(task, answers | baselines(task))
        results["sources"] = lamp_scored.sources({m: d for m, d in decisions.items() if d and d[0]["sources"]})
    results["answers"] = examples(task, answers)
    for method, rows in decisions.items():
        for row, decision in zip(results["answers"], rows, strict=True):
            row[f"{method}_how"] = decision
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


def answer_all(task: Task, settings: Settings, methods: Sequence[str] = METHODS, log: Callable[[str], None] = _stderr
               ) -> tuple[dict[str, list[str]], dict[str, float], dict[str, list[dict[str, Any]]]]:
    """Answers of each of `methods` to every question, the seconds each took, and for scored
    methods how each answer was chosen."""
    from unipgen.modalities.text import TransformersTextBackend

    backend = TransformersTextBackend(ref=settings.ref, temperature=0.0, max_batch=settings.batch,
                                      max_adapters=max(2 * len(task.profiles), 1),
                                      adapter_cache=tempfile.mkdtemp(prefix="unipgen-tp-adapters-"))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    backend.setup()
    seconds["model_load"] = time.perf_counter() - start
    adapters, blobs = lora_adapters(task, backend, settings, methods, seconds, log)
    if task.kind == "generation":
        return answer_sampled(task, settings, methods, backend, adapters, blobs, seconds, log), seconds, {}
    encode = _encoder(settings.encoder)
    scored = lamp_scored.answer_scored(task, settings, methods, backend, encode, adapters, blobs.__getitem__, log)
    seconds |= scored.seconds
    for name in ("lora", "lora_usermodel"):
        if name in seconds:
            seconds[name] += seconds.get(f"{name}_training", 0.0)
    return scored.answers, seconds, scored.decisions


def _encoder(ref: str | None) -> Callable[[list[str]], Any]:
    """Texts -> vectors by the profile's text encoder; without one, no vectors (BM25 alone)."""
    if ref is None:
        return lambda texts: [None] * len(texts)
    from unipgen.core.encoders.text import SentenceTransformerEncoder

    encoder = SentenceTransformerEncoder(ref)
    return lambda texts: list(encoder.encode(texts))


def lora_adapters(task: Task, backend: Any, settings: Settings, methods: Sequence[str], seconds: dict[str, float],
                  log: Callable[[str], None]) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """The per-user adapters `methods` need: "full" (the latest profile entries, for ``lora``) and
    "heldout" (all but the items a mix is fitted on, for ``lora_usermodel``), with their blobs."""
    adapters: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes] = {}
    for name, which, entries in (("lora", "full", None),
                                 ("lora_usermodel", "heldout", lamp_scored.heldout_entries)):
        if name in methods:
            start = time.perf_counter()
            adapters[which], found = train_adapters(task, backend, settings, log, entries)
            blobs |= found
            seconds[f"{name}_training"] = time.perf_counter() - start
    return adapters, blobs


def answer_sampled(task: Task, settings: Settings, methods: Sequence[str], backend: Any,
                   adapters: dict[str, dict[str, Any]], blobs: dict[str, bytes], seconds: dict[str, float],
                   log: Callable[[str], None]) -> dict[str, list[str]]:
    """A generation task's answers, greedy: the question, with retrieved entries (rag), through the LoRA."""
    tokens = MAX_NEW_TOKENS[task.kind]
    answers: dict[str, list[str]] = {}
    for method in methods:
        start = time.perf_counter()
        if method == "lora":
            requests = [request(q.prompt, tokens, adapters["full"][q.user]) for q in task.questions]
        elif method == "rag":
            requests = [request(rag_prompt(task, q, retrieve(task, q, settings.rag_k)), tokens)
                        for q in task.questions]
        else:
            requests = [request(q.prompt, tokens) for q in task.questions]
        answers[method] = generate(backend, requests, method, blobs.__getitem__, log)
        seconds[method] = time.perf_counter() - start + seconds.get(f"{method}_training", 0.0)
    return answers


def generate(backend: Any, requests: list[Any], label: str, fetch: Callable[[str], bytes] | None = None,
             log: Callable[[str], None] = _stderr) -> list[str]:
    """The first output of each request, a batch at a time, with progress through `log`."""
    out: list[str] = []
    for start in range(0, len(requests), backend.max_batch):
        chunk = requests[start: start + backend.max_batch]
        out += [rows[0].data.decode() for rows in backend.generate(chunk, fetch or _no_blobs)]
        log(f"  {label}: {len(out)}/{len(requests)}")
    return out


def train_adapters(task: Task, backend: Any, settings: Settings, log: Callable[[str], None] = _stderr,
                   entries_of: Callable[[Task, str, Settings], list[Entry]] | None = None
                   ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One LoRA per user, fitted on a float32 copy of the served base model (same weights, fast to load),
    on the user's latest profile entries (`entries_of`: which entries; a user with none gets no adapter)."""
    from unipgen.modalities.text_training import train_text_lora
    from unipgen.schema.context import AdapterRef

    adapters: dict[str, AdapterRef | None] = {}
    blobs: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="unipgen-tp-base-") as base:
        save_base(backend, Path(base))
        for number, user in enumerate(task.profiles, 1):
            entries = entries_of(task, user, settings) if entries_of else task.profiles[user]
            texts = training_texts(task, entries, backend.tokenizer, settings.lora_steps)
            if not texts:
                adapters[user] = None
                continue
            trained = train_text_lora(base, texts, steps=settings.lora_steps, rank=settings.lora_rank,
                                      learning_rate=settings.lora_learning_rate, seed=settings.seed)
            sha = hashlib.sha256(trained.data).hexdigest()
            blobs[sha] = trained.data
            adapters[user] = AdapterRef(key=f"user-{user}-lora-{sha[:8]}", method="lora", blob_sha=sha)
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




def _no_blobs(sha: str) -> bytes:
    raise AssertionError(f"unexpected fetch of {sha}")


__all__ = ["HEADLINE", "MAX_NEW_TOKENS", "METHODS", "METRICS", "QUICK", "SCORERS", "Settings", "Task", "answer_all",
           "baselines", "correct", "evaluate", "examples", "f1_macro", "gain", "generate", "load_task", "map_to_label",
           "parse_rating", "rag_prompt", "request", "retrieve", "rouge1_f1", "run_lamp", "save_base", "score_all",
           "score_classification", "score_generation", "score_rating", "scores_by_user", "train_adapters",
           "training_texts", "write_lamp_report"]
