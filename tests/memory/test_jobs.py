"""The job queue in the store: idempotent submit, one claimer per job, leases, retries, cancel,
backpressure, outputs stored with the job's end; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from unipgen.errors import ConflictError, NotFoundError, QueueFullError
from unipgen.memory import MemoryStore
from unipgen.memory.jobs import OutputArtifact
from unipgen.schema.jobs import JobRecord

SPEC = {"kind": "generate", "modality": "text", "instruction": "hello"}


def test_submit_is_idempotent_by_key(populated: MemoryStore) -> None:
    first = populated.jobs.submit_job("acme", "alice", SPEC, key="j1")
    again = populated.jobs.submit_job("acme", "alice", SPEC, key="j1")
    assert again == first and first.status == "queued" and first.kind == "generate"
    assert len(populated.jobs.jobs("acme")) == 1
    with pytest.raises(ConflictError, match="job 'j1' exists with a different request"):
        populated.jobs.submit_job("acme", "alice", {**SPEC, "instruction": "other"}, key="j1")
    with pytest.raises(NotFoundError, match="unknown user 'carol'"):
        populated.jobs.submit_job("acme", "carol", SPEC)


def test_claim_runs_oldest_first_and_finish_stores_outputs_with_the_job(populated: MemoryStore) -> None:
    a = populated.jobs.submit_job("acme", "alice", SPEC, key="a")
    populated.jobs.submit_job("acme", "bob", SPEC, key="b")
    claimed = populated.jobs.claim_job("w1", lease_s=30)
    assert claimed is not None and claimed.key == a.key and claimed.status == "running" and claimed.attempts == 1
    out = OutputArtifact(key="out-a", kind="output", media_type="text/plain", data=b"hi",
                         derived_from=[("user", "alice")], meta={"prompt": "hello"})
    done = populated.jobs.finish_job("acme", "a", "w1", {"artifacts": ["out-a"]}, [out])
    assert done.status == "succeeded" and done.progress == 1.0 and done.finished_at is not None
    record = next(x for x in populated.artifacts.artifacts("acme", "alice") if x.key == "out-a")
    assert record.meta == {"prompt": "hello", "job": "a"} and record.derived_from == []  # 'user' edges are not listed
    with pytest.raises(ConflictError, match="no longer held by worker 'w1'"):
        populated.jobs.finish_job("acme", "a", "w1", {})  # a job ends once


def test_a_failed_finish_leaves_the_job_running_and_stores_nothing(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "alice", SPEC, key="a")
    populated.jobs.claim_job("w1", lease_s=30)
    outputs = [OutputArtifact("o1", "output", "text/plain", b"1"), OutputArtifact("o1", "output", "text/plain", b"2")]
    with pytest.raises(ConflictError, match="artifact 'o1' already exists"):
        populated.jobs.finish_job("acme", "a", "w1", {}, outputs)
    assert populated.jobs.job("acme", "a").status == "running" and populated.artifacts.artifacts("acme", "alice") == []


def test_retry_with_backoff_then_fail(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "alice", SPEC, key="a", max_attempts=2)
    populated.jobs.claim_job("w1", lease_s=30)
    retried = populated.jobs.fail_job("acme", "a", "w1", {"code": "worker_died", "message": "x"}, retryable=True,
                                 backoff_s=60)
    assert retried.status == "queued" and retried.error["code"] == "worker_died"
    assert populated.jobs.claim_job("w2", lease_s=30) is None  # backing off
    with populated.write() as w:  # time travel: the backoff is over
        from sqlalchemy import update

        from unipgen.memory.models import Job
        w.session.execute(update(Job).values(run_after=retried.created_at))
    second = populated.jobs.claim_job("w2", lease_s=30)
    assert second is not None and second.attempts == 2
    failed = populated.jobs.fail_job("acme", "a", "w2", {"code": "worker_died", "message": "y"}, retryable=True)
    assert failed.status == "failed" and failed.attempts == 2  # no attempts left


def test_an_expired_lease_gives_the_job_to_another_worker(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "alice", SPEC, key="a")
    populated.jobs.claim_job("dead", lease_s=0.05)
    time.sleep(0.1)
    taken = populated.jobs.claim_job("alive", lease_s=30)
    assert taken is not None and taken.key == "a" and taken.worker == "alive" and taken.attempts == 2
    with pytest.raises(ConflictError, match="no longer held by worker 'dead'"):
        populated.jobs.renew_lease("acme", "a", "dead", 30)


def test_cancel_queued_and_running_jobs(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "alice", SPEC, key="q")
    populated.jobs.submit_job("acme", "alice", SPEC, key="r")
    assert populated.jobs.cancel_job("acme", "q").status == "cancelled"
    running = populated.jobs.claim_job("w", lease_s=30)
    assert running is not None and running.key == "r"
    asked = populated.jobs.cancel_job("acme", "r")
    assert asked.status == "running" and asked.cancel_requested
    assert populated.jobs.renew_lease("acme", "r", "w", 30, progress=0.5) is True
    assert populated.jobs.mark_cancelled("acme", "r", "w").status == "cancelled"
    with pytest.raises(ConflictError, match="has already cancelled"):
        populated.jobs.cancel_job("acme", "r")


def test_backpressure_refuses_beyond_the_limit(populated: MemoryStore) -> None:
    populated.jobs.max_queued_jobs = 2
    populated.jobs.submit_job("acme", "alice", SPEC)
    populated.jobs.submit_job("acme", "alice", SPEC)
    with pytest.raises(QueueFullError, match="tenant 'acme' has 2 jobs queued or running"):
        populated.jobs.submit_job("acme", "bob", SPEC)
    assert populated.jobs.submit_job("acme", "alice", SPEC, key=populated.jobs.jobs("acme")[0].key)  # a resubmit is no new job


def test_concurrent_claimers_take_each_job_once(populated: MemoryStore) -> None:
    for i in range(20):
        populated.jobs.submit_job("acme", "alice", SPEC, key=f"j{i}")

    def claim_one(worker: str) -> list[JobRecord]:
        job = populated.jobs.claim_job(worker, lease_s=30)
        return [] if job is None else [job]

    taken = claimed_by_threads(claim_one, workers=4)
    assert sorted(taken) == sorted(f"j{i}" for i in range(20))


def claimed_by_threads(claim: Callable[[str], list[JobRecord]], workers: int) -> list[str]:
    """The keys of the jobs that `workers` threads took, each calling `claim(its name)` until it
    gets nothing: racing claimers, to show that no job is handed out twice."""
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while batch := claim(name):
            with lock:
                taken.extend(job.key for job in batch)

    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return taken


def test_forgetting_the_user_deletes_their_jobs(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "alice", SPEC, key="a")
    populated.jobs.submit_job("acme", "bob", SPEC, key="b")
    report = populated.privacy.forget_user("acme", "alice")
    assert report.deleted["jobs"] == 1 and report.residue == []
    assert [j.key for j in populated.jobs.jobs("acme")] == ["b"]


def test_forgetting_what_an_output_used_deletes_the_job_that_made_it(populated: MemoryStore) -> None:
    quote = "I only watch films about lighthouses"
    populated.content.add_documents("acme", "alice", [{"key": "d1", "text": quote}])
    for key in ("a", "b"):
        populated.jobs.submit_job("acme", "alice", {**SPEC, "instruction": key}, key=key)
    populated.jobs.claim_job("w1", lease_s=30)
    out = OutputArtifact("out-a", "output", "text/plain", b"hi", derived_from=[("document", "d1")])
    populated.jobs.finish_job("acme", "a", "w1", {"artifacts": ["out-a"], "plan": {"prompt": f"{quote}. hello"}}, [out])
    report = populated.privacy.forget_item("acme", "document", "d1", user="alice")
    assert report.deleted["jobs"] == 1 and report.residue == []  # the plan's prompt quoted the document
    assert [j.key for j in populated.jobs.jobs("acme")] == ["b"]


def test_claim_jobs_takes_several_oldest_first(populated: MemoryStore) -> None:
    for i in range(5):
        populated.jobs.submit_job("acme", "alice" if i % 2 else "bob", SPEC, key=f"j{i}")
    first = populated.jobs.claim_jobs("w1", 30, 3)
    assert [j.key for j in first] == ["j0", "j1", "j2"] and {j.status for j in first} == {"running"}
    assert [j.user for j in first] == ["bob", "alice", "bob"] and {j.worker for j in first} == {"w1"}
    rest = populated.jobs.claim_jobs("w2", 30, 3)
    assert [j.key for j in rest] == ["j3", "j4"] and populated.jobs.claim_jobs("w3", 30, 3) == []


def test_concurrent_batch_claimers_take_each_job_once(populated: MemoryStore) -> None:
    for i in range(30):
        populated.jobs.submit_job("acme", "alice", SPEC, key=f"j{i}")
    taken = claimed_by_threads(lambda worker: populated.jobs.claim_jobs(worker, 30, 4), workers=3)
    assert sorted(taken) == sorted(f"j{i}" for i in range(30))


def test_finishing_a_job_asked_to_cancel_drops_its_outputs(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "alice", SPEC, key="c")
    populated.jobs.claim_job("w1", lease_s=30)
    populated.jobs.cancel_job("acme", "c")  # while the work ran
    out = OutputArtifact(key="out-c", kind="output", media_type="text/plain", data=b"late")
    ended = populated.jobs.finish_job("acme", "c", "w1", {"artifacts": ["out-c"]}, [out])
    assert ended.status == "cancelled" and ended.result is None
    assert populated.artifacts.artifacts("acme", "alice") == []
