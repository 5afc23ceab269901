"""The README's store example, run by the test suite (tests/test_examples.py)."""

import sys

from unipgen.memory import MemoryStore
from unipgen.settings import Settings

home = sys.argv[1] if len(sys.argv) > 1 else "./data"
with MemoryStore.open(Settings(home=home)) as store:
    store.create_tenant("acme")
    store.create_users("acme", ["alice"])
    store.add_items("acme", [{"key": "m1", "text": "Alien (1979) — Horror, Sci-Fi"}])
    store.ingest_events("acme", [{"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": 1_700_000_000}])
    store.export_user("acme", "alice", f"{home}/alice.zip")
    print(store.forget_user("acme", "alice").residue)  # [] when nothing is left
