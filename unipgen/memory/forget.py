"""Forget a user, one memory item, or some behavior events, and prove it: rows, vectors, blobs
and everything derived.

A forget runs in three steps. Plan: the items to delete are the target plus every artifact
reachable from it through lineage. Delete: one transaction removes the rows, lineage edges and
embeddings, the jobs that made a deleted artifact (a job's result quotes its request's prompt),
and the blob rows no other row still names. Then, after the commit, the blob files
go, the indexes drop the vectors and are rewritten on disk, the forgotten user's jobs' scratch
folders (training checkpoints) go, a SQLite database's WAL is checkpointed and truncated (with
``secure_delete`` on, the deleted rows' bytes were zeroed in their pages), and a scan of the
database, the raw database files, the index files, the scratch folders and the blob store lists
anything left (`ForgetReport.residue`, empty when clean).

A fit of the behavior space is derived from every user's events (lineage ``fit <- user``):
a forget that deletes events it read marks it stale and queues a refit job in its transaction,
and the stale fit is residue until that refit has replaced it (`unipgen.memory.fits`).

Events are no lineage node: nothing records being derived from one event, only from a user's
whole history, ``("user", key)`` (a context lists ``user:<key>`` in its provenance when it read
the user's events). So deleting events deletes every artifact derived from that user's history,
and what was derived from those in turn: whether an output read the deleted events is not
recorded, and keeping one that may have is what deleting them must not do.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import and_, delete, func, or_, select, tuple_
from sqlalchemy.orm import Session

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.db import checkpoint_sqlite, sqlite_files
from unipgen.memory.embeddings import bump_generation
from unipgen.memory.fits import mark_fit_stale, stale_fit_residue
from unipgen.memory.indexes import IndexManager
from unipgen.memory.jobs import queue_fit_job, remove_tree, scratch_path
from unipgen.memory.lookups import OWNER_MODELS, resolve, tenant_id_of, user_id_of
from unipgen.memory.models import (
    BLOB_COLUMNS,
    BehaviorEvent,
    Blob,
    Document,
    Embedding,
    Feedback,
    Item,
    Job,
    Lineage,
    ProfileAttribute,
    SubjectImage,
    User,
)
from unipgen.memory.transaction import Database, rowcount
from unipgen.memory.vectors import VectorIndex
from unipgen.schema.memory import EVENT_TYPES, ForgetReport

#: Kinds deleted by id, in an order that respects foreign keys (artifacts may name items' blobs).
_DELETE_ORDER = ("artifact", "document", "face", "subject", "voice", "item")


@dataclass
class Plan:
    """What one forget deletes: row ids by kind, the users, and (collected in its transaction)
    their embeddings, blobs, texts and scratch folders."""

    tenant_id: int
    user_ids: list[int] = field(default_factory=list)
    rows: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    blob_shas: set[str] = field(default_factory=set)
    embeddings: dict[str, list[int]] = field(default_factory=dict)  # space -> embedding ids
    texts: dict[str, str] = field(default_factory=dict)  # what a text is ("document 'd1'") -> the text
    scratch: list[Path] = field(default_factory=list)  # the forgotten jobs' scratch folders
    jobs: set[str] = field(default_factory=set)  # the jobs that made deleted artifacts (`meta["job"]`)
    events: Any = None  # a where clause on behavior_events: the events to delete besides the users'
    history_of: list[int] = field(default_factory=list)  # users whose history loses those events

    def nodes(self) -> list[tuple[str, int]]:
        """Every (kind, id) being deleted, as lineage names them."""
        nodes = [("user", u) for u in self.user_ids]
        return nodes + [(kind, i) for kind, ids in self.rows.items() for i in ids]

    def sources(self) -> list[tuple[str, int]]:
        """The lineage nodes whose derivatives go: the deleted ones, and the histories changed."""
        return self.nodes() + [("user", u) for u in self.history_of if u not in self.user_ids]


class Forget:
    """Forget a user, one memory item or some events (`Privacy` exposes them), and `run` any
    `Plan` with the residue scan (retention purges through it)."""

    def __init__(self, db: Database, indexes: IndexManager, scratch_dir: Path | None = None) -> None:
        self.db = db
        self.indexes = indexes
        self.scratch_dir = scratch_dir

    def forget_user(self, tenant: str, user: str) -> ForgetReport:
        """Delete a user and everything derived from their data; report any residue."""
        with self.db.session() as session:
            user_id = user_id_of(session, tenant, user)
            plan = Plan(tenant_id_of(session, tenant), user_ids=[user_id])
            for kind, (model, _) in OWNER_MODELS.items():
                if kind != "item":
                    plan.rows[kind].update(session.scalars(select(model.id).where(model.user_id == user_id)))
            if self.scratch_dir is not None:
                plan.scratch = [scratch_path(self.scratch_dir, tenant, key)
                                for key in session.scalars(select(Job.key).where(Job.user_id == user_id))]
        return self.run(plan, f"user {user!r}", tenant)

    def forget_item(self, tenant: str, kind: str, key: str, *, user: str | None = None) -> ForgetReport:
        """Delete one memory item (a photo, a document, a catalog item...) and what was derived from it.

        Forgetting a catalog item also deletes the behavior events that point to it.
        """
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            user_id = user_id_of(session, tenant, user) if user is not None else None
            kind, row_id = resolve(session, tenant, tenant_id, user_id, kind, key)
            plan = Plan(tenant_id)
            plan.rows[kind].add(row_id)
        return self.run(plan, f"{kind} {key!r}", tenant)

    def delete_events(
        self, tenant: str, user: str, *, ids: list[int] | None = None, type: str | None = None,
        item: str | None = None, since: datetime | None = None, until: datetime | None = None,
    ) -> ForgetReport:
        """Delete some of `user`'s behavior events: those of `ids` (`EventRecord.id`), or those
        matching every filter given (`type`, catalog `item`, `since` <= ts < `until`); with no
        filter, all of them. Every artifact derived from the user's history goes too (see the
        module docstring). An unknown id, type or item is an error; no match deletes nothing.
        """
        with self.db.session() as session:
            tenant_id = tenant_id_of(session, tenant)
            user_id = user_id_of(session, tenant, user)
            where = _event_filter(session, tenant_id, user_id, ids, type, item, since, until)
            plan = Plan(tenant_id)
            if session.scalar(select(BehaviorEvent.id).where(where).limit(1)) is not None:
                plan.events, plan.history_of = where, [user_id]
        return self.run(plan, f"events of user {user!r}", tenant)

    def run(self, plan: Plan, target: str, tenant: str) -> ForgetReport:
        """Delete what `plan` names and everything derived from it (one transaction), then the
        files and vectors, and report what is left (`target` names it in the report)."""
        with self.db.write() as w:
            add_derived(w.session, plan)
            if mark_fit_stale(w.session, plan.tenant_id, [*plan.user_ids, *plan.history_of], sorted(plan.rows["item"]),
                              f"{target} forgotten"):
                queue_fit_job(w.session, plan.tenant_id, f"{target} forgotten")
            _collect(w.session, plan)
            deleted = _delete(w.session, plan)
            before = bump_generation(w.session, plan.tenant_id, list(plan.embeddings))
        for space, ids in plan.embeddings.items():
            self.indexes.apply(plan.tenant_id, space, before[space], before[space] + 1,
                               removed=np.array(ids, dtype=np.int64))
        self.indexes.save(plan.tenant_id)  # the files must not keep a forgotten vector
        with self.db.session() as session:  # a writer may have stored the same bytes again since the commit
            reused = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(plan.blob_shas))))
        plan.blob_shas -= reused
        for sha in plan.blob_shas:
            self.db.blobs.delete(sha)
        for folder in plan.scratch:
            remove_tree(folder)
        checkpoint_sqlite(self.db.engine)  # the WAL's older frames still hold the deleted rows
        return ForgetReport(tenant=tenant, target=target, deleted=deleted, residue=self._residue(plan))

    def _residue(self, plan: Plan) -> list[str]:
        """Anything of the plan still in the database, the indexes (memory and files) or the blob store."""
        residue = []
        with self.db.session() as session:
            residue += _rows_left(session, plan)
            for space, ids in plan.embeddings.items():
                residue += _vectors_left(self.indexes.get(plan.tenant_id, space), ids, space, "index")
                path = self.indexes.path(plan.tenant_id, space)
                if path.exists():
                    residue += _vectors_left(VectorIndex.load(path)[0], ids, space, "index file")
        stored = set(self.db.blobs.list())
        residue += [f"blob {sha} (file)" for sha in sorted(plan.blob_shas & stored)]
        with self.db.session() as session:
            known = set(session.scalars(select(Blob.sha256)))
        residue += [f"blob {sha} (file without a row)" for sha in sorted(stored - known)]
        residue += [f"job scratch folder {folder}" for folder in plan.scratch if folder.exists()]
        with self.db.session() as session:
            residue += stale_fit_residue(session, plan.tenant_id)
        return residue + self._texts_in_files(plan)

    def _texts_in_files(self, plan: Plan) -> list[str]:
        """The forgotten texts whose bytes are still in a file of a SQLite database (the file, its
        WAL or shared memory): deleted but not overwritten. A match that a remaining document or
        item also contains is not residue."""
        files = sqlite_files(self.db.engine)
        probes = {probe: label for label, text in plan.texts.items() for probe in _probes(text)}
        if not files or not probes:
            return []
        found = {probe for path in files for probe in _find_all(path, list(probes))}
        if not found:
            return []
        with self.db.session() as session:
            held = {p for p in found if _still_held(session, p)}
        return sorted({f"text of {probes[p]} in the database files" for p in found - held})


def _probes(text: str) -> list[bytes]:
    """Byte strings that locate `text` in a SQLite file (stored as UTF-8): its first and last
    32 bytes (a long text may be split over overflow pages), or all of it when short. Texts
    under 12 bytes are left out: they would match unrelated bytes."""
    data = text.encode()
    if len(data) < 12:
        return []
    return list(dict.fromkeys([data[:32], data[-32:]])) if len(data) > 32 else [data]


def _find_all(path: Path, probes: list[bytes]) -> set[bytes]:
    """The probes that occur in the file at `path` (one pass over a memory map)."""
    import mmap
    import re

    if path.stat().st_size == 0:
        return set()
    pattern = re.compile(b"|".join(re.escape(p) for p in sorted(probes, key=len, reverse=True)))
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return {match.group() for match in pattern.finditer(data)}


def _still_held(session: Session, probe: bytes) -> bool:
    """Whether a remaining document or catalog item holds these bytes (then they are not residue)."""
    text = probe.decode(errors="ignore")
    return any(session.scalar(select(func.count()).select_from(model).where(model.text.contains(text, autoescape=True)))
               for model in (Document, Item))


#: What lineage derives: outputs and adapters (artifacts), and documents such as chat replies.
DERIVED_KINDS = ("artifact", "document")


def add_derived(session: Session, plan: Plan) -> None:
    """Grow the plan with every artifact and derived document reachable from it through lineage
    (to a fixed point)."""
    frontier = plan.sources()
    while frontier:
        edges = session.execute(select(Lineage.derived_kind, Lineage.derived_id).where(
            Lineage.derived_kind.in_(DERIVED_KINDS), tuple_(Lineage.source_kind, Lineage.source_id).in_(frontier)))
        frontier = [(kind, i) for kind, i in set(edges) if i not in plan.rows[kind]]
        for kind, i in frontier:
            plan.rows[kind].add(i)


def _collect(session: Session, plan: Plan) -> None:
    """The embeddings, blobs and texts the plan's rows hold."""
    for model, kind in ((Document, "document"), (Item, "item")):
        for key, text in session.execute(select(model.key, model.text).where(model.id.in_(plan.rows[kind]))):
            if text:
                plan.texts[f"{kind} {key!r}"] = text
    owners = [tuple_(Embedding.owner_kind, Embedding.owner_id).in_(plan.nodes())]
    if plan.user_ids:
        owners.append(Embedding.user_id.in_(plan.user_ids))
    for space, emb_id in session.execute(select(Embedding.space, Embedding.id).where(or_(*owners))):
        plan.embeddings.setdefault(space, []).append(emb_id)
    for column in BLOB_COLUMNS:
        owner = column.class_
        if owner is SubjectImage:
            where = SubjectImage.subject_id.in_(plan.rows["subject"])
        else:
            kind = next(k for k, (m, _) in OWNER_MODELS.items() if m is owner)
            where = owner.id.in_(plan.rows[kind])
        plan.blob_shas.update(s for s in session.scalars(select(column).where(where)) if s)
    artifact = OWNER_MODELS["artifact"][0]
    made = session.scalars(select(artifact.meta).where(artifact.id.in_(plan.rows["artifact"])))
    plan.jobs = {meta["job"] for meta in made if meta and meta.get("job")}


