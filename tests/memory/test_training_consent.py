"""Consent to training, apart from consent to storing: recorded per user (audited), required by the
store for an adapter learned from faces or subjects, carried by export and import, and absent
for the users a migration finds (migration 0006). Protected copies of photos are found by what
they protect."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from tests.helpers import png_bytes
from unipgen.errors import ConsentRequiredError, InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.memory.db import alembic_config, make_engine, migrate
from unipgen.memory.models import Artifact, Blob
from unipgen.memory.private import private_dir
from unipgen.settings import Settings


def _rows(store: MemoryStore, model: type) -> int:
    with store.session() as session:
        return session.query(model).count()


def test_consent_is_given_kept_withdrawn_and_audited(populated: MemoryStore) -> None:
    users = populated.users
    assert users.training_consent("acme", "alice").granted is False
    given = users.set_training_consent("acme", "alice", True, actor="k1")
    assert given.granted and given.since is not None
    assert users.set_training_consent("acme", "alice", True).since == given.since  # giving it again keeps the time
    assert users.user_summary("acme", "alice").training_consent_at == given.since
    assert users.training_consent("acme", "bob").granted is False  # per user
    withdrawn = users.set_training_consent("acme", "alice", False, actor="k2")
    assert (withdrawn.granted, withdrawn.since) == (False, None)
    log = populated.audit.audit_log("acme", user="alice")
    assert [(e.actor, e.action) for e in log] == [("k2", "training_consent.withdraw"), ("unipgen", "training_consent.grant"),
                                                  ("k1", "training_consent.grant")]
    with pytest.raises(InvalidInputError, match="true or false"):
        users.set_training_consent("acme", "alice", "yes")  # type: ignore[arg-type]


def test_an_adapter_learned_from_a_subject_needs_consent_and_is_audited(populated: MemoryStore) -> None:
    s = populated
    s.content.add_subject("acme", "alice", "rex", name="Rex", class_noun="dog", images=[png_bytes("red")])
    blobs, artifacts = _rows(s, Blob), _rows(s, Artifact)
    with pytest.raises(ConsentRequiredError, match="'alice' has not consented to training: adapter 'lora' learned "
                                                   "from their subjects") as refused:
        s.artifacts.add_artifact("acme", "lora", kind="adapter", media_type="application/octet-stream", data=b"w1",
                                 user="alice", derived_from=[("subject", "rex")], meta={"method": "lora"})
    assert refused.value.code == "consent_required"
    assert (_rows(s, Blob), _rows(s, Artifact)) == (blobs, artifacts)  # nothing changed
    assert s.audit.audit_log("acme", action="trained_adapter") == []
    # An output made from the subject (IP-Adapter) is no training; an adapter of documents needs no photo consent.
    s.artifacts.add_artifact("acme", "out", kind="output", media_type="image/png", data=b"o", user="alice",
                             derived_from=[("subject", "rex")])
    s.content.add_documents("acme", "alice", [{"key": "d1", "text": "a note"}])
    s.artifacts.add_artifact("acme", "style", kind="adapter", media_type="application/zip", data=b"w2", user="alice",
                             derived_from=[("document", "d1")], meta={"method": "lora", "modality": "text"})
    s.users.set_training_consent("acme", "alice", True)
    s.artifacts.add_artifact("acme", "lora", kind="adapter", media_type="application/octet-stream", data=b"w1",
                             user="alice", derived_from=[("subject", "rex")], meta={"method": "lora", "job": "j1"},
                             actor="worker:w1")
    [lora, style] = s.audit.audit_log("acme", action="trained_adapter")
    assert (lora.actor, lora.user, lora.object_kind, lora.object_key) == ("worker:w1", "alice", "artifact", "lora")
    assert lora.detail == {"method": "lora", "job": "j1", "sources": {"subject": 1}, "consented": ["subject:rex"]}
    assert style.detail == {"method": "lora", "modality": "text", "sources": {"document": 1}}


def test_protected_copies_are_found_by_what_they_protect(populated: MemoryStore) -> None:
    s = populated
    s.content.add_subject("acme", "alice", "rex", name="Rex", class_noun="dog", images=[png_bytes("red"), png_bytes("blue")])
    assert s.artifacts.protected_copies("acme", "alice", "subject", "rex") == {}
    for key, position in (("p0-a", 0), ("p1-a", 1), ("p0-b", 0)):
        s.artifacts.add_artifact("acme", key, kind="protected", media_type="image/png", data=key.encode(), user="alice",
                                 derived_from=[("subject", "rex")], meta={"position": position})
    copies = s.artifacts.protected_copies("acme", "alice", "subject", "rex")
    assert {position: record.key for position, record in copies.items()} == {0: "p0-b", 1: "p1-a"}  # the newest
    assert s.content.subject_photo("acme", "alice", "rex", 1)[0] == png_bytes("blue")
    s.privacy.forget_item("acme", "subject", "rex", user="alice")
    assert s.artifacts.artifacts("acme", "alice", kind="protected") == []  # they go with their originals


def test_consent_travels_with_an_export(populated: MemoryStore, tmp_path: Path) -> None:
    given = populated.users.set_training_consent("acme", "alice", True)
    populated.privacy.export_user("acme", "alice", tmp_path / "alice.zip")
    populated.users.create_tenant("other")
    populated.privacy.import_user(tmp_path / "alice.zip", tenant="other")
    assert populated.users.training_consent("other", "alice").since == given.since


def test_the_migration_leaves_existing_users_without_consent(settings: Settings) -> None:
    private_dir(settings.home)
    engine = make_engine(settings.resolved_database_url())
    try:
        migrate(engine, "0005")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tenants (id, key, created_at) VALUES (1, 'acme', '2026-01-01T00:00:00+00:00')"))
            conn.execute(text("INSERT INTO users (id, tenant_id, key, created_at) "
                              "VALUES (1, 1, 'old', '2026-01-01T00:00:00+00:00')"))
        migrate(engine)
        with MemoryStore.open(settings) as store:
            assert store.users.training_consent("acme", "old").granted is False
        from alembic import command

        command.downgrade(alembic_config(engine), "0005")  # and back: the column goes, the user stays
        with engine.connect() as conn:
            assert conn.execute(text("SELECT key FROM users")).scalars().all() == ["old"]
    finally:
        engine.dispose()
