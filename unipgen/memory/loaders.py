"""Loaders for public data sets into the store: MovieLens (movies as items, ratings as events)."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from unipgen.errors import InvalidInputError
from unipgen.schema.memory import DocumentIn, EventIn, ItemIn
from unipgen.schema.rules import FORBIDDEN_IN_ID, MAX_ID_LENGTH

if TYPE_CHECKING:
    from unipgen.memory.store import MemoryStore

_YEAR = re.compile(r"\((\d{4})\)\s*$")


@dataclass(frozen=True)
class LoadReport:
    items_added: int
    users_added: int
    users_skipped: int
    events_added: int
    documents_added: int


#: The columns read from each MovieLens file (tags.csv is optional).
MOVIELENS_COLUMNS = {"movies.csv": ("movieId", "title", "genres"),
                     "ratings.csv": ("userId", "movieId", "rating", "timestamp"),
                     "tags.csv": ("userId", "movieId", "tag", "timestamp")}


def read_movielens(directory: Path, name: str) -> list[dict[str, str]]:
    """The rows of one MovieLens file of `directory` (movies.csv, ratings.csv or tags.csv): the one
    reader of the layout, for the store's loader and the eval harnesses. InvalidInputError, naming
    the file, when it is missing or lacks one of its `MOVIELENS_COLUMNS`."""
    path = Path(directory) / name
    if not path.is_file():
        raise InvalidInputError(f"{path} not found: expected the MovieLens CSV layout (movies.csv, ratings.csv)")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = MOVIELENS_COLUMNS[name]
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(f"{path}: not a MovieLens file, columns {missing} missing "
                                    f"(expected {', '.join(columns)})")
        return list(reader)


def movie_item(row: dict[str, str]) -> ItemIn:
    """A movie as a catalog item: the text is title and genres, the kind of text an encoder reads."""
    genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
    year = _YEAR.search(row["title"])
    text = row["title"] + (f" — {', '.join(genres)}" if genres else "")
    meta = {"title": row["title"], "genres": genres, "year": int(year.group(1)) if year else None}
    return ItemIn(key=row["movieId"], text=text, meta=meta)


def load_movielens(store: MemoryStore, tenant: str, directory: Path, *, users: int | None = None) -> LoadReport:
    """Load a MovieLens directory: every movie as an item, ratings of the first `users` users as
    `rate` events, and their tags (short texts they wrote, if tags.csv is there) as documents.

    Users already in the store are skipped with all their data, so loading twice adds nothing.
    """
    movies = read_movielens(directory, "movies.csv")
    ratings = read_movielens(directory, "ratings.csv")
    tags = read_movielens(directory, "tags.csv") if (directory / "tags.csv").is_file() else []
    store.users.ensure_tenant(tenant)
    existing = set(store.users.list_users(tenant))
    try:
        wanted = set(sorted({r["userId"] for r in ratings}, key=int)[:users])
        new = wanted - existing
        items = [movie_item(row) for row in movies]
        events = [
            EventIn.model_validate({"user": r["userId"], "type": "rate", "item": r["movieId"],
                                    "value": float(r["rating"]), "ts": int(r["timestamp"])})
            for r in ratings
            if r["userId"] in new
        ]
        documents = _tag_documents([t for t in tags if t["userId"] in new])
    except (KeyError, ValueError) as exc:
        raise InvalidInputError(f"{directory}: malformed MovieLens file ({exc})") from None
    items_added = store.catalog.add_items(tenant, items, exist_ok=True)
    added = store.events.ingest_events(tenant, events, create_users=True)
    for user, docs in documents.items():
        store.content.add_documents(tenant, user, docs)
    return LoadReport(items_added, len(new), len(wanted & existing), added,
                      sum(len(d) for d in documents.values()))


def tag_key(movie: str, tag: str) -> str:
    """The document id of a tag: readable, and valid under the id rule whatever the tag holds
    (a '/' or a control character becomes '_'; whitespace runs become one space, none at the ends)."""
    cleaned = FORBIDDEN_IN_ID.sub("_", " ".join(tag.split()))
    return f"tag:{movie}:{cleaned}"[:MAX_ID_LENGTH].rstrip()


def _tag_documents(tags: list[dict[str, str]]) -> dict[str, list[DocumentIn]]:
    """Tags by user, as documents of kind ``tag`` (one per movie and tag text)."""
    documents: dict[str, dict[str, DocumentIn]] = {}
    for t in tags:
        key = tag_key(t["movieId"], t["tag"])
        documents.setdefault(t["userId"], {})[key] = DocumentIn(
            key=key, text=t["tag"], kind="tag", ts=datetime.fromtimestamp(int(t["timestamp"]), timezone.utc),
            meta={"item": t["movieId"]})
    return {user: list(docs.values()) for user, docs in documents.items()}


@dataclass(frozen=True)
class DreamBenchReport:
    users_added: int
    users_skipped: int
    images_added: int


def dreambench_classes(directory: Path) -> dict[str, str]:
    """Subject folder name → class noun, from the data set's prompts_and_classes.txt."""
    path = directory / "prompts_and_classes.txt"
    if not path.is_file():
        raise InvalidInputError(f"{path} not found: expected the DreamBench layout (one folder per subject)")
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index("subject_name,class") + 1
    except ValueError:
        raise InvalidInputError(f"{path}: no 'subject_name,class' header") from None
    classes = {}
    for line in lines[start:]:
        if not line.strip():
            break
        name, _, noun = line.partition(",")
        classes[name.strip()] = noun.strip()
    return classes


def load_dreambench(store: MemoryStore, tenant: str, directory: Path) -> DreamBenchReport:
    """One user per subject folder (user id = subject name), holding that subject with its class
    noun and reference photos. Users already in the store are skipped."""
    classes = dreambench_classes(directory)
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and p.name in classes)
    store.users.ensure_tenant(tenant)
    existing = set(store.users.list_users(tenant))
    added = images = 0
    for folder in folders:
        if folder.name in existing:
            continue
        photos = [p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        store.users.create_user(tenant, folder.name)
        store.content.add_subject(tenant, folder.name, folder.name, name=folder.name, class_noun=classes[folder.name],
                          images=photos)
        added, images = added + 1, images + len(photos)
    return DreamBenchReport(added, len(folders) - added, images)
