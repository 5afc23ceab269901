"""Embeddings: how every part stores vectors in a space and how a vector search reads them.

A space is per tenant; the first vectors written to it fix its dimension and metric, and each
write bumps its `generation` so every process's in-memory index (`unipgen.memory.indexes`) knows
to fold the change in. The writes happen inside the caller's `Transaction`; the index is updated
after the commit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import BindParameter, Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.indexes import IndexManager
from unipgen.memory.lookups import OWNER_MODELS
from unipgen.memory.models import Embedding, EmbeddingSpace, Tenant, User
from unipgen.memory.transaction import Transaction


@dataclass(frozen=True)
class Hit:
    """One search result: the memory item a vector belongs to, and its score under the space's metric."""

    kind: str
    key: str
    score: float


def put_embeddings(
    w: Transaction, indexes: IndexManager, tenant_id: int, space: str,
    rows: Sequence[tuple[int, int | None, np.ndarray]], kind: str, *, metric: str = "ip",
) -> None:
    """Store (owner id, user id, vector) rows of `kind` in `space`, replacing the vectors those
    owners had there, inside `w`; the index follows once `w` commits."""
    matrix = _as_matrix([r[2] for r in rows], space)
    space_row = _space(w.session, tenant_id, space, matrix.shape[1], metric)
    before = space_row.generation
    owner_ids = [r[0] for r in rows]
    removed = np.array(list(w.session.scalars(
        select(Embedding.id).where(Embedding.tenant_id == tenant_id, Embedding.space == space,
                                   Embedding.owner_kind == kind, Embedding.owner_id.in_(owner_ids))
    )), dtype=np.int64)
    if len(removed):
        w.session.execute(delete(Embedding).where(Embedding.id.in_(removed.tolist())))
    values = [{"tenant_id": tenant_id, "space": space, "user_id": u, "owner_kind": kind, "owner_id": o,
               "vector": matrix[i].tobytes()} for i, (o, u, _) in enumerate(rows)]
    # One multi-row INSERT per batch with the new ids in the rows' order (not one per vector).
    inserted = w.session.scalars(insert(Embedding).returning(Embedding.id, sort_by_parameter_order=True), values)
    ids = np.array(list(inserted), dtype=np.int64)
    w.analyze_after_commit("embeddings", len(values))
    space_row.generation = before + 1
    w.session.flush()
    users = np.array([-1 if u is None else u for _, u, _ in rows], dtype=np.int64)
    w.after_commit.append(lambda: indexes.apply(
        tenant_id, space, before, before + 1, added=(ids, users, matrix), removed=removed))


def search(
    engine: Engine, indexes: IndexManager, tenant: str, space: str, query: np.ndarray, k: int, user: str | None,
) -> list[Hit]:
    """Top-k memory items nearest `query` (see `Content.search`): a few Core queries on one
    connection, no ORM objects, since it is a hot path."""
    with engine.connect() as conn:
        tenant_id, user_id, dim, generation = _search_target(conn, tenant, user, space)
        query = _as_matrix([query], space)[0]
        if query.shape[0] != dim:
            raise InvalidInputError(f"query has dimension {query.shape[0]}, space {space!r} has {dim}")
        index = indexes.get(tenant_id, space, generation)
        if user_id is None:
            ids, scores = index.search_global(query, k)
        else:
            ids, scores = index.search_user(user_id, query, k)
        return _hits(conn, ids, scores)


