"""Keeps each (tenant, space)'s faiss index in step with the `embeddings` table.

The table is the truth. An index in memory or on disk carries the space's `generation` it was
built at; when the database's generation differs (another process wrote, or the file is older
than the last change), the index is rebuilt from the table and saved again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from unipgen.memory.models import Embedding, EmbeddingSpace, Item
from unipgen.memory.private import private_dir, restrict_tree
from unipgen.memory.vectors import CATALOG, Metric, VectorIndex


@dataclass
class _Cached:
    index: VectorIndex
    generation: int
    dirty: bool = field(default=False)
    item_ids: dict[str, int] | None = None  # catalog item key -> embedding id, read on first use
    item_keys: dict[int, str] | None = None  # the reverse


class IndexManager:
    """Indexes per (tenant id, space name), loaded lazily, persisted under `directory`.

    Safe to share between threads (an executor prepares several jobs at once): loading,
    folding in changes and saving take one lock, so no thread reads a file another is writing.
    """

    def __init__(self, engine: Engine, directory: Path) -> None:
        self._engine = engine
        self.directory = directory
        self._cache: dict[tuple[int, str], _Cached] = {}
        self._lock = threading.RLock()

    def path(self, tenant_id: int, space: str) -> Path:
        return self.directory / f"tenant-{tenant_id}" / space

    def get(self, tenant_id: int, space: str, generation: int | None = None) -> VectorIndex:
        """The index of this space, current with the database.

        A caller that has just read the space's `generation` passes it to save a query.
        """
        cached = self._cache.get((tenant_id, space))
        if cached is not None and generation is not None and cached.generation == generation:
            return cached.index
        with self._lock, Session(self._engine) as session:
            row = session.get(EmbeddingSpace, (tenant_id, space))
            if row is None:
                raise KeyError(space)
            cached = self._cache.get((tenant_id, space))
            if cached is None or cached.generation != row.generation:
                cached = self._load_or_rebuild(session, row)
                self._cache[(tenant_id, space)] = cached
            return cached.index

    def _load_or_rebuild(self, session: Session, space: EmbeddingSpace) -> _Cached:
        path = self.path(space.tenant_id, space.name)
        try:
            index, meta = VectorIndex.load(path)
            if meta.get("generation") == space.generation and index.dim == space.dim:
                return _Cached(index, space.generation)
        except (FileNotFoundError, ValueError, OSError):
            pass  # missing or unreadable: rebuild below
        cached = _Cached(rebuild(session, space), space.generation)
        self._save(path, cached)
        return cached

    def apply(
        self,
        tenant_id: int,
        space: str,
        generation_before: int,
        generation_after: int,
        added: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        removed: np.ndarray | None = None,
    ) -> None:
        """Fold a committed change into the cached index, or drop it if it missed a change."""
        with self._lock:
            self._apply(tenant_id, space, generation_before, generation_after, added, removed)

    def _apply(self, tenant_id: int, space: str, generation_before: int, generation_after: int,
               added: tuple[np.ndarray, np.ndarray, np.ndarray] | None, removed: np.ndarray | None) -> None:
        cached = self._cache.get((tenant_id, space))
        if cached is None:
            return
        if cached.generation != generation_before:
            del self._cache[(tenant_id, space)]
            return
        if removed is not None and len(removed):
            cached.index.remove(removed)
        if added is not None and len(added[0]):
            cached.index.add(*added)
        cached.generation = generation_after
        cached.item_ids = cached.item_keys = None  # keys may have come or gone: read again on next use
        cached.dirty = True

    def item_vectors(self, tenant_id: int, space: str, keys: list[str], generation: int | None = None
                     ) -> dict[str, np.ndarray]:
        """Vectors of catalog items by key, from the index in memory (a recommendation's hot
        path: no vector is read from the table). The key -> embedding id map is read once per
        generation of the space."""
        index, ids, _ = self._catalog(tenant_id, space, generation)
        known = [key for key in keys if key in ids]
        rows = index.catalog_vectors(np.array([ids[key] for key in known], dtype=np.int64))
        return {key: row for key, row in zip(known, rows) if not np.isnan(row[0])}

    def search_items(self, tenant_id: int, space: str, query: np.ndarray, k: int, generation: int | None = None
                     ) -> list[tuple[str, float]]:
        """Top-k catalog items (key, score) nearest `query`, keys from the cached map: no query
        to the database when the space is unchanged."""
        index, _, keys = self._catalog(tenant_id, space, generation)
        found, scores = index.search_global(np.asarray(query, dtype=np.float32), k)
        return [(keys[i], float(s)) for i, s in zip(found.tolist(), scores.tolist()) if i in keys]

    def _catalog(self, tenant_id: int, space: str, generation: int | None
                 ) -> tuple[VectorIndex, dict[str, int], dict[int, str]]:
        """The space's index and its item key <-> embedding id maps (read once per generation)."""
        index = self.get(tenant_id, space, generation)
        with self._lock:
            cached = self._cache[(tenant_id, space)]
            if cached.item_ids is None or cached.item_keys is None:
                with Session(self._engine) as session:
                    cached.item_ids = dict(session.execute(
                        select(Item.key, Embedding.id).join(Item, (Embedding.owner_kind == "item")
                                                            & (Embedding.owner_id == Item.id))
                        .where(Embedding.tenant_id == tenant_id, Embedding.space == space)).all())
                cached.item_keys = {i: key for key, i in cached.item_ids.items()}
            return index, cached.item_ids, cached.item_keys

    def refresh(self, tenant_id: int, space: str) -> None:
        """Rebuild a space's index from the table now and write it, replacing the file: after a
        change of the whole space (a refit), whose old vectors must leave the disk too."""
        with self._lock:
            self._cache.pop((tenant_id, space), None)
            self.get(tenant_id, space)

    def save(self, tenant_id: int | None = None) -> None:
        """Write changed indexes to disk (all tenants, or one)."""
        with self._lock:
            for (tid, space), cached in self._cache.items():
                if cached.dirty and (tenant_id is None or tid == tenant_id):
                    self._save(self.path(tid, space), cached)

    def _save(self, path: Path, cached: _Cached) -> None:
        private_dir(self.directory)
        cached.index.save(path, {"generation": cached.generation})
        restrict_tree(path.parent)  # the tenant's folder: the vectors are derived from people's data
        cached.dirty = False


def rebuild(session: Session, space: EmbeddingSpace) -> VectorIndex:
    """A fresh index holding every vector of `space`, read from the table."""
    index = VectorIndex(space.dim, metric=cast(Metric, space.metric))  # a VARCHAR; VectorIndex checks it
    rows = session.execute(
        select(Embedding.id, Embedding.user_id, Embedding.vector)
        .where(Embedding.tenant_id == space.tenant_id, Embedding.space == space.name)
        .order_by(Embedding.id)
        .execution_options(yield_per=50_000)
    )
    for chunk in rows.partitions():
        ids = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
        users = np.fromiter(
            (CATALOG if r[1] is None else r[1] for r in chunk), dtype=np.int64, count=len(chunk)
        )
        vectors = np.frombuffer(b"".join(r[2] for r in chunk), dtype=np.float32)
        index.add(ids, users, vectors.reshape(len(chunk), space.dim))
    return index
