"""What every command group of the CLI shares: the common options, printing a result, and the
store, settings, user model and job runner of one invocation.

`--home` is an option of the root command; the helpers read it from the click context they are
given (`ctx.find_root().params`), so no state lives between commands in this module. Heavy
modules (the store, numpy, faiss) are imported inside the helpers, when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

if TYPE_CHECKING:
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.orchestrator import Executor as JobExecutor
    from unipgen.schema.context import Modality
    from unipgen.schema.jobs import AnyJobSpec, JobRecord
    from unipgen.settings import Settings

MODALITY_ALIASES = {"music": "audio"}  # the CLI says music; the schema's modality is audio
MODALITY_NAMES = ("text", "image", "video", "music (= audio)", "speech", "3d")
MODALITY_HELP = "text, image, video, music (or audio), speech or 3d."
POST_HELP = MODALITY_HELP[:-1] + "; several, comma-separated (text,image), make one post."

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Home = Annotated[Path | None, typer.Option(help="Data directory (else UNIPGEN_HOME).")]
Executor = Annotated[str | None, typer.Option(
    help="Who runs the job: inline (this process) or ray (a local or UNIPGEN_RAY_ADDRESS cluster); "
         "default UNIPGEN_EXECUTOR, else inline.")]
JobId = Annotated[str | None, typer.Option("--job-id", help="Idempotency key: the same id returns the same job.")]
Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Run the job now, or only queue it for `unipgen worker`.")]


def home(ctx: typer.Context) -> Path | None:
    """The root command's `--home`, or None (then `UNIPGEN_HOME` decides)."""
    return ctx.find_root().params.get("home")


def settings(ctx: typer.Context) -> Settings:
    from unipgen.settings import Settings

    given = home(ctx)
    return Settings(home=given) if given else Settings()


def open_store(ctx: typer.Context) -> MemoryStore:
    from unipgen.memory import MemoryStore

    return MemoryStore.open(settings(ctx))


def cache_dir(ctx: typer.Context) -> Path:
    """Where models downloaded or built for this home are kept."""
    return Path(settings(ctx).home) / "cache"


def make_runner(ctx: typer.Context, model: UserModel, name: str | None, progress: bool = False) -> JobExecutor:
    """The executor `name` (default: `UNIPGEN_EXECUTOR`) over `model`'s store."""
    from unipgen.orchestrator import make_executor

    return make_executor(model, settings(ctx), name, progress=progress)


def emit(payload: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(payload, default=str, indent=None if as_json else 2) if as_json else text)


def check_modalities(modalities: str, instruction: str) -> Modality | tuple[Modality, ...]:
    """`check_request` for one modality or several, comma-separated ("text,image": a post);
    refuses an unknown or repeated one, naming it."""
    from unipgen.errors import InvalidInputError

    names = [name.strip() for name in modalities.split(",")]
    checked = [check_request(name, instruction) for name in names]
    twice = sorted({m for m in checked if checked.count(m) > 1})
    if twice:
        raise InvalidInputError(f"modality {', '.join(map(repr, twice))} asked more than once in {modalities!r}")
    return checked[0] if len(checked) == 1 else tuple(checked)


def check_request(modality: str, instruction: str) -> Modality:
    """The modality's canonical name ("music" is "audio"); refuses an unknown one or no instruction."""
    from unipgen.errors import InvalidInputError
    from unipgen.schema.context import MODALITIES

    modality = MODALITY_ALIASES.get(modality, modality)
    if modality not in MODALITIES:
        raise InvalidInputError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITY_NAMES)}")
    if not instruction.strip():
        raise InvalidInputError("--instruction is empty: say what to generate (for speech: the words to say)")
    return cast("Modality", modality)  # one of MODALITIES, checked above


def user_model(ctx: typer.Context, store: MemoryStore, profile: str, tenant: str, user: str,
               config: Any = None) -> UserModel:
    """The user model of `profile`, with the catalog and the user's documents embedded."""
    from unipgen.core.usermodel import UserModel

    model = UserModel(store, profile, config=config, cache_dir=cache_dir(ctx))
    store.users.user_summary(tenant, user)  # unknown tenant or user: fail before loading models
    if missing := model.embed_catalog(tenant) + model.embed_documents(tenant, user):
        typer.echo(f"embedded {missing} catalog items and documents", err=True)
    return model


def run_job(ctx: typer.Context, store: MemoryStore, profile: str, executor: str | None, tenant: str, user: str,
            spec: AnyJobSpec, job_id: str | None, wait: bool, progress: bool = False) -> JobRecord:
    """Submit a job (idempotent by `job_id`) and, with `wait`, run it; a failed job raises its error."""
    from unipgen.core.usermodel import UserModel
    from unipgen.errors import error_from

    store.users.user_summary(tenant, user)  # unknown tenant or user: fail before loading models
    if not wait:
        return store.jobs.submit_job(tenant, user, spec.model_dump(mode="json"), key=job_id)
    model = UserModel(store, profile, cache_dir=cache_dir(ctx))  # the job embeds what its context reads
    runner = make_runner(ctx, model, executor, progress)
    try:
        job = runner.wait(tenant, runner.submit(tenant, user, spec, key=job_id).key)
    finally:
        runner.shutdown()
    if job.status == "failed":
        raise error_from(job.error or {})
    return job


def artifact_file(store: MemoryStore, tenant: str, key: str) -> dict[str, Any]:
    """An artifact's key, media type, modality, blob and where it lies (a file, or an s3:// URL),
    with its scored answer when it is a label."""
    record = store.artifacts.artifact(tenant, key)
    found = {"key": key, "media_type": record.media_type, "modality": (record.meta or {}).get("modality"),
             "blob_sha": record.blob_sha,
             "path": store.blobs.location(record.blob_sha) if record.blob_sha else None}  # a file, or an s3:// URL
    label = (record.meta or {}).get("label")
    return found | ({"label": label} if label else {})
