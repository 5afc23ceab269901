"""Leases and heartbeats: a running job keeps its lease however long one step of its work
blocks; a worker killed mid-job (SIGKILL, no goodbye) loses the job within `lease_s` and
another worker takes it; a training job retried after a crash resumes from its checkpoint and
stores the same adapter as a run never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLE
from unipgen.core.usermodel import UserModel
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.orchestrator import InlineExecutor, Lease
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec, TrainSpec
from unipgen.settings import Settings

pytest.importorskip("peft")
TEXT = GenerateSpec(modality="text", instruction="Recommend me a film", options=GenerationOptions(max_new_tokens=4))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("heartbeat") / "home"


@pytest.fixture(scope="module")
def model(home: Path) -> Iterator[UserModel]:
    store = MemoryStore.open(Settings(home=home))
    load_movielens(store, "ml", SAMPLE, users=2)
    model = UserModel(store, "tiny", cache_dir=home / "cache")
    model.embed_missing("ml")
    yield model
    store.close()


def test_settings_name_the_lease_and_the_heartbeat(model: UserModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from unipgen.orchestrator import make_executor

    monkeypatch.setenv("UNIPGEN_LEASE_S", "12")
    monkeypatch.setenv("UNIPGEN_HEARTBEAT_S", "2")
    executor = make_executor(model, Settings())
    assert (executor.lease_s, executor.heartbeat_s) == (12, 2)
    assert InlineExecutor(model, lease_s=0.3).heartbeat_s == pytest.approx(0.1)  # a few beats per lease


class SlowStep(InlineExecutor):
    """Work whose one step blocks three leases long without asking to stop (a long diffusion
    step, a Ray call): only the heartbeat thread keeps the lease."""

    def _work(self, work: Any, lease: Lease) -> Any:
        time.sleep(3 * self.lease_s)
        return super()._work(work, lease)


def test_a_step_longer_than_the_lease_keeps_the_job(model: UserModel) -> None:
    store = model.store
    slow = SlowStep(model, lease_s=1.0, heartbeat_s=0.2, backoff_s=0.0)
    key = slow.submit("ml", "2", TEXT, key="slow-step").key
    import threading

    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(slow.wait("ml", key)), daemon=True)
    thread.start()
    while store.jobs.job("ml", key).worker != slow.worker:
        time.sleep(0.05)
    taken = []
    while thread.is_alive():  # a second worker keeps trying to take it meanwhile
        taken += [job.key for job in store.jobs.claim_jobs("thief", 30, 1, key=key)]
        time.sleep(0.2)
    thread.join()
    assert taken == [] and done[0].status == "succeeded" and done[0].attempts == 1


@pytest.mark.slow
def test_a_killed_worker_process_loses_its_job_within_the_lease(model: UserModel, home: Path) -> None:
    """A real `unipgen worker` process runs a long training job, heartbeating; SIGKILL ends it
    with the job still marked running; another worker takes it within about `lease_s`."""
    store = model.store
    lease_s = 2.0
    store.content.add_documents("ml", "2", [{"key": "note", "text": "I like slow westerns"}]) \
        if not store.content.documents("ml", "2") else None
    store.jobs.submit_job("ml", "2", TrainSpec(method="text-lora", steps=10_000).model_dump(mode="json"), key="doomed")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNIPGEN_HOME": str(home), "UNIPGEN_LEASE_S": str(lease_s),
           "UNIPGEN_HEARTBEAT_S": "0.3"}
    worker = subprocess.Popen([sys.executable, "-m", "unipgen.cli", "worker", "--poll", "0.2"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while (job := store.jobs.job("ml", "doomed")).progress == 0.0:  # started and reporting steps
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not start the job"
            time.sleep(0.1)
        time.sleep(2 * lease_s)  # alive: it keeps the job past its lease
        assert store.jobs.job("ml", "doomed").worker == job.worker and job.attempts == 1
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed = time.monotonic()
        assert store.jobs.job("ml", "doomed").status == "running"  # nobody said it died
        while not (taken := store.jobs.claim_jobs("rescuer", 30, 1, key="doomed")):
            assert time.monotonic() - killed < lease_s + 5, "the dead worker's job was not released"
            time.sleep(0.1)
        assert time.monotonic() - killed >= lease_s - 0.5 and taken[0].attempts == 2
    finally:
        if worker.poll() is None:
            worker.kill()
    store.jobs.mark_cancelled("ml", "doomed", "rescuer")


class CrashOnce(InlineExecutor):
    """A worker whose first attempt at a job dies after `crash_at` training steps (a lost GPU
    process); the checkpoints it wrote stay in the job's scratch folder."""

    crash_at = 5

    def _work(self, work: Any, lease: Lease) -> Any:
        if lease.job.attempts > 1:
            return super()._work(work, lease)

        def should_stop() -> bool:
            if lease.steps + 1 >= self.crash_at:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return lease()

        from unipgen.orchestrator.training import run_training

        return run_training(work, should_stop=should_stop)


