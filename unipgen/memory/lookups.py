"""Resolve public ids (tenant, user, item keys) to row ids, with a `NotFoundError` naming what
is unknown, for every part of the store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Insert, select
from sqlalchemy.orm import Session

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.models import (
    Artifact,
    Document,
    Face,
    Item,
    Lineage,
    Subject,
    Tenant,
    User,
    VoiceSample,
    utcnow,
)
from unipgen.schema.rules import check_public_id

#: Row model of each kind of memory item, and whether its key is unique per user or per tenant.
OWNER_MODELS: dict[str, tuple[Any, bool]] = {
    "item": (Item, False),
    "artifact": (Artifact, False),
    "document": (Document, True),
    "face": (Face, True),
    "subject": (Subject, True),
    "voice": (VoiceSample, True),
}
#: Keys per IN list: stays under SQLite's bound-parameter limit (999 before SQLite 3.32).
_CHUNK = 900


def check_key(key: str, what: str) -> None:
    """Refuse an id that breaks the public id rule (`unipgen.schema.rules`)."""
    check_public_id(key, what)


def tenant_id_of(session: Session, tenant: str) -> int:
    tenant_id = session.scalar(select(Tenant.id).where(Tenant.key == tenant))
    if tenant_id is None:
        raise NotFoundError(f"unknown tenant {tenant!r}")
    return tenant_id


def user_id_of(session: Session, tenant: str, user: str) -> int:
    user_id = session.scalar(
        select(User.id).join(Tenant).where(Tenant.key == tenant, User.key == user)
    )
    if user_id is None:
        tenant_id_of(session, tenant)  # names the tenant when that is what is unknown
        raise NotFoundError(f"unknown user {user!r} in tenant {tenant!r}")
    return user_id


def insert_missing_users(session: Session, tenant_id: int, keys: list[str]) -> int:
    """Create the users of `keys` that do not exist yet; returns how many were new.

    INSERT ... ON CONFLICT DO NOTHING, not read-then-insert: two requests creating the same
    new user at once would otherwise both insert it, and one would fail on the unique key.
    """
    if not keys:
        return 0
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover  (unipgen supports SQLite and PostgreSQL)
        raise NotImplementedError(f"no upsert for database {dialect!r}")
    now, created = utcnow(), 0
    for start in range(0, len(keys), 5000):  # 3 parameters a row: under SQLite's 32766 per statement
        rows = [{"tenant_id": tenant_id, "key": key, "created_at": now} for key in keys[start : start + 5000]]
        created += max(session.connection().execute(_insert_new_users(dialect, rows)).rowcount, 0)  # exact count
    return created


def _insert_new_users(dialect: str, rows: list[dict[str, Any]]) -> Insert:
    """INSERT of `rows` into users that skips the keys already there, in `dialect`'s spelling."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert(User).values(rows).on_conflict_do_nothing(index_elements=["tenant_id", "key"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(User).values(rows).on_conflict_do_nothing(index_elements=["tenant_id", "key"])


def tenant_of(session: Session, user_id: int) -> int:
    """The tenant row id of a user row."""
    return session.execute(select(User.tenant_id).where(User.id == user_id)).scalar_one()


def owner_users(session: Session, kind: str, owner_ids: Sequence[int]) -> dict[int, int | None]:
    """The user each memory item of `kind` belongs to, by row id (None for catalog items; a
    user's own vector belongs to the user). One query per 900 ids, not one per item."""
    if kind == "item":
        return dict.fromkeys(owner_ids)
    if kind == "user":
        return {row_id: row_id for row_id in owner_ids}
    model = OWNER_MODELS[kind][0]
    return _pairs_in(session, model.id, model.user_id, owner_ids)


def _pairs_in(session: Session, key_column: Any, value_column: Any, keys: Iterable[Any],
              *where: Any) -> dict[Any, Any]:
    """{key: value} of the rows (matching `where`) whose `key_column` is one of `keys`, asked
    `_CHUNK` keys per query."""
    found: dict[Any, Any] = {}
    ordered = sorted(set(keys))
    for start in range(0, len(ordered), _CHUNK):
        query = select(key_column, value_column).where(*where, key_column.in_(ordered[start : start + _CHUNK]))
        found.update({key: value for key, value in session.execute(query)})
    return found


