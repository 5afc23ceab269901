"""`unipgen keys` and `unipgen purge`: the service's administration from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import as_json, run
from unipgen.memory import MemoryStore
from unipgen.settings import Settings


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = as_json(run(home, "keys", "create", "web", "--tenant", "acme", "--json"))
    assert created["key"].startswith(f"upg_{created['prefix']}_") and created["tenant"] == "acme"
    with MemoryStore.open(Settings(home=home)) as store:
        assert store.keys.authenticate(created["key"]).tenant == "acme"
    listed = as_json(run(home, "keys", "list", "--tenant", "acme", "--json"))
    assert listed["keys"] == [{"prefix": created["prefix"], "name": "web", "created_at": listed["keys"][0]["created_at"],
                               "revoked": False}]
    run(home, "keys", "revoke", created["prefix"], "--tenant", "acme", "--json")
    assert as_json(run(home, "keys", "list", "--tenant", "acme", "--json"))["keys"][0]["revoked"] is True
    missing = run(home, "keys", "revoke", "00000000", "--tenant", "acme", "--json", ok=False)
    assert missing.returncode == 2 and "not_found" in missing.stdout + missing.stderr


def test_purge_deletes_only_what_is_past_its_retention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    with MemoryStore.open(Settings(home=home)) as store:
        store.users.create_tenant("acme")
        store.users.create_users("acme", ["alice"])
        store.content.add_documents("acme", "alice", [{"key": "old", "text": "written long ago", "ts": "2001-01-01T00:00:00Z"},
                                              {"key": "new", "text": "written today"}])
    with monkeypatch.context() as patched:
        patched.setenv("UNIPGEN_RETENTION_DAYS", '{"document": 365}')
        dry = as_json(run(home, "purge", "--dry-run", "--json"))
        assert dry["dry_run"] is True and dry["purged"] == {"document": 1}
        with MemoryStore.open(Settings(home=home)) as store:
            assert len(store.content.documents("acme", "alice")) == 2  # a dry run deletes nothing
        assert as_json(run(home, "purge", "--json"))["purged"] == {"document": 1}
    with MemoryStore.open(Settings(home=home)) as store:
        assert [d.key for d in store.content.documents("acme", "alice")] == ["new"]
    assert as_json(run(home, "purge", "--json"))["purged"] == {}  # no retention configured: nothing goes
