"""Generation and its jobs: build a context (`context`), generate, train and protect photos as
jobs (`generate`, `train`, `protect`), record feedback (`feedback`), run queued jobs (`worker`) and inspect or cancel them
(`jobs`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from unipgen.cli.common import (
    MODALITY_HELP,
    POST_HELP,
    Executor,
    JobId,
    Json,
    Tenant,
    Wait,
    artifact_file,
    cache_dir,
    check_modalities,
    check_request,
    emit,
    make_runner,
    open_store,
    run_job,
    settings,
    user_model,
)

if TYPE_CHECKING:
    from unipgen.schema.jobs import TrainingMethod

jobs_app = typer.Typer(help="Inspect and cancel generation and training jobs.", no_args_is_help=True)


def context(
    ctx: typer.Context,
    user: str,
    modality: Annotated[str, typer.Option("--modality", "-m", help=MODALITY_HELP)] = "text",
    instruction: Annotated[str, typer.Option("--instruction", "-i", help="What to generate.")] = "",
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu, gpu or a .toml path.")] = "tiny",
    vectors: Annotated[bool, typer.Option(help="Include the raw preference vectors.")] = False,
    diversity: Annotated[float, typer.Option(min=0.0, max=1.0, help="0: most similar items; up to 1: less of the same.")] = 0.0,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Build USER's context for a request and the personalization plan chosen for it."""
    from unipgen.core.context import ContextConfig

    modality = check_request(modality, instruction)
    with open_store(ctx) as store:
        model = user_model(ctx, store, profile, tenant, user, ContextConfig(include_vectors=vectors, diversity=diversity))
        built = model.context(tenant, user, modality, instruction)
        plan = model.plan(built)
    payload = {"context": built.model_dump(mode="json"), "plan": plan.model_dump(mode="json")}
    emit(payload, as_json, _context_text(payload))


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


