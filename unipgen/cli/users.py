"""Users and their events: list, show, export, import and forget users; list and delete events."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from unipgen.cli.common import Json, Tenant, emit, open_store

users_app = typer.Typer(help="Inspect, export, import and forget users.", no_args_is_help=True)
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
