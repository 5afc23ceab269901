"""The `unipgen` command line. With `--json`, a command prints exactly one JSON object.

Heavy modules (the store, numpy, faiss) are imported inside the commands so that
`unipgen --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from unipgen.errors import UnipgenError

if TYPE_CHECKING:
    from unipgen.memory import MemoryStore

app = typer.Typer(help="unipgen: unified personalized generation.", no_args_is_help=True)
ingest_app = typer.Typer(help="Load data sets into the store.", no_args_is_help=True)
users_app = typer.Typer(help="Inspect, export, import and forget users.", no_args_is_help=True)
bench_app = typer.Typer(help="Run benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)
jobs_app = typer.Typer(help="Inspect and cancel generation and training jobs.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke the service's API keys.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluation harnesses: standard protocols, JSON results and reports.", no_args_is_help=True)
events_app = typer.Typer(help="List and delete a user's behavior events.", no_args_is_help=True)
app.add_typer(ingest_app, name="ingest")
app.add_typer(users_app, name="users")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")
app.add_typer(keys_app, name="keys")
app.add_typer(eval_app, name="eval")
app.add_typer(events_app, name="events")

_MODALITY_ALIASES = {"music": "audio"}  # the CLI says music; the schema's modality is audio
_MODALITY_NAMES = ("text", "image", "video", "music (= audio)", "speech", "3d")
_MODALITY_HELP = "text, image, video, music (or audio), speech or 3d."

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
_state: dict[str, Any] = {}


@app.callback()
def _root(home: Annotated[Path | None, typer.Option(help="Data directory (else UNIPGEN_HOME).")] = None) -> None:
    _state["home"] = home


def _settings() -> Any:
    from unipgen.settings import Settings

    return Settings(home=_state["home"]) if _state.get("home") else Settings()


def _store() -> MemoryStore:
    from unipgen.memory import MemoryStore

    return MemoryStore.open(_settings())


def _executor(model: Any, name: str | None, progress: bool = False) -> Any:
    """The executor `name` (default: `UNIPGEN_EXECUTOR`) over `model`'s store."""
    from unipgen.orchestrator import make_executor

    return make_executor(model, _settings(), name, progress=progress)


def _emit(payload: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload, default=str, indent=None if as_json else 2) if as_json else text)


