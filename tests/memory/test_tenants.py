"""Two tenants with the same user and item ids see only their own data."""

from __future__ import annotations

import numpy as np

from tests.helpers import png_bytes, unit
from unipgen.memory import MemoryStore


def test_tenants_are_isolated(store: MemoryStore) -> None:
    for tenant in ("a", "b"):
        store.users.create_tenant(tenant)
        store.users.create_user(tenant, "u")
        store.catalog.add_items(tenant, [{"key": "x", "text": f"item of {tenant}"}])
        store.content.add_document(tenant, "u", "d", f"doc of {tenant}")
        store.content.add_embeddings(tenant, "text", "document", [("d", unit(np.ones(4)))], user="u")
        store.content.add_embeddings(tenant, "text", "item", [("x", unit(np.ones(4)))])
        store.content.add_face(tenant, "u", "f", png_bytes(), consent=True)
    store.events.ingest_events("a", [{"user": "u", "type": "like", "item": "x", "ts": 1}])
    assert store.users.user_summary("b", "u").counts["behavior_events"] == 0
    assert store.users.user_summary("b", "u").top_items == []
    assert len(store.content.search("a", "text", np.ones(4), user="u")) == 1
    report = store.privacy.forget_user("a", "u")
    assert report.residue == []
    assert store.users.list_users("a") == [] and store.users.list_users("b") == ["u"]
    assert [h.key for h in store.content.search("b", "text", np.ones(4), user="u")] == ["d"]
    assert [h.key for h in store.content.search("b", "text", np.ones(4))] == ["x"]
    assert store.users.user_summary("b", "u").counts["faces"] == 1  # same photo, other tenant: kept


def test_creating_the_same_new_users_at_once_fails_for_no_one(store: MemoryStore) -> None:
    """`create_users(exist_ok=True)` and `ingest_events(create_users=True)` from concurrent
    requests: each user is created once and no request fails on the unique key."""
    import threading

    store.users.create_tenant("race")
    store.catalog.add_items("race", [{"key": "i", "text": "item"}])
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def request(number: int) -> None:
        try:
            start.wait()
            if number % 2:
                store.users.create_users("race", [f"u{k}" for k in range(6)], exist_ok=True)
            else:
                store.events.ingest_events("race", [{"user": f"u{k}", "type": "click", "item": "i", "ts": number * 10 + k}
                                             for k in range(6)], create_users=True)
        except BaseException as exc:  # noqa: BLE001  (asserted below)
            failures.append(exc)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and store.users.list_users("race") == [f"u{k}" for k in range(6)]
    assert sum(len(store.events.events("race", f"u{k}")) for k in range(6)) == 4 * 6
