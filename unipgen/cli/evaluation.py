"""`unipgen eval`: the evaluation harnesses of `unipgen.eval`, each printing its JSON result and,
with `--out`, writing a report."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from unipgen.cli.common import Json, emit

eval_app = typer.Typer(help="Evaluation harnesses: standard protocols, JSON results and reports.", no_args_is_help=True)


@eval_app.command("dreambench")
def eval_dreambench(
    data: Annotated[Path | None, typer.Option(help="A DreamBench-layout folder; default ../shared/data/dreambench.")] = None,
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu, gpu or a .toml path.")] = "tiny",
    method: Annotated[list[str] | None, typer.Option(help="ip-adapter, lora or textual-inversion (repeatable).")] = None,
    quick: Annotated[bool, typer.Option(help="2 subjects, 2 prompts, 1 image each (a harness check).")] = False,
    out: Annotated[Path | None, typer.Option(help="Report folder (JSON, Markdown, HTML, plots).")] = None,
    as_json: Json = False,
) -> None:
    """The DreamBooth protocol: personalize per subject, generate per prompt, score DINO-I, CLIP-I, CLIP-T."""
    from unipgen.eval.dreambench import run_dreambench

    result = run_dreambench(data, profile=profile, methods=method or None, quick=quick, out=out,
                            log=None if as_json else (lambda line: typer.echo(line, err=True)))
    emit(result, as_json, json.dumps(result, indent=2))


EvalData = Annotated[Path | None, typer.Option("--data", help="A folder of the harness's layout; default: its "
                                                             "copy in ../shared/data (UNIPGEN_SHARED_DATA).")]


EvalOut = Annotated[Path | None, typer.Option(help="Report folder (JSON, Markdown, HTML, plots).")]


EvalQuick = Annotated[bool, typer.Option(help="A small subset: a harness check, not the figures.")]


EvalProfile = Annotated[str | None, typer.Option(help="Measure this model profile's encoder (default: the packaged one "
                                                      "every shipped profile but gpu names).")]


#: Harnesses that share their options (--data, --profile, --quick, --out, --json): name →
#: (module of unipgen.eval, its run function, what `--help` says).
STANDARD_HARNESSES = {
    "movielens": ("movielens", "run_movielens", "Next-item ranking, leave-last-out: NDCG@k and HR@k of the user "
                  "model vs popularity, EASE, item-kNN and SASRec."),
    "voice": ("identity", "run_voice", "Speaker similarity: same- vs different-speaker cosines of the voice "
              "encoder vs MFCCs."),
    "faces": ("identity", "run_faces", "Face re-identification, leave-one-out: the face encoder vs raw pixels."),
    "simulator": ("simulator", "run_simulator", "The user simulator on MovieLens: how often it prefers the higher "
                  "of two later ratings, vs popularity and random."),
}


def _add_standard(name: str, module: str, function: str, doc: str) -> None:
    def command(data: EvalData = None, profile: EvalProfile = None, quick: EvalQuick = False, out: EvalOut = None,
                as_json: Json = False) -> None:
        run = getattr(importlib.import_module(f"unipgen.eval.{module}"), function)
        _run_harness(run, as_json, data=data, profile=profile, quick=quick, out=out)

    command.__doc__ = doc
    eval_app.command(name)(command)


def _run_harness(run: Any, as_json: bool, **options: Any) -> None:
    result = run(**options, log=None if as_json else (lambda line: typer.echo(line, err=True)))
    emit(result, as_json, json.dumps(result, indent=2, default=str))


@eval_app.command("lamp-style")
def eval_lamp_style(
    data: Annotated[Path | None, typer.Option("--data", help="A LaMP task folder, a JSONL of users, or a MovieLens "
                                                             "folder (tags as a LaMP-2-style task; the default).")] = None,
    profile: Annotated[str | None, typer.Option(help="Its text backend answers; default offline (tiny with --quick).")] = None,
    method: Annotated[list[str] | None, typer.Option(help=(
        "nonpersonal, rag, lora, usermodel, rag_usermodel or lora_usermodel (repeatable; default all; generation "
        "tasks run the first three)."))] = None,
    rag_k: Annotated[int | None, typer.Option(min=0, max=32, help="Retrieved examples in a rag prompt (default 4).")]
    = None,
    rag_format: Annotated[str | None, typer.Option(help="How examples are written: pairs (default) or lamp.")] = None,
    quick: EvalQuick = False, out: EvalOut = None, as_json: Json = False,
) -> None:
    """Personalized text: answers without history, with retrieved examples (RAG), with a per-user LoRA, and
    each mixed with the user's own answers (label and rating tasks are scored, never parsed)."""
    from unipgen.eval.lamp import METHODS, run_lamp

    _run_harness(run_lamp, as_json, data=data, profile=profile, methods=method or METHODS, quick=quick, out=out,
                 rag_k=rag_k, rag_format=rag_format)


@eval_app.command("locomo")
def eval_locomo(
    data: Annotated[Path | None, typer.Option("--data", help="A LoCoMo-layout JSON file; default "
                                                             "../shared/data/locomo-dev/locomo-dev.json.")] = None,
    answers: Annotated[int, typer.Option(min=0, help="Questions per conversation the profile's text model "
                                                     "answers, scored with LoCoMo's token F1 (0: none).")] = 0,
    profile: Annotated[str, typer.Option(help="With --answers: the profile whose text model answers.")] = "offline",
    quick: EvalQuick = False, out: EvalOut = None, as_json: Json = False,
) -> None:
    """Evidence recall@5/@10 per LoCoMo category: session-aware retrieval vs plain BM25 and dense search."""
    from unipgen.eval.locomo import run_locomo

    _run_harness(run_locomo, as_json, data=data, quick=quick, out=out, answers=answers, profile=profile)


def _add_standard_harnesses() -> None:
    for name, spec in STANDARD_HARNESSES.items():
        _add_standard(name, *spec)


_add_standard_harnesses()
