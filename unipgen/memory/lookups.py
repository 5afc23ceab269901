"""Resolve public ids (tenant, user keys) to row ids, with a `NotFoundError` naming what is unknown."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from unipgen.errors import NotFoundError
from unipgen.memory.models import Tenant, User, utcnow
from unipgen.schema.rules import check_public_id


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
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover  (unipgen supports SQLite and PostgreSQL)
        raise NotImplementedError(f"no upsert for database {dialect!r}")
    now, created = utcnow(), 0
    for start in range(0, len(keys), 5000):  # 3 parameters a row: under SQLite's 32766 per statement
        rows = [{"tenant_id": tenant_id, "key": key, "created_at": now} for key in keys[start : start + 5000]]
        statement = insert(User).values(rows).on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        created += max(session.connection().execute(statement).rowcount, 0)  # one statement: exact count
    return created
