"""`store.keys`: API keys of the HTTP service: each one lets its holder act as one tenant.

A key reads ``upg_<prefix>_<secret>``: `prefix` (8 lowercase hex characters) is its public id,
shown in listings and used to revoke it; `secret` is 32 random bytes (URL-safe base64). The
store keeps the sha256 of the whole key and the prefix, never the key: the plaintext is handed
out once, by `create_api_key`. A random 256-bit secret needs no slow password hash, and a plain
hash lets `authenticate` find the key with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from unipgen.errors import InvalidInputError, NotFoundError, UnauthorizedError
from unipgen.memory.lookups import tenant_id_of
from unipgen.memory.models import ApiKey, Tenant, utcnow
from unipgen.memory.transaction import Database

#: How stale `last_used_at` may get: updating it on every request would make each read a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_KEY_FORMAT = re.compile(r"upg_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKeyRecord:
    """What the store tells about a key: never its secret."""

    tenant: str
    prefix: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewApiKey:
    """A key just created: its record and the plaintext `key`, which cannot be shown again."""

    record: ApiKeyRecord
    key: str


class ApiKeys:
    """`store.keys`: API keys of the HTTP service: created (the plaintext shown once), checked, listed, revoked."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_api_key(self, tenant: str, name: str) -> NewApiKey:
        """A new key for `tenant`; `name` says what it is for (a service, a person)."""
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidInputError("API key name must be a non-empty string of at most 255 characters")
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            prefix = _new_prefix(w.session)
            key = f"upg_{prefix}_{secrets.token_urlsafe(32)}"
            row = ApiKey(tenant_id=tenant_id, prefix=prefix, key_hash=_hash(key), name=name, created_at=utcnow())
            w.session.add(row)
            w.session.flush()
            return NewApiKey(record=_record(row, tenant), key=key)

    def authenticate(self, key: str) -> ApiKeyRecord:
        """The record of a valid, unrevoked `key`; `UnauthorizedError` otherwise.

        Records the use in `last_used_at`, at most once per `LAST_USED_RESOLUTION`.
        """
        if not isinstance(key, str) or _KEY_FORMAT.fullmatch(key) is None:
            raise UnauthorizedError("invalid API key")
        with self.db.session() as session:
            found = session.execute(select(ApiKey, Tenant.key).join(Tenant, Tenant.id == ApiKey.tenant_id)
                                    .where(ApiKey.key_hash == _hash(key))).first()
        if found is None:
            raise UnauthorizedError("invalid API key")
        row, tenant = found
        if row.revoked_at is not None:
            raise UnauthorizedError(f"API key {row.prefix!r} was revoked")
        now = utcnow()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            self._touch(row.id, now)
            row.last_used_at = now
        return _record(row, tenant)

    def _touch(self, key_id: int, now: datetime) -> None:
        """Set `last_used_at`; conditional, so concurrent requests write it once per minute."""
        with self.db.write() as w:
            w.session.execute(update(ApiKey).where(
                ApiKey.id == key_id,
                or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - LAST_USED_RESOLUTION),
            ).values(last_used_at=now))

    def list_api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        """The tenant's keys, revoked ones included, oldest first."""
        with self.db.session() as session:
            rows = session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id_of(session, tenant))
                                   .order_by(ApiKey.created_at, ApiKey.id))
            return [_record(row, tenant) for row in rows]

    def revoke_api_key(self, tenant: str, prefix: str) -> ApiKeyRecord:
        """Revoke the tenant's key `prefix` at once. Revoking it again changes nothing."""
        with self.db.write() as w:
            row = w.session.scalar(select(ApiKey).where(
                ApiKey.tenant_id == tenant_id_of(w.session, tenant), ApiKey.prefix == prefix))
            if row is None:  # another tenant's key is unknown here too: prefixes are not secret
                raise NotFoundError(f"unknown API key {prefix!r} in tenant {tenant!r}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            return _record(row, tenant)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_prefix(session: Session) -> str:
    """A prefix no key has yet (the unique index still guards against a concurrent twin)."""
    while True:
        prefix = secrets.token_hex(4)
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            return prefix


def _record(row: ApiKey, tenant: str) -> ApiKeyRecord:
    return ApiKeyRecord(tenant=tenant, prefix=row.prefix, name=row.name, created_at=row.created_at,
                        revoked_at=row.revoked_at, last_used_at=row.last_used_at)


__all__ = ["LAST_USED_RESOLUTION", "ApiKeyRecord", "ApiKeys", "NewApiKey"]