def _training_spec(store: Any, method: str) -> TrainSpec:
    """A short run of `method` for user 1, with what it trains on."""
    if method == "lora":
        pytest.importorskip("diffusers")
        from tests.helpers import png_bytes

        store.content.add_subject("ml", "1", "rex", name="Rex", class_noun="dog", images=[png_bytes("red"), png_bytes("blue")])
        store.users.set_training_consent("ml", "1", True)
        return TrainSpec(method="lora", subject="rex", steps=6, seed=1)
    store.content.add_documents("ml", "1", [{"key": "postcard", "text": "dear friend i love dusty desert towns"},
                                    {"key": "evening", "text": "quiet evenings with coffee and books"}])
    return TrainSpec(method="text-lora", steps=6, seed=2)


@pytest.mark.parametrize("method", [pytest.param("lora", marks=pytest.mark.slow), "text-lora"])
def test_a_retried_training_job_resumes_from_its_checkpoint(model: UserModel, method: str) -> None:
    store = model.store
    spec = _training_spec(store, method)
    crashing = CrashOnce(model, backoff_s=0.0, checkpoint_every=3)
    scratch = store.jobs.job_scratch("ml", f"cut-{method}")
    resumed = crashing.wait("ml", crashing.submit("ml", "1", spec, key=f"cut-{method}").key)
    plain = InlineExecutor(model, backoff_s=0.0, checkpoint_every=3)
    whole = plain.wait("ml", plain.submit("ml", "1", spec, key=f"whole-{method}").key)
    assert resumed.status == whole.status == "succeeded" and (resumed.attempts, whole.attempts) == (2, 1)
    assert resumed.error["message"].startswith("RuntimeError: CUDA error")  # the first attempt did die
    cut, uncut = (store.artifacts.artifact("ml", job.result["artifacts"][0]) for job in (resumed, whole))
    assert cut.meta["resumed_from"] == 3 and "resumed_from" not in uncut.meta  # not step 0
    assert resumed.result["losses"] == whole.result["losses"] and cut.blob_sha == uncut.blob_sha  # bit for bit
    assert scratch is not None and not scratch.exists()  # the checkpoints went with the job's end


def test_a_job_whose_user_is_forgotten_stops_and_leaves_nothing(model: UserModel) -> None:
    """The heartbeat finds the job deleted: the work stops at its next step, the worker goes
    on (no error escapes it), and no scratch folder is left."""
    import threading

    store = model.store
    store.users.create_user("ml", "leaving")
    store.content.add_documents("ml", "leaving", [{"key": "d", "text": "I only watch silent films"}])
    executor = InlineExecutor(model, lease_s=1.5, heartbeat_s=0.2)
    executor.submit("ml", "leaving", TrainSpec(method="text-lora", steps=10_000), key="orphaned")
    ran: list[Any] = []
    thread = threading.Thread(target=lambda: ran.append(executor.run_pending(limit=1)), daemon=True)
    thread.start()
    while store.jobs.job("ml", "orphaned").progress == 0.0:
        time.sleep(0.05)
    scratch = store.jobs.job_scratch("ml", "orphaned")
    assert store.privacy.forget_user("ml", "leaving").residue == []
    thread.join(timeout=30)
    assert not thread.is_alive() and ran and ran[0][0].key == "orphaned"
    assert not scratch.exists()