def _delete(session: Session, plan: Plan) -> dict[str, int]:
    nodes = plan.nodes()
    deleted: dict[str, int] = {}

    def run(name: str, statement: Any) -> None:
        count = rowcount(session.execute(statement))
        if count:
            deleted[name] = deleted.get(name, 0) + count

    all_embeddings = [i for ids in plan.embeddings.values() for i in ids]
    run("embeddings", delete(Embedding).where(Embedding.id.in_(all_embeddings)))
    run("lineage", delete(Lineage).where(or_(
        tuple_(Lineage.derived_kind, Lineage.derived_id).in_(nodes),
        tuple_(Lineage.source_kind, Lineage.source_id).in_(nodes))))
    chosen = [plan.events] if plan.events is not None else []
    run("events", delete(BehaviorEvent).where(or_(
        BehaviorEvent.user_id.in_(plan.user_ids), BehaviorEvent.item_id.in_(plan.rows["item"]), *chosen)))
    artifacts = plan.rows["artifact"]
    run("feedback", delete(Feedback).where(or_(Feedback.user_id.in_(plan.user_ids), Feedback.artifact_id.in_(artifacts),
                                               Feedback.rejected_id.in_(artifacts))))
    # A forgotten user's requests hold their words; a job's result quotes what its request used (the
    # plan's prompt), so the jobs whose outputs go, go too.
    run("jobs", delete(Job).where(or_(Job.user_id.in_(plan.user_ids),
                                      (Job.tenant_id == plan.tenant_id) & Job.key.in_(plan.jobs))))
    run("profile_attributes", delete(ProfileAttribute).where(ProfileAttribute.user_id.in_(plan.user_ids)))
    run("subject_images", delete(SubjectImage).where(SubjectImage.subject_id.in_(plan.rows["subject"])))
    for kind in _DELETE_ORDER:
        model = OWNER_MODELS[kind][0]
        run(model.__tablename__, delete(model).where(model.id.in_(plan.rows[kind])))
    run("users", delete(User).where(User.id.in_(plan.user_ids)))
    plan.blob_shas -= _still_used(session, plan.blob_shas)
    run("blobs", delete(Blob).where(Blob.sha256.in_(plan.blob_shas)))
    return deleted


