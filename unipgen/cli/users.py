"""Users and their events: list, show, export, import and forget users; upload their subjects and
face photos (optionally protected from fine-tuning); record their consent to training; list and
delete events."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from unipgen.cli.common import Executor, Json, Tenant, cache_dir, emit, open_store, run_job, settings

users_app = typer.Typer(help="Inspect, export, import and forget users; upload their photos; record consent.",
                        no_args_is_help=True)
Protect = Annotated[bool, typer.Option("--protect", help="Protect the photos from fine-tuning (Anti-DreamBooth) "
                                                         "as a job, run now; downloads serve the protected copies.")]
Profile = Annotated[str, typer.Option(help="Model profile: its encoders embed the photos, its image model is the "
                                           "one they are protected against.")]
events_app = typer.Typer(help="List and delete a user's behavior events.", no_args_is_help=True)


@users_app.command("list")
def users_list(ctx: typer.Context, tenant: Tenant = "default", as_json: Json = False) -> None:
    with open_store(ctx) as store:
        users = store.users.list_users(tenant)
    emit({"tenant": tenant, "users": users}, as_json, "\n".join(users))


@users_app.command("show")
def users_show(ctx: typer.Context, user: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    with open_store(ctx) as store:
        summary = store.users.user_summary(tenant, user)
    emit(summary.model_dump(mode="json"), as_json, _summary_text(summary.model_dump(mode="json")))


def _summary_text(s: dict[str, Any]) -> str:
    lines = [f"user {s['user']} (tenant {s['tenant']}), since {s['created_at']}"]
    lines += [f"  {name}: {count}" for name, count in s["counts"].items()]
    if s["first_event_at"]:
        lines.append(f"  behaviors from {s['first_event_at']} to {s['last_event_at']}")
    lines += [f"  profile {k} = {v!r}" for k, v in s["profile"].items()]
    lines += ["  top items:"] + [f"    - {t}" for t in s["top_items"]] if s["top_items"] else []
    return "\n".join(lines)


@users_app.command("consent")
def users_consent(
    ctx: typer.Context, user: str,
    training: Annotated[bool | None, typer.Option("--training/--no-training", help=(
        "Record USER's consent to adapters trained on their faces and subjects, or withdraw it; "
        "without either, show it."))] = None,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Show or set USER's consent to training (apart from the consent to storing face photos)."""
    with open_store(ctx) as store:
        found = (store.users.training_consent(tenant, user) if training is None
                 else store.users.set_training_consent(tenant, user, training, actor="cli"))
    since = f" since {found.since.isoformat()}" if found.since else ""
    emit(found.model_dump(mode="json"), as_json, f"user {user!r}: training consent {'given' if found.granted else 'not given'}{since}")