def existing_keys(session: Session, model: Any, tenant_id: int, keys: Sequence[str]) -> set[str]:
    """The keys among `keys` that rows of `model` (items, users) already have in the tenant."""
    return set(ids_by_key(session, model, tenant_id, set(keys), None, None))


def ids_by_key(
    session: Session, model: Any, tenant_id: int, keys: set[str], what: str | None, tenant: str | None
) -> dict[str, int]:
    """Row ids of `keys` in the tenant; with `what` set, an unknown key is a `NotFoundError`."""
    found: dict[str, int] = _pairs_in(session, model.key, model.id, keys, model.tenant_id == tenant_id)
    if what is not None and len(found) != len(keys):
        missing = sorted(keys - found.keys())
        raise NotFoundError(
            f"unknown {what} {missing[0]!r} in tenant {tenant!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return found


def resolve(
    session: Session, tenant: str, tenant_id: int, user_id: int | None, kind: str, key: str,
) -> tuple[str, int]:
    """(kind, row id) of a memory item named by kind and public key (``user`` names a user)."""
    if kind == "user":
        return kind, user_id_of(session, tenant, key)
    if kind not in OWNER_MODELS:
        raise InvalidInputError(f"unknown kind {kind!r}; expected 'user' or one of {sorted(OWNER_MODELS)}")
    model, per_user = OWNER_MODELS[kind]
    if per_user and user_id is None:
        raise InvalidInputError(f"{kind} {key!r} belongs to a user: name the user")
    scope = model.user_id == user_id if per_user else model.tenant_id == tenant_id
    row_id = session.scalar(select(model.id).where(scope, model.key == key))
    if row_id is None:
        raise NotFoundError(f"unknown {kind} {key!r}")
    return kind, row_id


def resolve_all(
    session: Session, tenant: str, tenant_id: int, user_id: int | None, pairs: Sequence[tuple[str, str]],
) -> list[tuple[str, int]]:
    """`resolve` for many (kind, key) pairs: one query per kind, not per pair."""
    by_kind: dict[str, set[str]] = {}
    for kind, key in pairs:
        by_kind.setdefault(kind, set()).add(key)
    found: dict[tuple[str, str], int] = {}
    for kind, keys in by_kind.items():
        if kind == "user" or kind not in OWNER_MODELS or len(keys) == 1:
            found.update({(kind, key): resolve(session, tenant, tenant_id, user_id, kind, key)[1] for key in keys})
            continue
        model, per_user = OWNER_MODELS[kind]
        if per_user and user_id is None:
            raise InvalidInputError(f"{kind} {min(keys)!r} belongs to a user: name the user")
        scope = model.user_id == user_id if per_user else model.tenant_id == tenant_id
        ids: dict[str, int] = _pairs_in(session, model.key, model.id, keys, scope)
        missing = sorted(keys - ids.keys())
        if missing:
            raise NotFoundError(f"unknown {kind} {missing[0]!r}")
        found.update({(kind, key): row_id for key, row_id in ids.items()})
    return [(kind, found[(kind, key)]) for kind, key in pairs]


def add_lineage(
    session: Session, tenant: str, user_id: int | None, derived_kind: str, derived_ids: Mapping[str, int],
    derived_from: Mapping[str, Sequence[tuple[str, str]]],
) -> None:
    """Lineage edges ``derived <- source`` for rows just written (`derived_ids`: key -> row id):
    `derived_from` names each one's sources as (kind, key); user-owned kinds resolve in `user_id`."""
    tenant_id = tenant_id_of(session, tenant)
    for key, sources in derived_from.items():
        if key not in derived_ids:
            raise InvalidInputError(f"lineage given for {derived_kind} {key!r}, not in the request")
        found = resolve_all(session, tenant, tenant_id, user_id, list(sources))
        session.add_all(Lineage(tenant_id=tenant_id, derived_kind=derived_kind, derived_id=derived_ids[key],
                                source_kind=kind, source_id=i) for kind, i in dict.fromkeys(found))
