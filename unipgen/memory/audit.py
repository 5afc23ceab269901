"""`store.audit`: the audit log: who read or changed what, per tenant, for compliance.

An entry holds ids only (the actor, the action, the user's and the object's public ids) and a
small `detail` the caller chooses; it names data, never copies it. The user id is a plain
string, not a foreign key, so an entry outlives `forget_user`: the record that someone read a
user's biometric data must survive the deletion of that data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from unipgen.errors import InvalidInputError
from unipgen.memory.lookups import tenant_id_of
from unipgen.memory.models import AuditEntry, utcnow
from unipgen.memory.transaction import Database


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the audit log."""

    tenant: str
    ts: datetime
    actor: str
    action: str
    user: str | None
    object_kind: str | None
    object_key: str | None
    detail: dict[str, Any] | None


class Audit:
    """`store.audit`: the audit log: entries appended, and read back newest first."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record_audit(self, tenant: str, actor: str, action: str, *, user: str | None = None,
                     object_kind: str | None = None, object_key: str | None = None,
                     detail: dict[str, Any] | None = None) -> None:
        """Append an entry: `actor` (an API key prefix, ``admin``) did `action` (``face.read``)
        on `user`'s `object_kind` `object_key`. The user need not exist (a refused read is
        worth recording too)."""
        entry = audit_entry(0, actor, action, user=user, object_kind=object_kind, object_key=object_key, detail=detail)
        with self.db.write() as w:
            entry.tenant_id = tenant_id_of(w.session, tenant)
            w.session.add(entry)

    def audit_log(self, tenant: str, *, user: str | None = None, action: str | None = None,
                  limit: int = 100) -> list[AuditRecord]:
        """The tenant's entries, newest first, optionally of one user and/or one action."""
        if limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {limit}")
        with self.db.session() as session:
            query = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id_of(session, tenant))
            if user is not None:
                query = query.where(AuditEntry.user_key == user)
            if action is not None:
                query = query.where(AuditEntry.action == action)
            rows = session.scalars(query.order_by(AuditEntry.ts.desc(), AuditEntry.id.desc()).limit(limit))
            return [AuditRecord(tenant=tenant, ts=r.ts, actor=r.actor, action=r.action, user=r.user_key,
                                object_kind=r.object_kind, object_key=r.object_key, detail=r.detail)
                    for r in rows]


def audit_entry(tenant_id: int, actor: str, action: str, *, user: str | None = None,
                object_kind: str | None = None, object_key: str | None = None,
                detail: dict[str, Any] | None = None) -> AuditEntry:
    """A checked entry, for a part that records one in its own transaction (a training's
    adapter, a change of consent): the record and the change commit together or not at all."""
    _check_name(actor, "audit actor")
    _check_name(action, "audit action")
    if len(action) > 64 or (object_kind is not None and len(object_kind) > 32):
        raise InvalidInputError("audit action is limited to 64 characters and object kind to 32")
    for value, what in ((user, "user"), (object_kind, "object kind"), (object_key, "object")):
        if value is not None:
            _check_name(value, what)
    return AuditEntry(tenant_id=tenant_id, ts=utcnow(), actor=actor, action=action, user_key=user,
                      object_kind=object_kind, object_key=object_key, detail=detail)


def _check_name(value: str, what: str) -> None:
    # Looser than the public id rule on purpose: an entry names what was done, and forgetting
    # a row stored before the rule (an id with a '/') must still be recorded.
    if not isinstance(value, str) or not value.strip() or len(value) > 255:
        raise InvalidInputError(f"{what} must be a non-empty string of at most 255 characters")


__all__ = ["Audit", "AuditRecord", "audit_entry"]