def _still_used(session: Session, shas: set[str]) -> set[str]:
    """The blobs among `shas` that some remaining row still names (shared with another user)."""
    used: set[str] = set()
    for column in BLOB_COLUMNS:
        used.update(session.scalars(select(column).where(column.in_(shas)).distinct()))
    return used


def _rows_left(session: Session, plan: Plan) -> list[str]:
    left = []
    for kind, ids in plan.rows.items():
        model = OWNER_MODELS[kind][0]
        left += [f"row {model.__tablename__}#{i}" for i in session.scalars(select(model.id).where(model.id.in_(ids)))]
    for model, column in ((User, User.id), (BehaviorEvent, BehaviorEvent.user_id),
                          (ProfileAttribute, ProfileAttribute.user_id), (Embedding, Embedding.user_id),
                          (Feedback, Feedback.user_id), (Job, Job.user_id)):
        count = session.scalar(select(func.count()).select_from(model).where(column.in_(plan.user_ids)))
        if count:
            left.append(f"{count} rows in {model.__tablename__} of the forgotten user")
    left += [f"job {key!r}" for key in session.scalars(select(Job.key).where(Job.tenant_id == plan.tenant_id,
                                                                              Job.key.in_(plan.jobs)))]
    if plan.events is not None:
        count = session.scalar(select(func.count()).select_from(BehaviorEvent).where(plan.events))
        if count:
            left.append(f"{count} of the deleted behavior events")
    embedding_ids = [i for v in plan.embeddings.values() for i in v]
    left += [f"row embeddings#{i}" for i in session.scalars(select(Embedding.id).where(Embedding.id.in_(embedding_ids)))]
    nodes = plan.nodes()
    edges = session.scalar(select(func.count()).select_from(Lineage).where(or_(
        tuple_(Lineage.derived_kind, Lineage.derived_id).in_(nodes),
        tuple_(Lineage.source_kind, Lineage.source_id).in_(nodes))))
    if edges:
        left.append(f"{edges} lineage edges")
    left += [f"row blobs#{s}" for s in session.scalars(select(Blob.sha256).where(Blob.sha256.in_(plan.blob_shas)))]
    return left


