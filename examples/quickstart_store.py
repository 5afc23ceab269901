"""The README's store example, run by the test suite (tests/test_examples.py)."""

import sys

from unipgen.memory import MemoryStore
from unipgen.settings import Settings

home = sys.argv[1] if len(sys.argv) > 1 else "./data"
with MemoryStore.open(Settings(home=home)) as store:
    store.users.create_tenant("acme")
    store.users.create_users("acme", ["alice"])
    store.catalog.add_items("acme", [{"key": "m1", "text": "Alien (1979) — Horror, Sci-Fi"}])
    store.events.ingest_events("acme", [{"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": 1_700_000_000}])
    store.privacy.export_user("acme", "alice", f"{home}/alice.zip")
    print(store.privacy.forget_user("acme", "alice").residue)  # [] when nothing is left