@ingest_app.command("movielens")
def ingest_movielens(
    directory: Path, users: Annotated[int | None, typer.Option(help="Only the first N users.")] = None,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Movies as items (title + genres), ratings as `rate` events with their timestamps."""
    from unipgen.memory.loaders import load_movielens

    with _store() as store:
        report = load_movielens(store, tenant, directory, users=users)
    payload = {"tenant": tenant, **report.__dict__}
    _emit(payload, as_json, f"{report.items_added} items, {report.users_added} users "
          f"({report.users_skipped} already there), {report.events_added} events, "
          f"{report.documents_added} tag documents loaded into {tenant!r}")


@ingest_app.command("dreambench")
def ingest_dreambench(directory: Path, tenant: Tenant = "default", as_json: Json = False) -> None:
    """One user per DreamBench subject: the subject with its class noun and reference photos."""
    from unipgen.memory.loaders import load_dreambench

    with _store() as store:
        report = load_dreambench(store, tenant, directory)
    _emit({"tenant": tenant, **report.__dict__}, as_json,
          f"{report.users_added} subjects ({report.users_skipped} already there), {report.images_added} photos "
          f"loaded into {tenant!r}")


@users_app.command("list")
def users_list(tenant: Tenant = "default", as_json: Json = False) -> None:
    with _store() as store:
        users = store.list_users(tenant)
    _emit({"tenant": tenant, "users": users}, as_json, "\n".join(users))


@users_app.command("show")
def users_show(user: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    with _store() as store:
        summary = store.user_summary(tenant, user)
    _emit(summary.model_dump(mode="json"), as_json, _summary_text(summary.model_dump(mode="json")))


def _summary_text(s: dict[str, Any]) -> str:
    lines = [f"user {s['user']} (tenant {s['tenant']}), since {s['created_at']}"]
    lines += [f"  {name}: {count}" for name, count in s["counts"].items()]
    if s["first_event_at"]:
        lines.append(f"  behaviors from {s['first_event_at']} to {s['last_event_at']}")
    lines += [f"  profile {k} = {v!r}" for k, v in s["profile"].items()]
    lines += ["  top items:"] + [f"    - {t}" for t in s["top_items"]] if s["top_items"] else []
    return "\n".join(lines)


@users_app.command("export")
def users_export(
    user: str, output: Annotated[Path, typer.Option("-o", "--output", help="Zip file to write.")],
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    with _store() as store:
        counts = store.export_user(tenant, user, output)
    _emit({"tenant": tenant, "user": user, "file": str(output), "counts": counts}, as_json,
          f"exported {user!r} to {output}")


@users_app.command("import")
def users_import(
    archive: Path, tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None, as_json: Json = False,
) -> None:
    with _store() as store:
        tenant_key, user = store.import_user(archive, tenant=tenant)
    _emit({"tenant": tenant_key, "user": user}, as_json, f"imported {user!r} into {tenant_key!r}")


@users_app.command("forget")
def users_forget(user: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """Delete the user and everything derived from their data; print the residue (empty when clean)."""
    with _store() as store:
        report = store.forget_user(tenant, user)
    text = f"forgot {user!r}: deleted {report.deleted}\nresidue: {report.residue or 'none'}"
    _emit(report.model_dump(), as_json, text)
    if report.residue:
        raise typer.Exit(1)


@events_app.command("list")
def events_list(user: str, tenant: Tenant = "default",
                limit: Annotated[int | None, typer.Option(help="Only the last N events.")] = None,
                as_json: Json = False) -> None:
    """The user's events, oldest first, with the id `events delete --id` takes."""
    with _store() as store:
        events = [e.model_dump(mode="json") for e in store.events(tenant, user, limit=limit)]
    _emit({"tenant": tenant, "user": user, "events": events}, as_json,
          "\n".join(f"{e['id']}  {e['ts']}  {e['type']} {e['item']}" + (f" {e['value']}" if e["value"] is not None
                                                                         else "") for e in events))


@events_app.command("delete")
def events_delete(
    user: str, tenant: Tenant = "default",
    event_id: Annotated[list[int] | None, typer.Option("--id", help="An event id (repeatable).")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Only events of this type.")] = None,
    item: Annotated[str | None, typer.Option(help="Only events on this catalog item.")] = None,
    since: Annotated[str | None, typer.Option(help="Only events at or after this time (ISO 8601 with a zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Only events before this time (ISO 8601 with a zone).")] = None,
    as_json: Json = False,
) -> None:
    """Delete the user's events (by --id, or matching every filter; all with none) and every
    output derived from the user's history; print the residue (empty when clean)."""
    with _store() as store:
        report = store.delete_events(tenant, user, ids=event_id or None, type=event_type, item=item,
                                     since=_when(since, "--since"), until=_when(until, "--until"))
    _emit(report.model_dump(), as_json, f"deleted {report.deleted or 'nothing'}\nresidue: {report.residue or 'none'}")
    if report.residue:
        raise typer.Exit(1)


def _when(value: str | None, option: str) -> Any:
    from datetime import datetime

    from unipgen.errors import InvalidInputError

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{option} must be an ISO 8601 time, not {value!r}") from None


@app.command("check")
def check(as_json: Json = False) -> None:
    """List stored rows that break the data rules (ids no URL reaches, non-finite numbers),
    written before the rules were enforced. Exits 1 when there are any."""
    with _store() as store:
        violations = store.check_data()
    rows = [v.__dict__ for v in violations]
    _emit({"violations": rows}, as_json, "\n".join(map(str, violations)) or "no stored row breaks the data rules")
    if violations:
        raise typer.Exit(1)


def _run_bench(name: str, **options: Any) -> dict[str, Any]:
    """`unipgen.bench.<name>.run(**options)`, on one BLAS/OpenMP thread unless the environment says otherwise."""
    import importlib
    import os

    from unipgen.eval.environment import THREAD_VARIABLES

    for variable in THREAD_VARIABLES:  # before the benchmark loads numpy
        os.environ.setdefault(variable, "1")
    return importlib.import_module(f"unipgen.bench.{name}").run(**options)


@bench_app.command("memory")
def bench_memory(
    quick: Annotated[bool, typer.Option(help="Smaller sizes (minutes, not tens of minutes).")] = False,
    as_json: Json = False,
) -> None:
    """Ingest, per-user search, global ANN search and forget, each beside a baseline."""
    results = _run_bench("memory", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("usermodel")
def bench_usermodel(
    quick: Annotated[bool, typer.Option(help="Fewer users and tuning rounds (about a minute).")] = False,
    data: Annotated[Path | None, typer.Option(help="MovieLens-layout folder (ratings.csv, movies.csv).")] = None,
    voice_data: Annotated[Path | None, typer.Option(help="One sub-folder of audio per speaker.")] = None,
    face_data: Annotated[Path | None, typer.Option(help="One sub-folder of photos per person.")] = None,
    as_json: Json = False,
) -> None:
    """Preference-model ranking vs popularity (leave-last-out), speaker and face checks."""
    results = _run_bench("usermodel", quick=quick, data_dir=data, voice_dir=voice_data, face_dir=face_data)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("generation")
def bench_generation(
    quick: Annotated[bool, typer.Option(help="Fewer runs, tiny models only.")] = False,
    as_json: Json = False,
) -> None:
    """unipgen's generate vs direct transformers/diffusers calls; adapter switching; mixed batches."""
    results = _run_bench("generation", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("media")
def bench_media(
    quick: Annotated[bool, typer.Option(help="Fewer runs (under a minute).")] = False,
    as_json: Json = False,
) -> None:
    """Seconds per video and per 3D object on the tiny models, vs the diffusers pipelines called directly."""
    results = _run_bench("media", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("voice")
def bench_voice(
    data: Annotated[Path | None, typer.Option(help="One sub-folder of FLAC/WAV files per speaker; default "
                                                   "../shared/data/librispeech-test-other-mini.")] = None,
    quick: Annotated[bool, typer.Option(help="2 speakers, a small search (a minute or two).")] = False,
    as_json: Json = False,
) -> None:
    """Speech in the user's voice: speaker-encoder cosine to a held-out recording, matched vs default voice."""
    results = _run_bench("voice", data_dir=data, quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("bestof")
def bench_bestof(
    quick: Annotated[bool, typer.Option(help="2 users, 1 prompt per modality (a few minutes).")] = False,
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu, gpu, offline or a .toml path.")] = "tiny",
    as_json: Json = False,
) -> None:
    """Best-of-8 vs a single sample: the user model's score of the kept output, per modality."""
    results = _run_bench("bestof", quick=quick, profile=profile)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("orchestrator")
def bench_orchestrator(
    quick: Annotated[bool, typer.Option(help="Fewer repeats and requests (a minute or two).")] = False,
    as_json: Json = False,
) -> None:
    """Jobs on Ray vs raw Ray calls; micro-batching across users; adapter cache hit rate; inline jobs/s."""
    results = _run_bench("orchestrator", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("service")
def bench_service(
    quick: Annotated[bool, typer.Option(help="Fewer rounds and requests (about half a minute).")] = False,
    as_json: Json = False,
) -> None:
    """HTTP service on loopback vs the same calls in-process: event ingest, bulk ingest, context (req/s, p99)."""
    results = _run_bench("service", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("hardening")
def bench_hardening(
    quick: Annotated[bool, typer.Option(help="Without the 50 MB and 100 MB bodies (about a minute).")] = False,
    as_json: Json = False,
) -> None:
    """The adversarial upload corpus against a live service: time to refusal, peak RSS increase, survival."""
    results = _run_bench("hardening", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("preference")
def bench_preference(
    quick: Annotated[bool, typer.Option(help="Tiny random LM, fewer instructions (a smoke run).")] = False,
    as_json: Json = False,
) -> None:
    """Feedback on real outputs → DPO adapter → held-out win rate of the simulated user's preference."""
    results = _run_bench("preference", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("recommend")
def bench_recommend(
    quick: Annotated[bool, typer.Option(help="20k items and a 10k x 5k x 200k fit (a smoke run).")] = False,
    as_json: Json = False,
) -> None:
    """Recommend p50/p99 over a 100k-item catalog beside numpy brute force; fit and refit time and
    peak memory at 100k users x 50k items x 10M events."""
    results = _run_bench("recommend", quick=quick)
    _emit(results, as_json, json.dumps(results, indent=2))


@bench_app.command("textpersonalization")
def bench_textpersonalization(
    quick: Annotated[bool, typer.Option(help="Tiny random LM, a handful of questions (harness check).")] = False,
    data: Annotated[Path | None, typer.Option(help="MovieLens folder (movies.csv, tags.csv) or a LaMP task "
                                                   "(questions.json + outputs.json).")] = None,
    as_json: Json = False,
) -> None:
    """LaMP-style tagging with SmolLM2: no history vs retrieved history (RAG) vs a per-user LoRA."""
    results = _run_bench("textpersonalization", quick=quick, data_dir=data)
    _emit(results, as_json, json.dumps(results, indent=2))


@app.command()
def context(
    user: str,
    modality: Annotated[str, typer.Option("--modality", "-m", help=_MODALITY_HELP)] = "text",
    instruction: Annotated[str, typer.Option("--instruction", "-i", help="What to generate.")] = "",
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu, gpu or a .toml path.")] = "tiny",
    vectors: Annotated[bool, typer.Option(help="Include the raw preference vectors.")] = False,
    diversity: Annotated[float, typer.Option(min=0.0, max=1.0, help="0: most similar items; up to 1: less of the same.")] = 0.0,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Build USER's context for a request and the personalization plan chosen for it."""
    from unipgen.core.context import ContextConfig

    modality = _check_request(modality, instruction)
    with _store() as store:
        model = _user_model(store, profile, tenant, user, ContextConfig(include_vectors=vectors, diversity=diversity))
        built = model.context(tenant, user, modality, instruction)  # type: ignore[arg-type]
        plan = model.plan(built)
    payload = {"context": built.model_dump(mode="json"), "plan": plan.model_dump(mode="json")}
    _emit(payload, as_json, _context_text(payload))


Executor = Annotated[str | None, typer.Option(
    help="Who runs the job: inline (this process) or ray (a local or UNIPGEN_RAY_ADDRESS cluster); "
         "default UNIPGEN_EXECUTOR, else inline.")]
JobId = Annotated[str | None, typer.Option("--job-id", help="Idempotency key: the same id returns the same job.")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Run the job now, or only queue it for `unipgen worker`.")]


@app.command()
def recommend(
    user: str,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many items.")] = 10,
    diversity: Annotated[float, typer.Option(min=0.0, max=1.0, help="0: best first; up to 1: less of the same "
                                                                       "(maximal marginal relevance).")] = 0.0,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Also items USER already acted on.")] = False,
    kind: Annotated[str | None, typer.Option(help="Only items whose meta has this 'kind'.")] = None,
    profile: Annotated[str, typer.Option(help="Model profile (its text encoder, while the tenant has no fit).")] = "tiny",
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Items USER is likeliest to want next, with the events behind each (`unipgen fit` first for the
    behavior space; before a fit, the items' text vectors rank)."""
    with _store() as store:
        model = _user_model(store, profile, tenant, user)
        found = model.recommend(tenant, user, k=k, diversity=diversity, include_seen=include_seen, kind=kind)
    payload = found.model_dump(mode="json")
    where = {"behavior": f"behavior space, fit {found.fit_generation}" + (" (stale)" if found.stale else ""),
             "text": "text space (no fit yet: run `unipgen fit`)", "popularity": "popularity (no usable events)"}
    lines = [f"{len(found.items)} items for {user} from the {where[found.space]}:"]
    for n, item in enumerate(found.items, 1):
        because = "; ".join(r.text for r in item.reasons)
        lines.append(f"{n:3}. {item.text}  [{item.score:.3f}]" + (f"\n       because: {because}" if because else ""))
    _emit(payload, as_json, "\n".join(lines))


@app.command()
def fit(
    setting: Annotated[list[str] | None, typer.Option("--set", help="A fit setting to change, KEY=VALUE (JSON "
                                                                    "value), e.g. --set dim=128; see docs/usermodel.md.")] = None,
    history: Annotated[bool, typer.Option("--history", help="List the tenant's fits instead of fitting.")] = False,
    profile: Annotated[str, typer.Option(help="Model profile whose text encoder embeds items that lack a vector.")] = "tiny",
    executor: Executor = None, job_id: JobId = None, wait: Wait = True,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Fit the tenant's behavior space from all its events, as a job (the space recommendations rank in)."""
    from unipgen.core.usermodel import UserModel
    from unipgen.errors import error_from
    from unipgen.schema.jobs import FitSpec

    with _store() as store:
        if history:
            fits = [f.model_dump(mode="json", exclude={"stats": {"popular"}}) for f in store.fits(tenant)]
            text = "\n".join(f"fit {f['generation']}: {f['status']}, {f['stats'].get('users')} users, "
                             f"{f['stats'].get('events')} events, {f['created_at']}" for f in fits) or "no fit yet"
            _emit({"tenant": tenant, "fits": fits}, as_json, text)
            return
        spec = FitSpec(config=_fit_settings(setting or []), reason="on demand (unipgen fit)")
        if not wait:
            job = store.submit_job(tenant, None, spec.model_dump(mode="json"), key=job_id)
        else:
            runner = _executor(UserModel(store, profile, cache_dir=_cache_dir()), executor)
            try:
                job = runner.wait(tenant, runner.submit(tenant, None, spec, key=job_id).key)
            finally:
                runner.shutdown()
            if job.status == "failed":
                raise error_from(job.error or {})
        current = store.current_fit(tenant) if job.status == "succeeded" else None
    payload = {"tenant": tenant, "job": job.key, "status": job.status,
               "fit": current.model_dump(mode="json", exclude={"stats": {"popular"}}) if current else None}
    text = f"job {job.key}: {job.status}"
    if current is not None:
        stats = current.stats
        text = (f"fit {current.generation}: {stats['users']} users, {stats['events']} events, {stats['items']} items "
                f"({stats['items_with_events']} with events), {stats['factor_dim']} factors + content = "
                f"{stats['dim']}-d, {stats['seconds']} s")
    _emit(payload, as_json, text)


def _fit_settings(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs as a dict (values read as JSON, else kept as strings)."""
    from unipgen.errors import InvalidInputError

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set dim=128")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings




@app.command()
def generate(
    user: str,
    modality: Annotated[str, typer.Option("--modality", "-m", help=_MODALITY_HELP)] = "text",
    instruction: Annotated[str, typer.Option("--instruction", "-i", help="What to generate.")] = "",
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu, gpu, offline or a .toml path.")] = "tiny",
    seed: Annotated[int, typer.Option(help="Same seed, same output.")] = 0,
    num_outputs: Annotated[int, typer.Option("--num-outputs", "-n", min=1, max=16)] = 1,
    melody: Annotated[str | None, typer.Option(help="Music: key of one of USER's voice recordings whose tune "
                                                    "the music follows (needs a melody backend).")] = None,
    best_of: Annotated[int, typer.Option("--best-of", min=1, max=16, help=(
        "Generate N candidates per output (seeds SEED, SEED+1, ...) and keep the one the user model "
        "scores highest."))] = 1,
    keep_all: Annotated[bool, typer.Option("--keep-all", help="With --best-of: keep every candidate, best first.")]
    = False,
    executor: Executor = None, job_id: JobId = None, wait: Wait = True,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Generate a personalized output for USER as a job; prints the job and its artifacts' files."""
    from pydantic import ValidationError

    from unipgen.errors import InvalidInputError
    from unipgen.schema.generation import GenerationOptions
    from unipgen.schema.jobs import GenerateSpec

    modality = _check_request(modality, instruction)
    try:
        options = GenerationOptions(seed=seed, num_outputs=num_outputs, melody=melody, best_of=best_of,
                                    best_of_keep="all" if keep_all else "best")
    except ValidationError as exc:  # options that do not go together (too many candidates)
        raise InvalidInputError("; ".join(error["msg"] for error in exc.errors())) from None
    spec = GenerateSpec(modality=modality, instruction=instruction, options=options)  # type: ignore[arg-type]
    with _store() as store:
        job = _run_job(store, profile, executor, tenant, user, spec, job_id, wait)
        artifacts = [_artifact_file(store, tenant, key) for key in (job.result or {}).get("artifacts", [])]
    payload = {"tenant": tenant, "user": user, "job": job.key, "status": job.status,
               "plan": (job.result or {}).get("plan"), "artifacts": artifacts}
    text = "\n".join(f"{a['key']} ({a['media_type']}): {a['path']}" for a in artifacts) or f"job {job.key}: {job.status}"
    _emit(payload, as_json, text)


def _run_job(store: MemoryStore, profile: str, executor: str, tenant: str, user: str, spec: Any, job_id: str | None,
             wait: bool, progress: bool = False) -> Any:
    """Submit a job (idempotent by `job_id`) and, with `wait`, run it; a failed job raises its error."""
    from unipgen.core.usermodel import UserModel
    from unipgen.errors import error_from

    store.user_summary(tenant, user)  # unknown tenant or user: fail before loading models
    if not wait:
        return store.submit_job(tenant, user, spec.model_dump(mode="json"), key=job_id)
    model = UserModel(store, profile, cache_dir=_cache_dir())  # the job embeds what its context reads
    runner = _executor(model, executor, progress)
    try:
        job = runner.wait(tenant, runner.submit(tenant, user, spec, key=job_id).key)
    finally:
        runner.shutdown()
    if job.status == "failed":
        raise error_from(job.error or {})
    return job


def _artifact_file(store: MemoryStore, tenant: str, key: str) -> dict[str, Any]:
    record = store.artifact(tenant, key)
    return {"key": key, "media_type": record.media_type, "blob_sha": record.blob_sha,
            "path": store.blobs.local_path(record.blob_sha) if record.blob_sha else None}


@app.command()
def train(
    user: str,
    method: Annotated[str, typer.Option(
        help="text-lora, dpo (text, from feedback), lora (DreamBooth-LoRA) or textual-inversion.")] = "text-lora",
    subject: Annotated[str | None, typer.Option(help="The subject to learn (image methods).")] = None,
    steps: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    seed: Annotated[int, typer.Option()] = 0,
    profile: Annotated[str, typer.Option(help="Model profile whose base model is adapted.")] = "tiny",
    executor: Executor = None, job_id: JobId = None, wait: Wait = True,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Train USER's personal adapter as a job; prints the adapter artifact and its loss curve."""
    from unipgen.errors import InvalidInputError
    from unipgen.schema.jobs import TRAINING_METHODS, TrainSpec

    if method not in TRAINING_METHODS:
        raise InvalidInputError(f"unknown training method {method!r}; one of {list(TRAINING_METHODS)}")
    spec = TrainSpec(method=method, subject=subject, steps=steps, seed=seed)
    with _store() as store:
        job = _run_job(store, profile, executor, tenant, user, spec, job_id, wait, progress=not as_json)
    result = job.result or {}
    losses = result.get("losses", [])
    payload = {"tenant": tenant, "user": user, "job": job.key, "status": job.status,
               "artifact": (result.get("artifacts") or [None])[0], "method": method, "losses": losses}
    summary = f"{losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps" if losses else job.status
    _emit(payload, as_json, f"trained {method} {payload['artifact']}: loss {summary}")


def _job_payload(job: Any) -> dict[str, Any]:
    return job.model_dump(mode="json")


@jobs_app.command("list")
def jobs_list(
    user: Annotated[str | None, typer.Option(help="Only this user's jobs.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """The newest jobs, with their status and progress."""
    with _store() as store:
        found = store.jobs(tenant, user=user, status=status, limit=limit)
    lines = [f"{j.key}  {j.kind:<8} {j.status:<9} {j.progress:4.0%}  "
             f"{'user ' + j.user if j.user is not None else 'the tenant'}  {j.created_at:%Y-%m-%d %H:%M:%S}"
             for j in found]
    _emit({"tenant": tenant, "jobs": [_job_payload(j) for j in found]}, as_json, "\n".join(lines) or "no jobs")


@jobs_app.command("show")
def jobs_show(key: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """One job: its request, status, attempts, result or error."""
    with _store() as store:
        job = store.job(tenant, key)
    _emit(_job_payload(job), as_json, json.dumps(_job_payload(job), indent=2))


@jobs_app.command("cancel")
def jobs_cancel(key: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """Cancel a queued job, or ask a running one to stop (it ends as cancelled)."""
    with _store() as store:
        job = store.cancel_job(tenant, key)
    _emit(_job_payload(job), as_json, f"job {key}: {job.status}" + (" (stop requested)" if job.cancel_requested else ""))


@app.command()
def worker(
    profile: Annotated[str, typer.Option(help="Model profile the worker loads.")] = "tiny",
    executor: Executor = None,
    once: Annotated[bool, typer.Option(help="Run what is queued now, then exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks at an empty queue.", min=0.05)] = 1.0,
    as_json: Json = False,
) -> None:
    """Run queued jobs (of every tenant) until stopped, or once with --once.

    With the Ray executor this process drives the queue and the work runs on the cluster's
    model actors; on a multi-node cluster run it where the database and blob store are reachable.
    """
    import time

    from unipgen.core.usermodel import UserModel

    ran: list[Any] = []
    with _store() as store:
        runner = _executor(UserModel(store, profile, cache_dir=_cache_dir()), executor)
        try:
            while True:
                done = runner.run_pending()
                ran += done
                for job in done:
                    if not as_json:
                        typer.echo(f"{job.key}: {job.status}")
                if once:
                    break
                time.sleep(poll)
        finally:
            runner.shutdown()
    _emit({"worker": runner.worker, "jobs": [_job_payload(j) for j in ran]}, as_json, f"ran {len(ran)} jobs")


@app.command()
def feedback(
    user: str,
    output: Annotated[str, typer.Argument(help="The output judged (its artifact id), or the one chosen.")],
    up: Annotated[bool, typer.Option("--up", help="Thumbs up.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Thumbs down.")] = False,
    over: Annotated[str | None, typer.Option(help="Pairwise: OUTPUT was chosen over this output.")] = None,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Record USER's judgement of a generated output; `train --method dpo` learns from them."""
    from unipgen.errors import InvalidInputError

    if up + down + (over is not None) != 1:
        raise InvalidInputError("give exactly one of --up, --down or --over OTHER_OUTPUT")
    kind = "pairwise" if over is not None else "thumbs_up" if up else "thumbs_down"
    with _store() as store:
        store.add_feedback(tenant, [{"user": user, "type": kind, "output": output, "rejected": over}])
    payload = {"tenant": tenant, "user": user, "type": kind, "output": output, "rejected": over}
    _emit(payload, as_json, f"recorded {kind} on {output}" + (f" over {over}" if over else ""))


def _check_request(modality: str, instruction: str) -> str:
    """The modality's canonical name ("music" is "audio"); refuses an unknown one or no instruction."""
    from unipgen.errors import InvalidInputError
    from unipgen.schema.context import MODALITIES

    modality = _MODALITY_ALIASES.get(modality, modality)
    if modality not in MODALITIES:
        raise InvalidInputError(f"unknown modality {modality!r}; expected one of {', '.join(_MODALITY_NAMES)}")
    if not instruction.strip():
        raise InvalidInputError("--instruction is empty: say what to generate (for speech: the words to say)")
    return modality


def _user_model(store: MemoryStore, profile: str, tenant: str, user: str, config: Any = None) -> Any:
    """The user model of `profile`, with the catalog and the user's documents embedded."""
    from unipgen.core.usermodel import UserModel

    model = UserModel(store, profile, config=config, cache_dir=_cache_dir())
    store.user_summary(tenant, user)  # unknown tenant or user: fail before loading models
    if missing := model.embed_catalog(tenant) + model.embed_documents(tenant, user):
        typer.echo(f"embedded {missing} catalog items and documents", err=True)
    return model


def _cache_dir() -> Path:
    from unipgen.settings import Settings

    home = _state.get("home") or Settings().home
    return Path(home) / "cache"


def _context_text(payload: dict[str, Any]) -> str:
    context, plan = payload["context"], payload["plan"]
    lines = [f"user {context['user']}, {context['modality']} request: {context['instruction']!r}"]
    for p in context["preferences"]:
        lines.append(f"  likes ({p['space']}, {p['events']} events, drift {p['drift']:.2f}): "
                     + ", ".join(k["text"] for k in p["positive_keywords"]))
        if p["negative_keywords"]:
            lines.append("  dislikes: " + ", ".join(k["text"] for k in p["negative_keywords"]))
    lines += ["  evidence:"] + [f"    - [{e['kind']}] {e['text']} ({e['score']:.4f})" for e in context["evidence"]]
    lines.append(f"  plan: {plan['method']} because {'; '.join(plan['reasons'])}")
    lines.append(f"  prompt: {plan['prompt']}")
    if plan["negative_prompt"]:
        lines.append(f"  negative prompt: {plan['negative_prompt']}")
    return "\n".join(lines)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (default: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu or gpu.")] = "tiny",
    run_jobs: Annotated[bool, typer.Option(help="Run queued jobs in this process (else: `unipgen worker`).")] = True,
) -> None:
    """Start the HTTP service (FastAPI + uvicorn) on the configured store and executor."""
    import uvicorn

    from unipgen.api import create_app

    uvicorn.run(create_app(_settings(), profile=profile, run_jobs=run_jobs), host=host, port=port)


@app.command()
def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    as_json: Json = False,
) -> None:
    """Delete data older than its retention period (`UNIPGEN_RETENTION_DAYS`, e.g.
    '{"face": 365, "voice": 365}'), with everything derived from it."""
    settings = _settings()
    with _store() as store:
        report = store.purge_expired(settings.retention_days, dry_run=dry_run)
    payload = {"dry_run": dry_run, "purged": report.purged, "derived": report.derived,
               "cutoffs": {k: v.isoformat() for k, v in report.cutoffs.items()}}
    verb = "would purge" if dry_run else "purged"
    summary = ", ".join(f"{n} {kind}" for kind, n in report.purged.items()) or "nothing (no retention configured)"
    _emit(payload, as_json, f"{verb} {summary}; {report.derived} derived artifacts")


@keys_app.command("create")
def keys_create(name: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """A new API key for the tenant (created if new). The key is printed once."""
    with _store() as store:
        store.ensure_tenant(tenant)
        created = store.create_api_key(tenant, name)
    _emit({"tenant": tenant, "prefix": created.record.prefix, "name": name, "key": created.key}, as_json,
          f"{created.key}\n(tenant {tenant!r}, key {created.record.prefix}: store it now, it is not shown again)")


@keys_app.command("list")
def keys_list(tenant: Tenant = "default", as_json: Json = False) -> None:
    with _store() as store:
        keys = store.list_api_keys(tenant)
    rows = [{"prefix": k.prefix, "name": k.name, "created_at": k.created_at.isoformat(),
             "revoked": k.revoked_at is not None} for k in keys]
    _emit({"tenant": tenant, "keys": rows}, as_json,
          "\n".join(f"{r['prefix']}  {r['name']}{'  (revoked)' if r['revoked'] else ''}" for r in rows))


@keys_app.command("revoke")
def keys_revoke(prefix: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    with _store() as store:
        record = store.revoke_api_key(tenant, prefix)
    _emit({"tenant": tenant, "prefix": prefix, "revoked_at": str(record.revoked_at)}, as_json,
          f"key {prefix} of {tenant!r} revoked")


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
    _emit(result, as_json, json.dumps(result, indent=2))


EvalData = Annotated[Path | None, typer.Option("--data", help="A folder of the harness's layout; default: its "
                                                             "copy in ../shared/data (UNIPGEN_SHARED_DATA).")]
EvalOut = Annotated[Path | None, typer.Option(help="Report folder (JSON, Markdown, HTML, plots).")]
EvalQuick = Annotated[bool, typer.Option(help="A small subset: a harness check, not the figures.")]
EvalProfile = Annotated[str | None, typer.Option(help="Measure this model profile's encoder (default: the packaged one "
                                                      "every shipped profile but gpu names).")]


def _run_harness(run: Any, as_json: bool, **options: Any) -> None:
    result = run(**options, log=None if as_json else (lambda line: typer.echo(line, err=True)))
    _emit(result, as_json, json.dumps(result, indent=2, default=str))


@eval_app.command("movielens")
def eval_movielens(data: EvalData = None, profile: EvalProfile = None, quick: EvalQuick = False, out: EvalOut = None,
                   as_json: Json = False) -> None:
    """Next-item ranking, leave-last-out: NDCG@k and HR@k of the user model vs popularity, EASE, item-kNN and SASRec."""
    from unipgen.eval.movielens import run_movielens

    _run_harness(run_movielens, as_json, data=data, profile=profile, quick=quick, out=out)


@eval_app.command("lamp-style")
def eval_lamp_style(
    data: Annotated[Path | None, typer.Option("--data", help="A LaMP task folder, a JSONL of users, or a MovieLens "
                                                             "folder (tags as a LaMP-2-style task; the default).")] = None,
    profile: Annotated[str | None, typer.Option(help="Its text backend answers; default offline (tiny with --quick).")] = None,
    method: Annotated[list[str] | None, typer.Option(help="nonpersonal, rag or lora (repeatable; default all).")] = None,
    quick: EvalQuick = False, out: EvalOut = None, as_json: Json = False,
) -> None:
    """Personalized text: answers without history, with retrieved history (RAG), with a per-user LoRA."""
    from unipgen.eval.lamp import METHODS, run_lamp

    _run_harness(run_lamp, as_json, data=data, profile=profile, methods=method or METHODS, quick=quick, out=out)


@eval_app.command("voice")
def eval_voice(data: EvalData = None, profile: EvalProfile = None, quick: EvalQuick = False, out: EvalOut = None,
               as_json: Json = False) -> None:
    """Speaker similarity: same- vs different-speaker cosines of the voice encoder vs MFCCs."""
    from unipgen.eval.identity import run_voice

    _run_harness(run_voice, as_json, data=data, profile=profile, quick=quick, out=out)


@eval_app.command("faces")
def eval_faces(data: EvalData = None, profile: EvalProfile = None, quick: EvalQuick = False, out: EvalOut = None,
               as_json: Json = False) -> None:
    """Face re-identification, leave-one-out: the face encoder vs raw pixels."""
    from unipgen.eval.identity import run_faces

    _run_harness(run_faces, as_json, data=data, profile=profile, quick=quick, out=out)


@app.command()
def demo(
    tenant: Tenant = "demo",
    report: Annotated[Path, typer.Option(help="Folder of the HTML report (index.html and its assets).")] = Path(
        "demo-report"),
) -> None:
    """The samples end to end: memory, a context, one output per modality, feedback, the report, forget."""
    from unipgen.demo import run_demo

    run_demo(_state.get("home"), tenant, report)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # without standalone mode, click returns typer.Exit's code
    except UnipgenError as exc:
        if "--json" in sys.argv[1:]:
            typer.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        else:
            typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
