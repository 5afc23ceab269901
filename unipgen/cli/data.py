"""Data and privacy commands: load public data sets (`ingest`), check stored rows against the data
rules (`check`), delete what outlived its retention period (`purge`), and the end-to-end demo on
the shipped samples (`demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unipgen.cli.common import Json, Tenant, cache_dir, emit, home, open_store, settings

ingest_app = typer.Typer(help="Load data sets into the store.", no_args_is_help=True)


@ingest_app.command("movielens")
def ingest_movielens(
    ctx: typer.Context,
    directory: Path, users: Annotated[int | None, typer.Option(help="Only the first N users.")] = None,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Movies as items (title + genres), ratings as `rate` events with their timestamps."""
    from unipgen.memory.loaders import load_movielens

    with open_store(ctx) as store:
        report = load_movielens(store, tenant, directory, users=users)
    payload = {"tenant": tenant, **report.__dict__}
    emit(payload, as_json, f"{report.items_added} items, {report.users_added} users "
          f"({report.users_skipped} already there), {report.events_added} events, "
          f"{report.documents_added} tag documents loaded into {tenant!r}")


@ingest_app.command("locomo")
def ingest_locomo(
    ctx: typer.Context, path: Path,
    profile: Annotated[str, typer.Option(help="Model profile: its text encoder embeds the turns.")] = "tiny",
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """LoCoMo conversations (a JSON file): one user per conversation, keyed by its `sample_id`;
    both speakers' turns as messages (speaker, text, session time, a shared photo's caption),
    each keyed by its `dia_id`. A conversation already there is left as it is."""
    from unipgen.core.usermodel import UserModel
    from unipgen.memory.locomo import as_messages, load_locomo

    conversations = load_locomo(path)  # a bad file fails before anything is written
    with open_store(ctx) as store:
        store.users.ensure_tenant(tenant)
        existing = set(store.users.list_users(tenant))
        model = UserModel(store, profile, cache_dir=cache_dir(ctx))
        added = {}
        for conversation in conversations:
            if conversation.sample_id in existing:
                continue
            messages = as_messages(conversation)
            store.users.create_user(tenant, conversation.sample_id)
            try:
                added[conversation.sample_id] = model.add_messages(tenant, conversation.sample_id, messages)
            except BaseException:  # no user without their conversation: a rerun loads it again
                store.privacy.forget_user(tenant, conversation.sample_id)
                raise
    payload = {"tenant": tenant, "users_added": len(added), "users_skipped": len(conversations) - len(added),
               "messages_added": sum(added.values())}
    emit(payload, as_json, f"{len(added)} conversations ({payload['users_skipped']} already there), "
          f"{payload['messages_added']} messages loaded into {tenant!r}")


@ingest_app.command("dreambench")
def ingest_dreambench(ctx: typer.Context, directory: Path, tenant: Tenant = "default", as_json: Json = False) -> None:
    """One user per DreamBench subject: the subject with its class noun and reference photos."""
    from unipgen.memory.loaders import load_dreambench

    with open_store(ctx) as store:
        report = load_dreambench(store, tenant, directory)
    emit({"tenant": tenant, **report.__dict__}, as_json,
          f"{report.users_added} subjects ({report.users_skipped} already there), {report.images_added} photos "
          f"loaded into {tenant!r}")


def check(ctx: typer.Context, as_json: Json = False) -> None:
    """List stored rows that break the data rules (ids no URL reaches, non-finite numbers),
    written before the rules were enforced. Exits 1 when there are any."""
    with open_store(ctx) as store:
        violations = store.check_data()
    rows = [v.__dict__ for v in violations]
    emit({"violations": rows}, as_json, "\n".join(map(str, violations)) or "no stored row breaks the data rules")
    if violations:
        raise typer.Exit(1)


def purge(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; delete nothing.")] = False,
    as_json: Json = False,
) -> None:
    """Delete data older than its retention period (`UNIPGEN_RETENTION_DAYS`, e.g.
    '{"face": 365, "voice": 365}'), with everything derived from it."""
    retention = settings(ctx).retention_days
    with open_store(ctx) as store:
        report = store.privacy.purge_expired(retention, dry_run=dry_run)
    payload = {"dry_run": dry_run, "purged": report.purged, "derived": report.derived,
               "cutoffs": {k: v.isoformat() for k, v in report.cutoffs.items()}}
    verb = "would purge" if dry_run else "purged"
    summary = ", ".join(f"{n} {kind}" for kind, n in report.purged.items()) or "nothing (no retention configured)"
    emit(payload, as_json, f"{verb} {summary}; {report.derived} derived artifacts")


def demo(
    ctx: typer.Context,
    tenant: Tenant = "demo",
    report: Annotated[Path, typer.Option(help="Folder of the HTML report (index.html and its assets).")] = Path(
        "demo-report"),
) -> None:
    """The samples end to end: memory, a context, one output per modality, feedback, the report, forget."""
    from unipgen.demo import run_demo

    run_demo(home(ctx), tenant, report)