@functools.cache
def lookup_statements() -> dict[str, Any]:
    """The search path's statements, built once with bind parameters (building costs more than running)."""
    def of_space(column: Any) -> Any:
        return select(column).where(EmbeddingSpace.tenant_id == Tenant.id,
                                    EmbeddingSpace.name == bindparam("space")).scalar_subquery()

    user_id = select(User.id).where(User.tenant_id == Tenant.id, User.key == bindparam("user")).scalar_subquery()
    ids: BindParameter[list[int]] = bindparam("ids", expanding=True)
    statements = {
        "target": select(Tenant.id, user_id, of_space(EmbeddingSpace.dim), of_space(EmbeddingSpace.generation))
        .where(Tenant.key == bindparam("tenant")),
        "owners": select(Embedding.id, Embedding.owner_kind, Embedding.owner_id).where(Embedding.id.in_(ids)),
    }
    for kind, (model, _) in OWNER_MODELS.items():
        statements[kind] = select(model.id, model.key).where(model.id.in_(ids))
    return statements


def _search_target(conn: Connection, tenant: str, user: str | None, space: str) -> tuple[int, int | None, int, int]:
    """Tenant id, user id, space dimension and generation in one query; unknown ones are named."""
    row = conn.execute(lookup_statements()["target"], {"tenant": tenant, "user": user, "space": space}).first()
    if row is None:
        raise NotFoundError(f"unknown tenant {tenant!r}")
    if user is not None and row[1] is None:
        raise NotFoundError(f"unknown user {user!r} in tenant {tenant!r}")
    if row[2] is None:
        raise NotFoundError(f"no embedding space {space!r} in tenant {tenant!r}")
    return row[0], row[1], row[2], row[3]


def _hits(conn: Connection, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
    """Map embedding ids to the (kind, key) of the items they were derived from."""
    statements = lookup_statements()
    owners = {e: (kind, o) for e, kind, o in conn.execute(statements["owners"], {"ids": ids.tolist()})}
    keys: dict[tuple[str, int], str] = {}
    for kind in {kind for kind, _ in owners.values()}:
        wanted = [owner_id for k, owner_id in owners.values() if k == kind]
        keys.update({(kind, o): key for o, key in conn.execute(statements[kind], {"ids": wanted})})
    return [Hit(owners[i][0], keys[owners[i]], float(s)) for i, s in zip(ids.tolist(), scores.tolist())
            if i in owners]


def _as_matrix(vectors: Sequence[np.ndarray], space: str) -> np.ndarray:
    """The vectors as one finite float32 matrix, or an `InvalidInputError` naming the space."""
    try:
        matrix = np.asarray(np.stack([np.asarray(v, dtype=np.float32).ravel() for v in vectors]))
    except ValueError as exc:
        raise InvalidInputError(f"vectors for space {space!r} differ in dimension: {exc}") from None
    if not np.isfinite(matrix).all():
        raise InvalidInputError(f"vectors for space {space!r} contain NaN or infinity")
    return matrix


def _space(session: Session, tenant_id: int, name: str, dim: int, metric: str) -> EmbeddingSpace:
    if metric not in ("ip", "l2"):
        raise InvalidInputError(f"unknown metric {metric!r}; expected 'ip' or 'l2'")
    row = session.get(EmbeddingSpace, (tenant_id, name), with_for_update=True)
    if row is None:
        row = EmbeddingSpace(tenant_id=tenant_id, name=name, dim=dim, metric=metric, generation=0)
        session.add(row)
    elif row.dim != dim:
        raise InvalidInputError(f"embedding has dimension {dim}, but space {name!r} holds {row.dim}-d vectors")
    elif row.metric != metric:
        raise InvalidInputError(f"space {name!r} uses metric {row.metric!r}, not {metric!r}")
    return row


def bump_generation(session: Session, tenant_id: int, spaces: Sequence[str]) -> dict[str, int]:
    """Mark spaces changed (inside the caller's transaction); returns each one's generation before."""
    before = {}
    for name in spaces:
        row = session.get(EmbeddingSpace, (tenant_id, name), with_for_update=True)
        if row is not None:
            before[name] = row.generation
            session.execute(update(EmbeddingSpace).where(EmbeddingSpace.tenant_id == tenant_id,
                            EmbeddingSpace.name == name).values(generation=row.generation + 1))
    return before
