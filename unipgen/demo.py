"""`unipgen demo`: the store's round trip on the samples that ship in the package.

A MovieLens slice gives users their ratings and tags; the persona sample gives one of them a
face photo, a voice sample and a personal subject (a dog with two reference photos).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

DATA = Path(__file__).with_name("data")
MOVIELENS_SAMPLE = DATA / "movielens-sample"
PERSONA_SAMPLE = DATA / "persona-sample"
DEMO_USER = "2"  # a MovieLens user who also wrote tags


def run_demo(home: Path | None, tenant: str = "demo") -> None:
    """Load the samples into a fresh store, show a user, export, re-import elsewhere, forget."""
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    root = (home or Settings().home) / "demo"
    shutil.rmtree(root, ignore_errors=True)
    say = typer.echo
    with MemoryStore.open(Settings(home=root / "store")) as store:
        report = load_movielens(store, tenant, MOVIELENS_SAMPLE)
        say(f"1. loaded the MovieLens sample into {root / 'store'}: {report.items_added} movies, "
            f"{report.users_added} users, {report.events_added} ratings, {report.documents_added} tags")
        attach_persona(store, tenant, DEMO_USER)
        say(f"2. gave user {DEMO_USER} a face photo, a voice sample and a subject (a dog, 2 photos), with consent")
        show_user(store, tenant, DEMO_USER, say)
        archive = root / f"user-{DEMO_USER}.zip"
        counts = store.export_user(tenant, DEMO_USER, archive)
        say(f"4. exported user {DEMO_USER} to {archive}: {counts['events']} events, "
            f"{counts['documents']} documents, {counts['blobs']} files")
        same = reimport_is_identical(archive, root, tenant)
        say(f"5. imported it into an empty store and exported again: {'identical' if same else 'DIFFERENT'} bytes")
        forget = store.forget_user(tenant, DEMO_USER)
        say(f"6. forgot user {DEMO_USER}: deleted {forget.deleted}")
        say(f"   residue after a scan of database, indexes and blobs: {forget.residue or 'none'}")
        say(f"   users left: {len(store.list_users(tenant))}, blob files left: {len(list(store.blobs.list()))}")
    if not same or forget.residue:
        raise typer.Exit(1)


def attach_persona(store, tenant: str, user: str) -> None:  # noqa: ANN001
    store.add_face(tenant, user, "portrait", (PERSONA_SAMPLE / "faces" / "s1-1.pgm").read_bytes(), consent=True)
    voice = PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac"
    store.add_voice(tenant, user, "greeting", voice.read_bytes(), consent=True)
    photos = [(PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg").read_bytes() for i in range(2)]
    store.add_subject(tenant, user, "dog", name="Rex", class_noun="dog", images=photos)


def show_user(store, tenant: str, user: str, say) -> None:  # noqa: ANN001
    summary = store.user_summary(tenant, user)
    counts = ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n)
    say(f"3. user {user}: {counts}; behaviors from {summary.first_event_at:%Y-%m-%d} "
        f"to {summary.last_event_at:%Y-%m-%d}; top rated:")
    for text in summary.top_items:
        say(f"     - {text}")


def reimport_is_identical(archive: Path, root: Path, tenant: str) -> bool:
    from unipgen.memory import MemoryStore
    from unipgen.settings import Settings

    with MemoryStore.open(Settings(home=root / "copy")) as copy:
        _, user = copy.import_user(archive)
        again = archive.with_name(f"{archive.stem}-again.zip")
        copy.export_user(tenant, user, again)
    return archive.read_bytes() == again.read_bytes()