def generate(
    ctx: typer.Context,
    user: str,
    modality: Annotated[str, typer.Option("--modality", "-m", help=POST_HELP)] = "text",
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
    label: Annotated[list[str] | None, typer.Option("--label", help=(
        "Text: the answer is one of these labels (repeat the option), scored by the model and the user's own "
        "earlier labels, not sampled."))] = None,
    scale: Annotated[tuple[int, int] | None, typer.Option(help=(
        "Text: the answer is a rating from LOW to HIGH (e.g. --scale 1 5), scored with the user's own ratings."),
        metavar="LOW HIGH")] = None,
    executor: Executor = None, job_id: JobId = None, wait: Wait = True,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Generate a personalized output for USER as a job; prints the job and its artifacts' files
    (with --label or --scale: the answer, and how much of it came from the model and the user's history)."""
    from pydantic import ValidationError

    from unipgen.errors import InvalidInputError
    from unipgen.schema.generation import GenerationOptions
    from unipgen.schema.jobs import GenerateSpec

    modalities = check_modalities(modality, instruction)
    try:
        options = GenerationOptions(seed=seed, num_outputs=num_outputs, melody=melody, best_of=best_of,
                                    best_of_keep="all" if keep_all else "best", labels=tuple(label) if label else None,
                                    scale=scale)
        spec = GenerateSpec(modality=modalities, instruction=instruction, options=options)
    except ValidationError as exc:  # options that do not go together (too many candidates, best-of in a post)
        raise InvalidInputError("; ".join(error["msg"] for error in exc.errors())) from None
    with open_store(ctx) as store:
        job = run_job(ctx, store, profile, executor, tenant, user, spec, job_id, wait)
        artifacts = [artifact_file(store, tenant, key) for key in (job.result or {}).get("artifacts", [])]
    result = job.result or {}
    payload = {"tenant": tenant, "user": user, "job": job.key, "status": job.status,
               "plan": result.get("plan"), "artifacts": artifacts}
    if spec.is_post:  # one group: its id, each modality's plan, the caption and the consistency score
        payload |= {"group": result.get("group"), "modalities": list(spec.modalities), "plans": result.get("plans"),
                    "caption": result.get("caption"), "consistency": result.get("consistency"),
                    "score_kinds": result.get("score_kinds")}
    text = "\n".join(_artifact_line(a) for a in artifacts) or f"job {job.key}: {job.status}"
    emit(payload, as_json, text)


def _artifact_line(artifact: dict[str, Any]) -> str:
    line = f"{artifact['key']} ({artifact['media_type']}): {artifact['path']}"
    label = artifact.get("label")
    if label:
        shares = ", ".join(f"{name} {share:.2f}" for name, share in label["sources"].items())
        line += f"\n  answer: {label['answer']} (from {shares})"
    return line


def train(
    ctx: typer.Context,
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
    spec = TrainSpec(method=cast("TrainingMethod", method), subject=subject, steps=steps, seed=seed)  # checked above
    with open_store(ctx) as store:
        from unipgen.orchestrator.training import require_training_consent

        require_training_consent(store, tenant, user, method)  # also when only queued (--no-wait)
        job = run_job(ctx, store, profile, executor, tenant, user, spec, job_id, wait, progress=not as_json)
    result = job.result or {}
    losses = result.get("losses", [])
    payload = {"tenant": tenant, "user": user, "job": job.key, "status": job.status,
               "artifact": (result.get("artifacts") or [None])[0], "method": method, "losses": losses}
    summary = f"{losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps" if losses else job.status
    emit(payload, as_json, f"trained {method} {payload['artifact']}: loss {summary}")


def protect(
    ctx: typer.Context,
    user: str,
    subject: Annotated[str | None, typer.Option(help="The subject whose photos to protect.")] = None,
    face: Annotated[str | None, typer.Option(help="Or: the face photo to protect.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    profile: Annotated[str, typer.Option(help="Model profile whose image model the photos are protected against.")]
    = "tiny",
    executor: Executor = None, job_id: JobId = None, wait: Wait = True,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Protect USER's photos of a subject (or a face photo) from fine-tuning (Anti-DreamBooth, ASPL)
    as a job: the protected copies are stored beside the originals, and downloads serve them.
    The budget is the settings' (UNIPGEN_PROTECT_EPSILON, _ROUNDS...)."""
    from pydantic import ValidationError

    from unipgen.errors import InvalidInputError
    from unipgen.orchestrator.protection import protect_spec

    try:
        spec = protect_spec(settings(ctx), subject=subject, face=face, seed=seed)
    except ValidationError as exc:
        raise InvalidInputError("; ".join(error["msg"] for error in exc.errors())) from None
    with open_store(ctx) as store:
        job = run_job(ctx, store, profile, executor, tenant, user, spec, job_id, wait)
        copies = [artifact_file(store, tenant, key) for key in (job.result or {}).get("artifacts", [])]
    result = job.result or {}
    payload = {"tenant": tenant, "user": user, "job": job.key, "status": job.status, "protects": result.get("protects"),
               "psnr": result.get("psnr", []), "artifacts": copies}
    text = "\n".join(f"{c['key']} (PSNR {p:.1f} dB): {c['path']}" for c, p in zip(copies, payload["psnr"]))
    emit(payload, as_json, text or f"job {job.key}: {job.status}")


def _job_payload(job: Any) -> dict[str, Any]:
    return job.model_dump(mode="json")


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="Only this user's jobs.")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """The newest jobs, with their status and progress."""
    with open_store(ctx) as store:
        found = store.jobs.jobs(tenant, user=user, status=status, limit=limit)
    lines = [f"{j.key}  {j.kind:<8} {j.status:<9} {j.progress:4.0%}  "
             f"{'user ' + j.user if j.user is not None else 'the tenant'}  {j.created_at:%Y-%m-%d %H:%M:%S}"
             for j in found]
    emit({"tenant": tenant, "jobs": [_job_payload(j) for j in found]}, as_json, "\n".join(lines) or "no jobs")


@jobs_app.command("show")
def jobs_show(ctx: typer.Context, key: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """One job: its request, status, attempts, result or error."""
    with open_store(ctx) as store:
        job = store.jobs.job(tenant, key)
    emit(_job_payload(job), as_json, json.dumps(_job_payload(job), indent=2))


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, key: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """Cancel a queued job, or ask a running one to stop (it ends as cancelled)."""
    with open_store(ctx) as store:
        job = store.jobs.cancel_job(tenant, key)
    emit(_job_payload(job), as_json, f"job {key}: {job.status}" + (" (stop requested)" if job.cancel_requested else ""))


def worker(
    ctx: typer.Context,
    profile: Annotated[str, typer.Option(help="Model profile the worker loads.")] = "tiny",
    executor: Executor = None,
    once: Annotated[bool, typer.Option(help="Run what is queued now, then exit.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between looks at an empty queue.", min=0.05)] = 1.0,
    as_json: Json = False,
) -> None:
    """Run queued jobs (of every tenant) until stopped, or once with --once.

    With the Ray executor this process drives the queue and the work runs on the cluster's
    model actors; on a multi-node cluster run it where the database and blob store are reachable.
    A database that stops answering is waited for (backing off up to 30 s), not a reason to exit:
    a job it was running is requeued when its lease runs out, by whichever worker comes first.
    """
    import time

    from sqlalchemy.exc import OperationalError

    from unipgen.core.usermodel import UserModel

    ran: list[Any] = []
    with open_store(ctx) as store:
        runner = make_runner(ctx, UserModel(store, profile, cache_dir=cache_dir(ctx)), executor)
        if not once:  # on stderr: an operator (or a test) sees which worker id is now taking jobs
            typer.echo(f"worker {runner.worker} ready: taking queued jobs every {poll:g} s", err=True)
        outage = 0.0  # seconds to wait after the database last failed (0: it answers)
        try:
            while True:
                try:
                    done = runner.run_pending()
                except OperationalError as exc:  # the database is unreachable: wait, don't die
                    if once:
                        raise
                    outage = min(30.0, max(poll, 2 * outage))
                    typer.echo(f"worker {runner.worker}: the database did not answer ({type(exc.orig).__name__}); "
                               f"retrying in {outage:g} s", err=True)
                    time.sleep(outage)
                    continue
                if outage:
                    typer.echo(f"worker {runner.worker}: the database answers again", err=True)
                    outage = 0.0
                ran += done
                for job in done:
                    if not as_json:
                        typer.echo(f"{job.key}: {job.status}")
                if once:
                    break
                time.sleep(poll)
        finally:
            runner.shutdown()
    emit({"worker": runner.worker, "jobs": [_job_payload(j) for j in ran]}, as_json, f"ran {len(ran)} jobs")


def feedback(
    ctx: typer.Context,
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
    with open_store(ctx) as store:
        store.events.add_feedback(tenant, [{"user": user, "type": kind, "output": output, "rejected": over}])
    payload = {"tenant": tenant, "user": user, "type": kind, "output": output, "rejected": over}
    emit(payload, as_json, f"recorded {kind} on {output}" + (f" over {over}" if over else ""))
