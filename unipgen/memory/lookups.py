"""Resolve public ids (tenant, user keys) to row ids, with a `NotFoundError` naming what is unknown."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.models import Tenant, User


def check_key(key: str, what: str) -> None:
    if not isinstance(key, str) or not key.strip() or len(key) > 255:
        raise InvalidInputError(f"{what} id must be a non-empty string of at most 255 characters")


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
