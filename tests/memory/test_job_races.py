"""Races between worker processes on PostgreSQL that a thread test rarely hits, forced by order.

Under READ COMMITTED a transaction that reads a job's row and then writes it may read a state
that another worker's transaction is about to change. A third connection holds the job's row
lock, so that the two transactions queue behind it in a known order; when it lets go, the one
that queued first commits before the other reads (or writes). Issue 18: a worker whose lease ran
out must not finish a job that another worker has just claimed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from unipgen.errors import ConflictError
from unipgen.memory import MemoryStore
from unipgen.memory.jobs import OutputArtifact
from unipgen.settings import Settings

pytestmark = pytest.mark.postgres

SPEC = {"kind": "generate", "modality": "text", "instruction": "hello"}


@pytest.fixture
def pg_store(postgres_database: str, tmp_path: Path) -> Iterator[MemoryStore]:
    with MemoryStore.open(Settings(home=tmp_path / "home", database_url=postgres_database)) as store:
        store.users.create_tenant("acme")
        store.users.create_users("acme", ["alice"])
        yield store


class Queued(threading.Thread):
    """`call()` in a thread, its result or exception kept."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call, self.result, self.error = call, None, None

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as exc:  # noqa: BLE001  (checked by the test)
            self.error = exc


def _waiting(holder: Any, count: int) -> None:
    """Until `count` other sessions of this database wait on a lock. (`pg_stat_clear_snapshot`:
    a transaction otherwise sees pg_stat_activity as it was at its first read.)"""
    deadline = time.monotonic() + 10
    query = text("SELECT pg_stat_clear_snapshot(), count(*) FROM pg_stat_activity "
                 "WHERE datname = current_database() AND wait_event_type = 'Lock'")
    while holder.execute(query).one()[1] < count:
        assert time.monotonic() < deadline, "the transactions did not queue on the row lock"
        time.sleep(0.02)


def test_a_worker_whose_lease_ran_out_cannot_finish_a_job_claimed_again(pg_store: MemoryStore,
                                                                        postgres_database: str) -> None:
    pg_store.jobs.submit_job("acme", "alice", SPEC, key="j")
    assert pg_store.jobs.claim_job("slow", lease_s=0.001) is not None  # its lease runs out at once
    time.sleep(0.05)
    out = OutputArtifact(key="out-slow", kind="output", media_type="text/plain", data=b"late")
    engine = create_engine(postgres_database)
    with engine.connect() as holder:
        holder.execute(text("SELECT id FROM jobs WHERE key = 'j' FOR UPDATE"))  # a transaction holding the row
        claim = Queued(lambda: pg_store.jobs.claim_jobs("fresh", 30, 1))  # queues first: requeue, then claim
        claim.start()
        _waiting(holder, 1)
        finish = Queued(lambda: pg_store.jobs.finish_job("acme", "j", "slow", {"artifacts": ["out-slow"]}, [out]))
        finish.start()
        _waiting(holder, 2)
        holder.commit()
    claim.join(10)
    finish.join(10)
    engine.dispose()
    assert claim.error is None and [(j.key, j.worker, j.attempts) for j in claim.result] == [("j", "fresh", 2)]
    assert isinstance(finish.error, ConflictError), finish.result  # the slow worker lost the job
    job = pg_store.jobs.job("acme", "j")
    assert (job.status, job.worker) == ("running", "fresh")  # held by one worker only
    assert pg_store.artifacts.artifacts("acme", "alice") == []  # the loser stored nothing


def test_cancelling_a_job_being_claimed_asks_its_new_worker_to_stop(pg_store: MemoryStore,
                                                                    postgres_database: str) -> None:
    """A cancel that read the job as queued while a claim took it must not end a running job
    behind its worker's back: it sees it running and asks it to stop."""
    pg_store.jobs.submit_job("acme", "alice", SPEC, key="j")
    engine = create_engine(postgres_database)
    with engine.connect() as holder:
        holder.execute(text("SELECT id FROM jobs WHERE key = 'j' FOR UPDATE"))
        claim = Queued(lambda: pg_store.jobs.claim_jobs("w", 30, 1))
        claim.start()
        _waiting(holder, 1)
        cancel = Queued(lambda: pg_store.jobs.cancel_job("acme", "j"))
        cancel.start()
        _waiting(holder, 2)
        holder.commit()
    claim.join(10)
    cancel.join(10)
    engine.dispose()
    assert claim.error is None and [j.key for j in claim.result] == ["j"]
    assert cancel.error is None and (cancel.result.status, cancel.result.cancel_requested) == ("running", True)
    assert pg_store.jobs.renew_lease("acme", "j", "w", 30) is True  # the worker hears it and stops


def test_two_jobs_storing_the_same_bytes_at_once_both_succeed(pg_store: MemoryStore, postgres_database: str) -> None:
    """Blobs are named by their content, so two workers may store the same output at once (the
    same seed and prompt; one photo uploaded twice). The one that inserts the blob's row second
    waits for the first and goes on: it must not fail its job on the blob's key."""
    from unipgen.memory.blobs import sha256_hex

    pg_store.jobs.submit_job("acme", "alice", SPEC, key="j")
    assert pg_store.jobs.claim_job("w", lease_s=30) is not None
    data = b"the same output, twice"
    engine = create_engine(postgres_database)
    with engine.connect() as holder:  # the other worker's finish, holding its new blob row uncommitted
        holder.execute(text("INSERT INTO blobs (sha256, size, media_type, created_at) VALUES (:sha, :size, "
                            "'text/plain', now())"), {"sha": sha256_hex(data), "size": len(data)})
        out = OutputArtifact(key="out-j", kind="output", media_type="text/plain", data=data)
        finish = Queued(lambda: pg_store.jobs.finish_job("acme", "j", "w", {"artifacts": ["out-j"]}, [out]))
        finish.start()
        _waiting(holder, 1)
        holder.commit()
    finish.join(10)
    engine.dispose()
    assert finish.error is None and finish.result.status == "succeeded"
    assert pg_store.artifacts.artifact("acme", "out-j").blob_sha == sha256_hex(data)
