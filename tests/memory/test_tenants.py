"""Two tenants with the same user and item ids see only their own data."""

from __future__ import annotations

import numpy as np

from tests.helpers import png_bytes, unit
from unipgen.memory import MemoryStore


def test_tenants_are_isolated(store: MemoryStore) -> None:
    for tenant in ("a", "b"):
        store.create_tenant(tenant)
        store.create_user(tenant, "u")
        store.add_items(tenant, [{"key": "x", "text": f"item of {tenant}"}])
        store.add_document(tenant, "u", "d", f"doc of {tenant}")
        store.add_embeddings(tenant, "text", "document", [("d", unit(np.ones(4)))], user="u")
        store.add_embeddings(tenant, "text", "item", [("x", unit(np.ones(4)))])
        store.add_face(tenant, "u", "f", png_bytes(), consent=True)
    store.ingest_events("a", [{"user": "u", "type": "like", "item": "x", "ts": 1}])
    assert store.user_summary("b", "u").counts["behavior_events"] == 0
    assert store.user_summary("b", "u").top_items == []
    assert len(store.search("a", "text", np.ones(4), user="u")) == 1
    report = store.forget_user("a", "u")
    assert report.residue == []
    assert store.list_users("a") == [] and store.list_users("b") == ["u"]
    assert [h.key for h in store.search("b", "text", np.ones(4), user="u")] == ["d"]
    assert [h.key for h in store.search("b", "text", np.ones(4))] == ["x"]
    assert store.user_summary("b", "u").counts["faces"] == 1  # same photo, other tenant: kept
