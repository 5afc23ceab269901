"""In-memory vector index of one (tenant, embedding space).

Two kinds of vectors live here, told apart by their owner:

* user vectors (``user_id >= 0``): searched only per user, exactly, by one small
  matmul over that user's contiguous float32 matrix;
* catalog vectors (``user_id == CATALOG``): the tenant's items, searched globally,
  exactly while the catalog is small and through a faiss IVF index once it reaches
  ``AnnConfig.min_train_size`` vectors.

Scores: with ``metric="ip"`` a score is the inner product (larger is better;
callers L2-normalise for cosine); with ``metric="l2"`` it is the squared L2
distance (smaller is better). Results are always best first.

Not thread-safe: callers serialise access (``search_global`` may (re)train the
IVF index lazily, which mutates the index).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from unipgen.memory.vector_blocks import VectorBlock, empty_result, top_k

Metric = Literal["ip", "l2"]

CATALOG = -1  # user_id used for catalog vectors (items of the tenant, not owned by a user)

_CURRENT = "CURRENT"  # pointer file naming the live snapshot folder; replacing it commits a save
_SNAPSHOT_PREFIX = "snap-"
_FAISS_FILE = "catalog.faiss"
_MANIFEST_FILE = "manifest.json"
_MIN_POINTS_PER_LIST = 39  # faiss k-means wants at least this many training points per list


@dataclass(frozen=True)
class AnnConfig:
    """How the catalog's approximate (IVF-Flat) search is built and queried.

    The defaults were picked with ``unipgen.bench.vectors`` on clustered
    384-dim data (2 cores, queries on one thread): recall@10 0.96 / p99 0.9 ms at
    100k vectors and 0.986 / p99 2.4 ms at 1M (2000 lists, ~50 s to build). Twice
    the lists is ~25% faster at equal recall but triples the k-means time.
    """

    min_train_size: int = 20_000  # catalog size from which global search uses IVF; below, exact
    nlist: int | None = None  # IVF lists; None = nlist_per_sqrt * sqrt(catalog size)
    nprobe: int = 32  # lists scanned per query: the recall / latency knob
    nlist_per_sqrt: float = 2.0  # auto nlist factor (2.0 -> 2000 lists at 1M vectors)
    max_nlist: int = 16_384  # cap of the auto nlist
    train_per_list: int = 40  # k-means training sample = this * nlist vectors (faiss wants >= 39)
    retrain_growth: float = 4.0  # retrain once the catalog grew/shrank this factor since training
    seed: int = 0  # seed of the training sample

    def __post_init__(self) -> None:
        if self.min_train_size < 1:
            raise ValueError(f"min_train_size must be >= 1, got {self.min_train_size}")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be >= 1 or None, got {self.nlist}")
        if self.nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {self.nprobe}")
        if self.train_per_list < _MIN_POINTS_PER_LIST:
            raise ValueError(
                f"train_per_list must be >= {_MIN_POINTS_PER_LIST}, got {self.train_per_list}"
            )
        if self.retrain_growth <= 1.0:
            raise ValueError(f"retrain_growth must be > 1, got {self.retrain_growth}")

    def nlist_for(self, n: int) -> int:
        """Number of IVF lists for a catalog of ``n`` vectors.

        Clamped so each list gets at least 39 training points (fewer makes k-means
        degenerate and faiss warn).
        """
        wanted = self.nlist or min(self.max_nlist, round(self.nlist_per_sqrt * math.sqrt(n)))
        return max(1, min(wanted, n // _MIN_POINTS_PER_LIST))


class VectorIndex:
    """Vectors of one (tenant, space): exact per-user search and ANN search over the catalog.

    Catalog vectors are held twice once the IVF index is trained (a contiguous
    matrix for exact search and saving, and the IVF's inverted lists).
    """

    def __init__(self, dim: int, metric: Metric = "ip", ann: AnnConfig = AnnConfig()) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
        self._dim = dim
        self._metric: Metric = metric
        self._ann = ann
        self._blocks: dict[int, VectorBlock] = {}  # owner (user id or CATALOG) -> its vectors
        self._owner: dict[int, int] = {}  # vector id -> owner
        self._ivf: Any = None  # faiss IndexIVFFlat over the catalog, or None while search is exact
        self._trained_on = 0  # catalog size when the IVF was trained
        self._catalog_order: np.ndarray | None = None  # argsort of the catalog's ids (`catalog_vectors`)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def metric(self) -> Metric:
        """Either "ip" (inner product, larger is better) or "l2" (squared distance, smaller is better)."""
        return self._metric

    @property
    def ann(self) -> AnnConfig:
        """The ANN configuration."""
        return self._ann

    @property
    def ann_params(self) -> dict[str, Any] | None:
        """Parameters of the live IVF index (type, nlist, nprobe, trained_on), or None while exact."""
        if self._ivf is None:
            return None
        return {
            "index_type": "IVFFlat",
            "nlist": int(self._ivf.nlist),
            "nprobe": int(self._ivf.nprobe),
            "trained_on": self._trained_on,
        }

    # ----- writes -----

    def add(self, ids: np.ndarray, user_ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors with their unique ids (>= 0) and owners (a user id, or CATALOG).

        Raises ValueError naming the problem (wrong shape or dim, mismatched lengths,
        duplicate or negative ids, NaN/inf); nothing is added then.
        """
        ids, user_ids, vectors = self._validated_batch(ids, user_ids, vectors)
        order = np.argsort(user_ids, kind="stable")  # stable: each user keeps the given row order
        owners, starts = np.unique(user_ids[order], return_index=True)
        for owner, rows in zip(owners.tolist(), np.split(order, starts[1:])):
            self._append(owner, ids[rows], vectors[rows])
        self._owner.update(zip(ids.tolist(), user_ids.tolist()))

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id (unknown ids are ignored); return how many were removed."""
        by_owner: dict[int, list[int]] = {}
        for vid in np.unique(np.asarray(ids, dtype=np.int64)).tolist():
            owner = self._owner.pop(vid, None)
            if owner is not None:
                by_owner.setdefault(owner, []).append(vid)
        for owner, owned in by_owner.items():
            self._remove_rows(owner, np.array(owned, dtype=np.int64))
        return sum(len(owned) for owned in by_owner.values())

    def remove_user(self, user_id: int) -> int:
        """Remove all vectors of ``user_id`` (CATALOG clears the catalog); return how many."""
        block = self._blocks.pop(user_id, None)
        if block is None:
            return 0
        _, ids, _ = block.live()
        for vid in ids.tolist():
            del self._owner[vid]
        if user_id == CATALOG:
            self._ivf, self._trained_on, self._catalog_order = None, 0, None
        return len(ids)

    # ----- reads -----

    def search_user(self, user_id: int, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` over only ``user_id``'s vectors: (ids int64, scores float32), best first.

        Fewer than ``k`` results if the user has fewer vectors; empty if none.
        """
        q = self._validated_query(query, k)
        block = self._blocks.get(user_id)
        if block is None or user_id == CATALOG:
            return empty_result()
        return self._exact(block, q, k)

    def search_global(
        self, query: np.ndarray, k: int, *, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` over catalog vectors only: (ids int64, scores float32), best first.

        Approximate (IVF) once the catalog has ``ann.min_train_size`` vectors, exact
        below that or with ``exact=True``. The first call after the catalog crossed
        that size (or grew or shrank ``ann.retrain_growth`` times from the trained
        size) trains the IVF index first: seconds to a minute or two at 1M vectors.
        """
        q = self._validated_query(query, k)
        block = self._blocks.get(CATALOG)
        if block is None:
            return empty_result()
        if exact:
            return self._exact(block, q, k)
        self._refresh_ann()
        if self._ivf is None:
            return self._exact(block, q, k)
        scores, ids = self._ivf.search(q[None, :], k)
        found = ids[0] >= 0  # faiss pads missing results with id -1
        return ids[0][found], scores[0][found]

    def catalog_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The catalog vectors of `ids` (rows in that order); ids not in the catalog give NaN
        rows. One sort of the catalog's ids per call: ~1 ms at 100k vectors, no row reads."""
        wanted = np.asarray(ids, dtype=np.int64)
        block = self._blocks.get(CATALOG)
        out = np.full((len(wanted), self._dim), np.nan, dtype=np.float32)
        if block is None or not len(wanted):
            return out
        vectors, held, _ = block.live()
        if self._catalog_order is None:  # sorted once per change of the catalog, not per call
            self._catalog_order = np.argsort(held, kind="stable")
        order = self._catalog_order
        at = np.minimum(np.searchsorted(held, wanted, sorter=order), len(held) - 1)
        rows = order[at]
        found = held[rows] == wanted
        out[found] = vectors[rows[found]]
        return out

    def user_ids(self) -> set[int]:
        """Users owning at least one vector (CATALOG excluded)."""
        return {owner for owner in self._blocks if owner != CATALOG}

    def ids(self) -> np.ndarray:
        """All vector ids (user and catalog), sorted, int64."""
        return np.sort(np.fromiter(self._owner, dtype=np.int64, count=len(self._owner)))

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, vector_id: object) -> bool:
        return vector_id in self._owner

    # ----- persistence -----

    def save(self, directory: Path, meta: dict[str, Any]) -> None:
        """Persist everything, plus the caller's JSON-serialisable ``meta``, into ``directory``.

        Atomic: a new snapshot folder is written, then the ``CURRENT`` pointer is
        replaced (``os.replace``) and older snapshots are deleted. A crash leaves
        the previous save readable. Retrains the IVF first if it is due.
        """
        directory = Path(directory)
        self._refresh_ann()
        manifest = json.dumps(self._manifest(meta))
        directory.mkdir(parents=True, exist_ok=True)
        snapshot = _SNAPSHOT_PREFIX + uuid.uuid4().hex
        self._write_snapshot(directory / snapshot, manifest)
        _write_atomically(directory / _CURRENT, snapshot)
        _remove_stale_snapshots(directory, keep=snapshot)

    @classmethod
    def load(cls, directory: Path) -> tuple[VectorIndex, dict[str, Any]]:
        """Load what ``save`` wrote: (index, meta). FileNotFoundError if nothing was saved there."""
        import faiss

        directory = Path(directory)
        snapshot = directory / (directory / _CURRENT).read_text().strip()
        manifest = json.loads((snapshot / _MANIFEST_FILE).read_text())
        index = cls(manifest["dim"], manifest["metric"], AnnConfig(**manifest["ann"]))
        index.add(
            np.load(snapshot / "ids.npy"),
            np.load(snapshot / "user_ids.npy"),
            np.load(snapshot / "vectors.npy"),
        )
        if manifest["trained_on"]:
            index._ivf = faiss.read_index(str(snapshot / _FAISS_FILE))
            index._trained_on = manifest["trained_on"]
        return index, manifest["meta"]

    # ----- internals -----

    def _validated_batch(
        self, ids: np.ndarray, user_ids: np.ndarray, vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = _as_int64(ids, "ids")
        user_ids = _as_int64(user_ids, "user_ids")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise ValueError(f"vectors must have shape (n, {self._dim}), got {vectors.shape}")
        if not len(ids) == len(user_ids) == len(vectors):
            raise ValueError(
                f"mismatched lengths: {len(ids)} ids, {len(user_ids)} user_ids, {len(vectors)} vectors"
            )
        if len(ids) and ids.min() < 0:
            raise ValueError("ids must be >= 0 (faiss uses -1 for 'no result')")
        if len(user_ids) and user_ids.min() < CATALOG:
            raise ValueError(f"user_ids must be >= 0, or CATALOG ({CATALOG}) for catalog vectors")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate ids within the batch")
        present = [vid for vid in ids.tolist() if vid in self._owner]
        if present:
            raise ValueError(
                f"duplicate ids: {len(present)} already in the index, e.g. {present[0]}"
            )
        if not np.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or inf")
        return ids, user_ids, vectors

    def _validated_query(self, query: np.ndarray, k: int) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32)
        if q.shape not in ((self._dim,), (1, self._dim)):
            raise ValueError(
                f"query must have shape ({self._dim},) or (1, {self._dim}), got {q.shape}"
            )
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not np.isfinite(q).all():
            raise ValueError("query contains NaN or inf")
        return np.ascontiguousarray(q.reshape(self._dim))

    def _append(self, owner: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        if owner == CATALOG:
            self._catalog_order = None
        block = self._blocks.get(owner)
        if block is None:
            block = self._blocks[owner] = VectorBlock(self._dim)
        block.append(ids, vectors)
        if owner == CATALOG and self._ivf is not None:
            self._ivf.add_with_ids(vectors, ids)

    def _remove_rows(self, owner: int, ids: np.ndarray) -> None:
        if owner == CATALOG:
            self._catalog_order = None
        block = self._blocks[owner]
        block.remove(ids)
        if block.size == 0:
            del self._blocks[owner]
        if owner == CATALOG and self._ivf is not None:
            self._ivf.remove_ids(ids)

    def _exact(self, block: VectorBlock, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors, ids, sqnorms = block.live()
        dots = vectors @ q
        if self._metric == "ip":
            return top_k(dots, ids, k, smaller_is_better=False)
        # |x - q|^2 = |x|^2 - 2 x.q + |q|^2; clamp rounding below zero
        distances = np.maximum(sqnorms - 2.0 * dots + q @ q, 0.0)
        return top_k(distances, ids, k, smaller_is_better=True)

    def _refresh_ann(self) -> None:
        """Drop, train or retrain the IVF index as the catalog size now requires."""
        block = self._blocks.get(CATALOG)
        n = block.size if block is not None else 0
        if n < self._ann.min_train_size:
            self._ivf, self._trained_on = None, 0
        elif self._ivf is None or not self._trained_size_fits(n):
            assert block is not None  # n > 0: the catalog block exists
            vectors, ids, _ = block.live()
            self._ivf = self._build_ivf(vectors, ids)
            self._trained_on = n

    def _trained_size_fits(self, n: int) -> bool:
        """Whether the IVF's lists still suit ``n`` vectors (within retrain_growth of the trained size)."""
        growth = self._ann.retrain_growth
        return self._trained_on / growth <= n <= self._trained_on * growth

    def _build_ivf(self, vectors: np.ndarray, ids: np.ndarray) -> Any:
        """Train an IVF-Flat index on a sample of ``vectors`` and add them all."""
        import faiss

        n = len(ids)
        nlist = self._ann.nlist_for(n)
        quantizer: faiss.IndexFlat
        if self._metric == "ip":
            quantizer, metric = faiss.IndexFlatIP(self._dim), faiss.METRIC_INNER_PRODUCT
        else:
            quantizer, metric = faiss.IndexFlatL2(self._dim), faiss.METRIC_L2
        ivf = faiss.IndexIVFFlat(quantizer, self._dim, nlist, metric)
        rng = np.random.default_rng(self._ann.seed)
        sample = np.sort(
            rng.choice(n, size=min(n, self._ann.train_per_list * nlist), replace=False)
        )
        ivf.train(vectors[sample])
        ivf.add_with_ids(vectors, ids)
        ivf.nprobe = min(self._ann.nprobe, nlist)
        return ivf

    def _manifest(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "dim": self._dim,
            "metric": self._metric,
            "ann": asdict(self._ann),
            "trained_on": self._trained_on if self._ivf is not None else 0,
            "meta": meta,
        }

    def _write_snapshot(self, folder: Path, manifest: str) -> None:
        import faiss

        folder.mkdir()
        vectors, ids, owners = self._columns()
        _save_npy(folder / "vectors.npy", vectors)
        _save_npy(folder / "ids.npy", ids)
        _save_npy(folder / "user_ids.npy", owners)
        if self._ivf is not None:
            faiss.write_index(self._ivf, str(folder / _FAISS_FILE))
            _fsync(folder / _FAISS_FILE)
        (folder / _MANIFEST_FILE).write_text(manifest)
        _fsync(folder / _MANIFEST_FILE)
        _fsync(folder)

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (vectors, ids, owners) as aligned arrays, owner by owner in insertion order."""
        vectors = [np.empty((0, self._dim), dtype=np.float32)]
        ids = [np.empty(0, dtype=np.int64)]
        owners = [np.empty(0, dtype=np.int64)]
        for owner, block in self._blocks.items():
            block_vectors, block_ids, _ = block.live()
            vectors.append(block_vectors)
            ids.append(block_ids)
            owners.append(np.full(block.size, owner, dtype=np.int64))
        return np.concatenate(vectors), np.concatenate(ids), np.concatenate(owners)


def _as_int64(values: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {array.shape}")
    if len(array) and array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _save_npy(path: Path, array: np.ndarray) -> None:
    np.save(path, array)
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk so a committed snapshot survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _remove_stale_snapshots(directory: Path, keep: str) -> None:
    """Delete snapshots (and temp pointer files) other than ``keep``, left by earlier saves or crashes."""
    for entry in directory.iterdir():
        if entry.name.startswith(_SNAPSHOT_PREFIX) and entry.name != keep:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith(f"{_CURRENT}.tmp-"):
            entry.unlink(missing_ok=True)
