"""The audit log: newest first, filtered by user and action, and it outlives forget_user."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from tests.helpers import png_bytes
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import AuditEntry


def test_entries_come_newest_first_and_filter(populated: MemoryStore) -> None:
    populated.audit.record_audit("acme", "key:ab12cd34", "face.read", user="alice", object_kind="face", object_key="f1")
    populated.audit.record_audit("acme", "key:ab12cd34", "profile.read", user="bob")
    populated.audit.record_audit("acme", "admin", "face.read", user="bob", object_kind="face", object_key="f9",
                           detail={"status": 404})
    log = populated.audit.audit_log("acme")
    assert [(e.action, e.user) for e in log] == [("face.read", "bob"), ("profile.read", "bob"), ("face.read", "alice")]
    assert log[0].detail == {"status": 404} and log[0].tenant == "acme" and log[0].ts >= log[1].ts >= log[2].ts
    assert [e.object_key for e in populated.audit.audit_log("acme", action="face.read")] == ["f9", "f1"]
    assert [e.action for e in populated.audit.audit_log("acme", user="bob")] == ["face.read", "profile.read"]
    assert [e.object_key for e in populated.audit.audit_log("acme", user="bob", action="face.read")] == ["f9"]
    assert len(populated.audit.audit_log("acme", limit=1)) == 1


def test_the_log_is_per_tenant(populated: MemoryStore) -> None:
    populated.users.create_tenant("globex")
    populated.audit.record_audit("acme", "admin", "user.create", user="alice")
    assert populated.audit.audit_log("globex") == []
    with pytest.raises(NotFoundError, match="unknown tenant 'nope'"):
        populated.audit.record_audit("nope", "admin", "x")
    with pytest.raises(NotFoundError):
        populated.audit.audit_log("nope")


def test_bad_entries_are_refused(populated: MemoryStore) -> None:
    with pytest.raises(InvalidInputError):
        populated.audit.record_audit("acme", "", "face.read")
    with pytest.raises(InvalidInputError):
        populated.audit.record_audit("acme", "admin", "x" * 65)
    with pytest.raises(InvalidInputError):
        populated.audit.audit_log("acme", limit=0)
    assert populated.count_rows(AuditEntry) == 0


def test_an_entry_outlives_forget_user_and_holds_ids_only(populated: MemoryStore) -> None:
    photo = png_bytes("green")
    populated.content.add_face("acme", "alice", "f1", photo, consent=True)
    populated.content.add_document("acme", "alice", "d1", "my secret diary")
    populated.audit.record_audit("acme", "key:ab12cd34", "face.read", user="alice", object_kind="face", object_key="f1")
    report = populated.privacy.forget_user("acme", "alice")
    assert report.residue == [] and "alice" not in populated.users.list_users("acme")
    [entry] = populated.audit.audit_log("acme", user="alice")
    assert (entry.actor, entry.action, entry.object_kind, entry.object_key) == ("key:ab12cd34", "face.read", "face", "f1")
    with populated.engine.connect() as conn:
        row = conn.execute(select(AuditEntry.__table__)).one()
    text = " ".join(str(v) for v in row)
    assert "diary" not in text and hashlib.sha256(photo).hexdigest() not in text  # no content, no blob pointer
    assert set(row._mapping) == {"id", "tenant_id", "ts", "actor", "action", "user_key", "object_kind", "object_key",
                                 "detail"}
    assert row.detail is None