def _vectors_left(index: VectorIndex, ids: list[int], space: str, where: str) -> list[str]:
    return [f"vector {space}#{i} in {where}" for i in ids if i in index]


def _event_filter(
    session: Session, tenant_id: int, user_id: int, ids: list[int] | None, type: str | None, item: str | None,
    since: datetime | None, until: datetime | None,
) -> Any:
    """The where clause on behavior_events selecting the user's events that `delete_events` names."""
    where = [BehaviorEvent.user_id == user_id]
    if ids is not None:
        storable = [event_id for event_id in ids if -2**63 <= event_id < 2**63]  # beyond: no such row (nor SQL int)
        found = set(session.scalars(select(BehaviorEvent.id).where(BehaviorEvent.id.in_(storable), *where)))
        missing = sorted(set(ids) - found)
        if missing:
            raise NotFoundError(f"unknown event {missing[0]} of this user")
        where.append(BehaviorEvent.id.in_(ids))
    if type is not None:
        if type not in EVENT_TYPES:
            raise InvalidInputError(f"unknown event type {type!r}; expected one of {sorted(EVENT_TYPES)}")
        where.append(BehaviorEvent.type == type)
    if item is not None:
        item_id = session.scalar(select(Item.id).where(Item.tenant_id == tenant_id, Item.key == item))
        if item_id is None:
            raise NotFoundError(f"unknown item {item!r}")
        where.append(BehaviorEvent.item_id == item_id)
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise InvalidInputError("since and until must be aware datetimes (e.g. UTC)")
    if since is not None and until is not None and since >= until:
        raise InvalidInputError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    if since is not None:
        where.append(BehaviorEvent.ts >= since)
    if until is not None:
        where.append(BehaviorEvent.ts < until)
    return and_(*where)
