"""`unipgen bench NAME`: the benchmarks of `unipgen.bench`, one table row per command.

Every bench command has the same body: call the benchmark's runner with the command's options
and print its result. The table says, per command, which runner (`module:function`, imported
when the command runs), its help and its options beyond `--json`; `_command` turns a row into
the function typer reads (its signature carries the options).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from unipgen.cli.common import Json, emit


@dataclass(frozen=True)
class Option:
    """One option of a bench command: `--NAME` (underscores become dashes), passed to the runner
    as `keyword` (default: the same name)."""

    name: str
    annotation: Any  # Annotated[type, typer.Option(...)]
    default: Any
    keyword: str | None = None


@dataclass(frozen=True)
class Bench:
    runner: str  # "module:function"
    help: str
    options: tuple[Option, ...]


def _quick(help: str) -> Option:
    return Option("quick", Annotated[bool, typer.Option(help=help)], False)


def _data(help: str) -> Option:
    return Option("data", Annotated[Path | None, typer.Option(help=help)], None, "data_dir")


BENCHMARKS = {
    "memory": Bench("unipgen.bench.memory:run",
                    "Ingest, per-user search, global ANN search and forget, each beside a baseline.",
                    (_quick("Smaller sizes (minutes, not tens of minutes)."),)),
    "usermodel": Bench(
        "unipgen.bench.usermodel:run",
        "Preference-model ranking vs popularity (leave-last-out), speaker and face checks.",
        (_quick("Fewer users and tuning rounds (about a minute)."),
         _data("MovieLens-layout folder (ratings.csv, movies.csv)."),
         Option("voice_data", Annotated[Path | None, typer.Option(help="One sub-folder of audio per speaker.")],
                None, "voice_dir"),
         Option("face_data", Annotated[Path | None, typer.Option(help="One sub-folder of photos per person.")],
                None, "face_dir"))),
    "generation": Bench("unipgen.bench.generation:run",
                        "unipgen's generate vs direct transformers/diffusers calls; adapter switching; mixed batches.",
                        (_quick("Fewer runs, tiny models only."),)),
    "media": Bench("unipgen.bench.media:run",
                   "Seconds per video and per 3D object on the tiny models, vs the diffusers pipelines called directly.",
                   (_quick("Fewer runs (under a minute)."),)),
    "voice": Bench("unipgen.bench.voice:run",
                   "Speech in the user's voice: speaker-encoder cosine to a held-out recording, matched vs default voice.",
                   (_data("One sub-folder of FLAC/WAV files per speaker; default "
                          "../shared/data/librispeech-test-other-mini."),
                    _quick("2 speakers, a small search (a minute or two)."))),
    "bestof": Bench("unipgen.bench.bestof:run",
                    "Best-of-8 vs a single sample: the user model's score of the kept output, per modality.",
                    (_quick("2 users, 1 prompt per modality (a few minutes)."),
                     Option("profile", Annotated[str, typer.Option(
                         help="Model profile: tiny, cpu, gpu, offline or a .toml path.")], "tiny"))),
    "orchestrator": Bench("unipgen.bench.orchestrator:run",
                          "Jobs on Ray vs raw Ray calls; micro-batching across users; adapter cache hit rate; "
                          "inline jobs/s.",
                          (_quick("Fewer repeats and requests (a minute or two)."),)),
    "service": Bench("unipgen.bench.service:run",
                     "HTTP service on loopback vs the same calls in-process: event ingest, bulk ingest, context "
                     "(req/s, p99).",
                     (_quick("Fewer rounds and requests (about half a minute)."),)),
    "scale": Bench("unipgen.bench.scale:run",
                   "The scale path (PostgreSQL, S3 blobs, 1/2/4 processes) beside the embedded default: ingest "
                   "events/s, context p99, jobs/s.",
                   (_quick("Fewer events, contexts and jobs (a few minutes)."),
                    Option("postgres", Annotated[str | None, typer.Option(
                        help="PostgreSQL admin URL (a fresh database is made); default UNIPGEN_TEST_POSTGRES_URL.")],
                           None),
                    Option("blob_url", Annotated[str | None, typer.Option(
                        help="An s3:// URL (credentials from AWS_*); default: moto's S3 server on loopback.")], None),
                    Option("ray_address", Annotated[str | None, typer.Option(
                        help="Run the workers' jobs on this Ray cluster (default: inline in each worker).")],
                           None))),
    "hardening": Bench("unipgen.bench.hardening:run",
                       "The adversarial upload corpus against a live service: time to refusal, peak RSS increase, "
                       "survival.",
                       (_quick("Without the 50 MB and 100 MB bodies (about a minute)."),)),
    "preference": Bench("unipgen.bench.preference:run",
                        "Feedback on real outputs → DPO adapter → held-out win rate of the simulated user's "
                        "preference.",
                        (_quick("Tiny random LM, fewer instructions (a smoke run)."),)),
    "recommend": Bench("unipgen.bench.recommend:run",
                       "Recommend p50/p99 over a 100k-item catalog beside numpy brute force; fit and refit time and\n"
                       "    peak memory at 100k users x 50k items x 10M events.",
                       (_quick("20k items and a 10k x 5k x 200k fit (a smoke run)."),)),
    "protect": Bench(
        "unipgen.bench.protect:run",
        "Photos protected from fine-tuning (ASPL): a DreamBooth-LoRA's loss on the clean photos when trained on "
        "clean, noised or protected ones; PSNR.",
        (_data("DreamBench-layout folder; default ../shared/data/dreambench."),
         Option("profile", Annotated[str, typer.Option(
             help="Model profile whose image model is protected against and attacks: tiny, cpu, gpu or a .toml.")],
                "tiny"),
         Option("subjects", Annotated[int | None, typer.Option(help="How many subjects (default 4).")], None),
         _quick("1 subject, 2 photos, 1 round, a 2-step attack and pre-training (a harness check)."))),
    "textpersonalization": Bench(
        "unipgen.bench.textpersonalization:run",
        "LaMP-style tagging with SmolLM2: no history vs retrieved history (RAG) vs a per-user LoRA.",
        (_quick("Tiny random LM, a handful of questions (harness check)."),
         _data("MovieLens folder (movies.csv, tags.csv) or a LaMP task (questions.json + outputs.json)."))),
}


def run_bench(runner: str, **options: Any) -> dict[str, Any]:
    """The result of `runner` ("module:function") called with `options`, on one BLAS/OpenMP
    thread unless the environment says otherwise (set before the benchmark loads numpy)."""
    import importlib
    import os

    from unipgen.eval.environment import THREAD_VARIABLES

    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    module, _, function = runner.partition(":")
    return getattr(importlib.import_module(module), function)(**options)


def _command(name: str, bench: Bench) -> Callable[..., None]:
    """The command function of one table row: typer reads its options from `__signature__`."""

    def command(**values: Any) -> None:
        options = {option.keyword or option.name: values[option.name] for option in bench.options}
        results = run_bench(bench.runner, **options)
        emit(results, values["as_json"], json.dumps(results, indent=2))

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter(o.name, keyword, annotation=o.annotation, default=o.default)
                  for o in bench.options]
    parameters.append(inspect.Parameter("as_json", keyword, annotation=Json, default=False))
    command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    command.__doc__ = bench.help
    command.__name__ = command.__qualname__ = f"bench_{name}"
    return command


def _bench_app() -> typer.Typer:
    app = typer.Typer(help="Run benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)
    for name, bench in BENCHMARKS.items():
        app.command(name)(_command(name, bench))
    return app


bench_app = _bench_app()