@users_app.command("add-subject")
def users_add_subject(
    ctx: typer.Context, user: str, key: str,
    photos: Annotated[list[Path], typer.Argument(help="Reference photos of the subject, in order.")],
    name: Annotated[str, typer.Option(help="What the user calls it (default: KEY).")] = "",
    class_noun: Annotated[str, typer.Option("--class-noun", help="What it is: dog, backpack...")] = "object",
    protect: Protect = False, profile: Profile = "tiny", executor: Executor = None,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Store a personal subject of USER (a pet, a bag) with its photos and their image embedding."""
    images = [path.read_bytes() for path in photos]
    with open_store(ctx) as store:
        model = _model(ctx, store, profile, tenant, user)
        model.add_subject(tenant, user, key, name=name or key, class_noun=class_noun, images=images)
        job = _protected(ctx, store, profile, executor, tenant, user, "subject", key) if protect else None
    payload = {"tenant": tenant, "user": user, "subject": key, "images": len(images), "protection": job}
    emit(payload, as_json, f"stored subject {key!r} with {len(images)} photos" + _protection_text(job))


@users_app.command("add-face")
def users_add_face(
    ctx: typer.Context, user: str, key: str, photo: Path,
    consent: Annotated[bool, typer.Option("--consent", help="USER consents to storing this biometric photo.")] = False,
    protect: Protect = False, profile: Profile = "tiny", executor: Executor = None,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Store a face photo of USER (biometric: needs --consent) with its identity embedding."""
    with open_store(ctx) as store:
        model = _model(ctx, store, profile, tenant, user)
        model.add_face(tenant, user, key, photo.read_bytes(), consent=consent)
        job = _protected(ctx, store, profile, executor, tenant, user, "face", key) if protect else None
    payload = {"tenant": tenant, "user": user, "face": key, "protection": job}
    emit(payload, as_json, f"stored face {key!r}" + _protection_text(job))


def _model(ctx: typer.Context, store: Any, profile: str, tenant: str, user: str) -> Any:
    from unipgen.core.usermodel import UserModel

    store.users.user_summary(tenant, user)  # unknown tenant or user: fail before loading models
    return UserModel(store, profile, cache_dir=cache_dir(ctx))


def _protected(ctx: typer.Context, store: Any, profile: str, executor: str | None, tenant: str, user: str,
               kind: str, key: str) -> dict[str, Any]:
    """Protect what was just stored; if that fails, the upload is undone and the error raised."""
    from unipgen.orchestrator.protection import protect_spec_of

    try:
        job = run_job(ctx, store, profile, executor, tenant, user, protect_spec_of(settings(ctx), kind, key), None,
                      True)
    except BaseException:
        store.privacy.forget_item(tenant, kind, key, user=user)
        raise
    result = job.result or {}
    return {"job": job.key, "status": job.status, "artifacts": result.get("artifacts", []), "psnr": result.get("psnr", [])}


def _protection_text(job: dict[str, Any] | None) -> str:
    if job is None:
        return ""
    psnr = ", ".join(f"{value:.1f}" for value in job["psnr"])
    return f"; protected by job {job['job']} ({len(job['artifacts'])} copies, PSNR {psnr} dB)"


@users_app.command("export")
def users_export(
    ctx: typer.Context,
    user: str, output: Annotated[Path, typer.Option("-o", "--output", help="Zip file to write.")],
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    with open_store(ctx) as store:
        counts = store.privacy.export_user(tenant, user, output)
    emit({"tenant": tenant, "user": user, "file": str(output), "counts": counts}, as_json,
          f"exported {user!r} to {output}")


@users_app.command("import")
def users_import(
    ctx: typer.Context,
    archive: Path, tenant: Annotated[str | None, typer.Option("--tenant", "-t")] = None, as_json: Json = False,
) -> None:
    with open_store(ctx) as store:
        tenant_key, user = store.privacy.import_user(archive, tenant=tenant)
    emit({"tenant": tenant_key, "user": user}, as_json, f"imported {user!r} into {tenant_key!r}")


@users_app.command("forget")
def users_forget(ctx: typer.Context, user: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """Delete the user and everything derived from their data; print the residue (empty when clean)."""
    with open_store(ctx) as store:
        report = store.privacy.forget_user(tenant, user)
    text = f"forgot {user!r}: deleted {report.deleted}\nresidue: {report.residue or 'none'}"
    emit(report.model_dump(), as_json, text)
    if report.residue:
        raise typer.Exit(1)


@events_app.command("list")
def events_list(ctx: typer.Context, user: str, tenant: Tenant = "default",
                limit: Annotated[int | None, typer.Option(help="Only the last N events.")] = None,
                as_json: Json = False) -> None:
    """The user's events, oldest first, with the id `events delete --id` takes."""
    with open_store(ctx) as store:
        events = [e.model_dump(mode="json") for e in store.events.events(tenant, user, limit=limit)]
    emit({"tenant": tenant, "user": user, "events": events}, as_json,
          "\n".join(f"{e['id']}  {e['ts']}  {e['type']} {e['item']}" + (f" {e['value']}" if e["value"] is not None
                                                                         else "") for e in events))


@events_app.command("delete")
def events_delete(
    ctx: typer.Context,
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
    with open_store(ctx) as store:
        report = store.privacy.delete_events(tenant, user, ids=event_id or None, type=event_type, item=item,
                                     since=_when(since, "--since"), until=_when(until, "--until"))
    emit(report.model_dump(), as_json, f"deleted {report.deleted or 'nothing'}\nresidue: {report.residue or 'none'}")
    if report.residue:
        raise typer.Exit(1)


def _when(value: str | None, option: str) -> datetime | None:
    from unipgen.errors import InvalidInputError

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"{option} must be an ISO 8601 time, not {value!r}") from None
