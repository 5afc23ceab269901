"""`unipgen demo`: the store's round trip on the MovieLens sample that ships in the package."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

SAMPLE = Path(__file__).with_name("data") / "movielens-sample"


def run_demo(home: Path | None, tenant: str = "demo") -> None:
    """Load the sample into a fresh store, show a user, export, re-import elsewhere, forget."""
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    root = (home or Settings().home) / "demo"
    shutil.rmtree(root, ignore_errors=True)
    say = typer.echo
    with MemoryStore.open(Settings(home=root / "store")) as store:
        report = load_movielens(store, tenant, SAMPLE)
        say(f"1. loaded the MovieLens sample into {root / 'store'}: {report.items_added} movies, "
            f"{report.users_added} users, {report.events_added} ratings")
        user = store.list_users(tenant)[0]
        summary = store.user_summary(tenant, user)
        say(f"2. user {user}: {summary.counts['behavior_events']} ratings from "
            f"{summary.first_event_at:%Y-%m-%d} to {summary.last_event_at:%Y-%m-%d}; top rated:")
        for text in summary.top_items:
            say(f"     - {text}")
        archive = root / f"user-{user}.zip"
        counts = store.export_user(tenant, user, archive)
        say(f"3. exported user {user} to {archive} ({counts['events']} events, {counts['items']} items)")
        with MemoryStore.open(Settings(home=root / "copy")) as copy:
            copy.import_user(archive)
            again = root / f"user-{user}-again.zip"
            copy.export_user(tenant, user, again)
        same = archive.read_bytes() == again.read_bytes()
        say(f"4. imported it into an empty store and exported again: {'identical' if same else 'DIFFERENT'} bytes")
        forget = store.forget_user(tenant, user)
        say(f"5. forgot user {user}: deleted {forget.deleted}")
        say(f"   residue after a scan of database, indexes and blobs: {forget.residue or 'none'}")
        say(f"   users left: {len(store.list_users(tenant))}")
    if not same or forget.residue:
        raise typer.Exit(1)
