"""API keys: created once in plaintext, stored as a hash, scoped to a tenant, revocable."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from unipgen.errors import InvalidInputError, NotFoundError, UnauthorizedError
from unipgen.memory import MemoryStore
from unipgen.memory.models import ApiKey


@pytest.fixture
def two_tenants(store: MemoryStore) -> MemoryStore:
    store.users.create_tenant("acme")
    store.users.create_tenant("globex")
    return store


def test_a_created_key_authenticates_as_its_tenant(two_tenants: MemoryStore) -> None:
    new = two_tenants.keys.create_api_key("acme", "web frontend")
    assert new.key.startswith(f"upg_{new.record.prefix}_") and len(new.record.prefix) == 8
    record = two_tenants.keys.authenticate(new.key)
    assert record.tenant == "acme" and record.prefix == new.record.prefix and record.name == "web frontend"
    assert record.revoked_at is None and record.last_used_at is not None
    assert not hasattr(record, "key")


def test_the_plaintext_is_stored_nowhere(two_tenants: MemoryStore) -> None:
    new = two_tenants.keys.create_api_key("acme", "ci")
    secret = new.key[len("upg_") + 9:]  # after "upg_<prefix>_"; the secret itself may hold "_"
    with two_tenants.engine.connect() as conn:
        rows = conn.execute(select(ApiKey.__table__)).all()
    assert len(rows) == 1
    values = [str(v) for v in rows[0]]
    assert not any(new.key in v or secret in v for v in values)
    assert rows[0].key_hash != new.key and len(rows[0].key_hash) == 64


def test_revoked_keys_are_refused(two_tenants: MemoryStore) -> None:
    new = two_tenants.keys.create_api_key("acme", "old laptop")
    revoked = two_tenants.keys.revoke_api_key("acme", new.record.prefix)
    assert revoked.revoked_at is not None
    with pytest.raises(UnauthorizedError, match="was revoked"):
        two_tenants.keys.authenticate(new.key)
    again = two_tenants.keys.revoke_api_key("acme", new.record.prefix)  # idempotent: the first time stays
    assert again.revoked_at == revoked.revoked_at
    assert two_tenants.keys.list_api_keys("acme")[0].revoked_at == revoked.revoked_at


def test_a_tenant_cannot_see_or_revoke_another_tenants_key(two_tenants: MemoryStore) -> None:
    acme = two_tenants.keys.create_api_key("acme", "a")
    globex = two_tenants.keys.create_api_key("globex", "g")
    assert [k.prefix for k in two_tenants.keys.list_api_keys("globex")] == [globex.record.prefix]
    with pytest.raises(NotFoundError, match=f"unknown API key '{acme.record.prefix}' in tenant 'globex'"):
        two_tenants.keys.revoke_api_key("globex", acme.record.prefix)
    assert two_tenants.keys.authenticate(acme.key).tenant == "acme"  # still valid


def test_keys_list_oldest_first(two_tenants: MemoryStore) -> None:
    names = ["one", "two", "three"]
    for name in names:
        two_tenants.keys.create_api_key("acme", name)
    assert [k.name for k in two_tenants.keys.list_api_keys("acme")] == names


def test_malformed_and_unknown_keys_are_refused(two_tenants: MemoryStore) -> None:
    new = two_tenants.keys.create_api_key("acme", "k")
    prefix, secret = new.record.prefix, new.key[len("upg_") + 9:]
    wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    shouting = f"upg_{prefix.upper()}_{secret}"  # the same key when the random prefix has no letter
    for bad in ["", "upg_", f"xyz_{prefix}_{secret}", f"upg_{prefix}_{wrong_secret}", f"upg_{prefix}_",
                *([shouting] if shouting != new.key else []), new.key + "x", " " + new.key, None, 42]:
        with pytest.raises(UnauthorizedError, match="^invalid API key$"):
            two_tenants.keys.authenticate(bad)  # type: ignore[arg-type]


def test_create_checks_the_tenant_and_the_name(two_tenants: MemoryStore) -> None:
    with pytest.raises(NotFoundError, match="unknown tenant 'nope'"):
        two_tenants.keys.create_api_key("nope", "k")
    for name in ["", "   ", "x" * 256]:
        with pytest.raises(InvalidInputError, match="API key name"):
            two_tenants.keys.create_api_key("acme", name)
    with pytest.raises(NotFoundError):
        two_tenants.keys.list_api_keys("nope")


def test_last_used_is_written_at_most_once_a_minute(two_tenants: MemoryStore) -> None:
    new = two_tenants.keys.create_api_key("acme", "k")
    first = two_tenants.keys.authenticate(new.key).last_used_at
    assert two_tenants.keys.authenticate(new.key).last_used_at == first  # no write per request
    assert two_tenants.keys.list_api_keys("acme")[0].last_used_at == first
    with two_tenants.write() as w:  # time travel: the last use was two minutes ago
        w.session.execute(update(ApiKey).values(last_used_at=first - timedelta(minutes=2)))
    later = two_tenants.keys.authenticate(new.key).last_used_at
    assert later is not None and later >= first
    assert two_tenants.keys.list_api_keys("acme")[0].last_used_at == later


def test_deleting_the_tenant_deletes_its_keys(two_tenants: MemoryStore) -> None:
    two_tenants.keys.create_api_key("acme", "k")
    with two_tenants.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM tenants WHERE key = 'acme'")
    assert two_tenants.count_rows(ApiKey) == 0
