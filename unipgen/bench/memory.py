"""`unipgen bench memory`: the store's speed, each figure beside a baseline run in the same process.

- ingest: bulk behavior ingest (`MemoryStore.events.ingest_events`, from plain dicts, validation
  included) vs a naive loop that looks up user and item and adds one ORM object per event;
  on SQLite, and on PostgreSQL when UNIPGEN_BENCH_POSTGRES_URL (or UNIPGEN_TEST_POSTGRES_URL) is set;
- per-user top-10 search and global ANN search: see `unipgen.bench.vectors`;
- vector writes: `Content.add_embeddings` of a freshly loaded catalog (what the first generation
  after `unipgen ingest` does), ids looked up per batch, vs one lookup per vector; on SQLite and
  PostgreSQL;
- forget: a user with 10k events and 50 blobs, vs deleting the same rows one ORM object at a time.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from unipgen.bench import vectors
from unipgen.bench.stages import run_stages
from unipgen.eval.environment import machine
from unipgen.memory import MemoryStore
from unipgen.memory.db import temporary_database
from unipgen.memory.embeddings import put_embeddings
from unipgen.memory.lookups import resolve, tenant_id_of
from unipgen.memory.models import BehaviorEvent, Item, User
from unipgen.schema import EventIn
from unipgen.settings import Settings


def run(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine("numpy", "faiss", "sqlalchemy"), "quick": quick}
    n_events, n_naive = (20_000, 2_000) if quick else (100_000, 5_000)
    pg_url = os.environ.get("UNIPGEN_BENCH_POSTGRES_URL") or os.environ.get("UNIPGEN_TEST_POSTGRES_URL")
    stages = [
        ("ingest, SQLite", lambda: _suffixed(bench_ingest(None, n_events, n_naive), "sqlite")),
        ("ingest, PostgreSQL", lambda: _postgres_ingest(pg_url, n_events, n_naive) if pg_url else {}),
        ("vector writes, SQLite", lambda: _suffixed(bench_vector_writes(None, 5_000 if quick else 20_000), "sqlite")),
        ("vector writes, PostgreSQL", lambda: _postgres_vector_writes(pg_url, 5_000 if quick else 20_000) if pg_url else {}),
        ("per-user search (index)", lambda: vectors.bench_user_search(n_users=200 if quick else 1000)),
        ("per-user search (store)", lambda: bench_store_search(n_users=20 if quick else 200)),
        ("global ANN search", lambda: vectors.bench_ann(n=100_000 if quick else 1_000_000)),
        ("forget", lambda: bench_forget(events=10_000, blobs=50)),
    ]
    results |= run_stages(stages)
    results["ingest_speedup_vs_naive"] = results["ingest_speedup_vs_naive_sqlite"]
    return results


def _postgres_ingest(admin_url: str, n_events: int, n_naive: int) -> dict[str, Any]:
    with temporary_database(admin_url, "unipgen_bench") as url:
        return _suffixed(bench_ingest(url, n_events, n_naive), "postgres")


def _postgres_vector_writes(admin_url: str, n: int) -> dict[str, Any]:
    with temporary_database(admin_url, "unipgen_bench") as url:
        return _suffixed(bench_vector_writes(url, n), "postgres")


def _suffixed(values: dict[str, Any], suffix: str) -> dict[str, Any]:
    return {f"{key}_{suffix}": value for key, value in values.items()}


# -- ingest --------------------------------------------------------------------------------------


def _catalog(store: MemoryStore, tenant: str, users: int = 1000, items: int = 1000) -> None:
    store.users.create_tenant(tenant)
    store.users.create_users(tenant, [f"u{i}" for i in range(users)])
    store.catalog.add_items(tenant, [{"key": f"i{i}", "text": f"item {i}"} for i in range(items)])


def _event_dicts(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"user": f"u{i % 1000}", "type": "rate", "item": f"i{(i * 7) % 1000}", "value": 3.5,
             "ts": 1_600_000_000 + i} for i in range(start, start + n)]


def naive_ingest(store: MemoryStore, events: list[dict[str, Any]]) -> None:
    """The baseline: validate, look up user and item, add one ORM object per event, commit once."""
    with Session(store.engine) as session, session.begin():
        for raw in events:
            event = EventIn.model_validate(raw)
            user = session.scalars(select(User).where(User.key == event.user)).one()
            item = session.scalars(select(Item).where(Item.key == event.item)).one()
            session.add(BehaviorEvent(user_id=user.id, item_id=item.id, type=event.type, value=event.value,
                                      ts=event.ts, meta=event.meta))
            session.flush()


def bench_ingest(database_url: str | None, n_events: int, n_naive: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        store = MemoryStore.open(Settings(home=Path(home), database_url=database_url))
        _catalog(store, "bench")
        events = _event_dicts(n_events)
        start = time.perf_counter()
        store.events.ingest_events("bench", events)
        bulk_s = time.perf_counter() - start
        naive_events = _event_dicts(n_naive, start=n_events)
        start = time.perf_counter()
        naive_ingest(store, naive_events)
        naive_s = time.perf_counter() - start
        store.close()
    bulk_rate, naive_rate = n_events / bulk_s, n_naive / naive_s
    return {"ingest_events_per_s": round(bulk_rate), "naive_events_per_s": round(naive_rate),
            "ingest_speedup_vs_naive": round(bulk_rate / naive_rate, 1), "ingest_events": n_events}


# -- vector writes ---------------------------------------------------------------------------------


def naive_add_embeddings(store: MemoryStore, tenant: str, vectors: list[tuple[str, np.ndarray]]) -> None:
    """The baseline (the store's way before 2026-12-06): one id lookup per catalog item's vector,
    then the same writes as `Content.add_embeddings`."""
    with store.db.write() as w:
        tenant_id = tenant_id_of(w.session, tenant)
        rows = [(resolve(w.session, tenant, tenant_id, None, "item", key)[1], None, vector) for key, vector in vectors]
        put_embeddings(w, store.content.indexes, tenant_id, "text", rows, "item")


def bench_vector_writes(database_url: str | None, n: int, dim: int = 384) -> dict[str, Any]:
    """Seconds to store text vectors of `n` freshly loaded catalog items, batched vs the baseline;
    each in its own store and tenant (a fresh catalog, as after `unipgen ingest`)."""
    vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    pairs = [(f"i{i}", vectors[i]) for i in range(n)]
    seconds = {}
    for name, write in (("batched", lambda s, t: s.content.add_embeddings(t, "text", "item", pairs)),
                        ("per_vector", lambda s, t: naive_add_embeddings(s, t, pairs))):
        with tempfile.TemporaryDirectory() as home, \
                MemoryStore.open(Settings(home=Path(home), database_url=database_url)) as store:
            _catalog(store, name, users=1, items=n)  # a tenant each: PostgreSQL's database is shared
            start = time.perf_counter()
            write(store, name)
            seconds[name] = time.perf_counter() - start
    return {"vector_writes_s": round(seconds["batched"], 3), "vector_writes_per_vector_s": round(seconds["per_vector"], 3),
            "vector_writes_speedup": round(seconds["per_vector"] / seconds["batched"], 2), "vector_writes_n": n}


# -- per-user search through the store ------------------------------------------------------------


def bench_store_search(n_users: int, per_user: int = 1000, dim: int = 384, queries: int = 2000) -> dict[str, Any]:
    """`MemoryStore.content.search(..., user=U)` end to end on SQLite: ids resolved, index searched, keys mapped.

    Fewer users than the index-level figure (1000): the database holds each vector, and the
    query path's cost does not grow with the number of users (B-tree lookups by id).
    """
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as home:
        store = MemoryStore.open(Settings(home=Path(home)))
        store.users.create_tenant("bench")
        store.users.create_users("bench", [f"u{i}" for i in range(n_users)])
        for u in range(n_users):
            store.content.add_documents("bench", f"u{u}", [{"key": f"d{j}", "text": f"doc {j}"} for j in range(per_user)])
            vectors = rng.normal(size=(per_user, dim)).astype(np.float32)
            store.content.add_embeddings("bench", "text", "document", [(f"d{j}", v) for j, v in enumerate(vectors)],
                                 user=f"u{u}")
        work = [(f"u{i % n_users}", q) for i, q in enumerate(rng.normal(size=(queries, dim)).astype(np.float32))]
        for user, q in work[:200]:  # warm-up
            store.content.search("bench", "text", q, 10, user=user)
        latencies = []
        for user, q in work:
            start = time.perf_counter()
            store.content.search("bench", "text", q, 10, user=user)
            latencies.append((time.perf_counter() - start) * 1000)
        store.close()
    return {"store_user_search_p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "store_user_search_p99_ms": round(float(np.percentile(latencies, 99)), 3),
            "store_user_search_config": {"n_users": n_users, "per_user": per_user, "dim": dim, "database": "sqlite"}}


# -- forget --------------------------------------------------------------------------------------


def _png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _heavy_user(store: MemoryStore, tenant: str, user: str, events: int, blobs: int, seed: int) -> None:
    """`events` ratings, `blobs` distinct files (faces, subject images, artifacts), 100 embedded documents."""
    rng = np.random.default_rng(seed)
    store.users.create_user(tenant, user)
    store.events.ingest_events(tenant, [e | {"user": user} for e in _event_dicts(events)])
    faces, subject_images = blobs // 5, blobs // 5
    for i in range(faces):
        store.content.add_face(tenant, user, f"f{i}", _png(seed * 1000 + i), consent=True, embedding=rng.normal(size=128))
    store.content.add_subject(tenant, user, "pet", name="Pet", class_noun="dog",
                      images=[_png(seed * 1000 + faces + i) for i in range(subject_images)])
    for i in range(blobs - faces - subject_images):
        store.artifacts.add_artifact(tenant, f"{user}-a{i}", kind="output", media_type="application/octet-stream",
                           data=rng.bytes(4096), user=user, derived_from=[("subject", "pet")])
    for i in range(100):
        store.content.add_document(tenant, user, f"d{i}", f"document {i}")
    store.content.add_embeddings(tenant, "text", "document", [(f"d{i}", rng.normal(size=384)) for i in range(100)], user=user)


def naive_forget(store: MemoryStore, user: str) -> None:
    """The baseline: load every row of the user as an ORM object and delete them one by one."""
    from unipgen.memory.models import Artifact, Document, Embedding, Face, Subject, SubjectImage

    with Session(store.engine) as session, session.begin():
        user_row = session.scalars(select(User).where(User.key == user)).one()
        subjects = session.scalars(select(Subject).where(Subject.user_id == user_row.id)).all()
        rows: list[Any] = [i for s in subjects for i in session.scalars(
            select(SubjectImage).where(SubjectImage.subject_id == s.id))]
        for model in (BehaviorEvent, Embedding, Artifact, Document, Face):
            rows += session.scalars(select(model).where(model.user_id == user_row.id)).all()
        for row in rows + list(subjects) + [user_row]:
            session.delete(row)
            session.flush()


def bench_forget(events: int, blobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        store = MemoryStore.open(Settings(home=Path(home)))
        _catalog(store, "bench", users=0)
        _heavy_user(store, "bench", "target", events, blobs, seed=1)
        _heavy_user(store, "bench", "twin", events, blobs, seed=2)
        start = time.perf_counter()
        report = store.privacy.forget_user("bench", "target")
        forget_s = time.perf_counter() - start
        start = time.perf_counter()
        naive_forget(store, "twin")
        naive_s = time.perf_counter() - start
        store.close()
    assert not report.residue, report.residue
    return {"forget_s": round(forget_s, 3), "naive_forget_s": round(naive_s, 3),
            "forget_deleted": report.deleted, "forget_includes": "residue scan of database, index files and blobs"}

