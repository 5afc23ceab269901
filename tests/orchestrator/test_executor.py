"""The inline executor on the store's job queue: results, idempotency, failures, retries,
cancellation and recovery from a dead worker, with the tiny models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import movielens_model
from unipgen.core.usermodel import UserModel
from unipgen.orchestrator import InlineExecutor, Lease
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec, TrainSpec

pytest.importorskip("peft")
TEXT = GenerateSpec(modality="text", instruction="Recommend me a film", options=GenerationOptions(max_new_tokens=8))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserModel]:
    with movielens_model(tmp_path_factory.mktemp("executor")) as model:
        yield model


@pytest.fixture(scope="module")
def executor(model: UserModel) -> InlineExecutor:
    return InlineExecutor(model, lease_s=30, backoff_s=0.0)


def outputs_of(model: UserModel, job: str) -> list[str]:
    return [a.key for a in model.store.artifacts.artifacts("ml", "2") if (a.meta or {}).get("job") == job]


def test_generate_job_stores_its_outputs_once(executor: InlineExecutor, model: UserModel) -> None:
    submitted = executor.submit("ml", "2", TEXT, key="gen-1")
    done = executor.wait("ml", "gen-1")
    assert submitted.status == "queued" and done.status == "succeeded" and done.progress == 1.0
    assert done.result["artifacts"] == outputs_of(model, "gen-1") and len(done.result["artifacts"]) == 1
    assert done.result["plan"]["method"] == "rag_prompt"
    again = executor.submit("ml", "2", TEXT, key="gen-1")  # idempotent: the same job, not run again
    assert executor.wait("ml", again.key) == done and len(outputs_of(model, "gen-1")) == 1


def test_training_job_stores_the_adapter(executor: InlineExecutor, model: UserModel) -> None:
    done = executor.wait("ml", executor.submit("ml", "2", TrainSpec(method="text-lora", steps=2), key="tl").key)
    assert done.status == "succeeded" and len(done.result["losses"]) == 2
    [key] = done.result["artifacts"]
    adapter = next(a for a in model.store.artifacts.artifacts("ml", "2") if a.key == key)
    assert adapter.kind == "adapter" and adapter.meta["job"] == "tl"
    documents = {d.key for d in model.store.content.documents("ml", "2")}
    assert {key for _, key in adapter.derived_from} == documents  # lineage to every tag it learned from


def test_a_callers_error_fails_at_once_with_its_code(executor: InlineExecutor) -> None:
    done = executor.wait("ml", executor.submit("ml", "1", TrainSpec(method="text-lora"), key="no-docs").key)
    assert done.status == "failed" and done.attempts == 1
    assert done.error == {"code": "invalid_input", "message": "user '1' has no documents to train a text adapter on"}


class FlakyExecutor(InlineExecutor):
    """A worker whose first attempt at every job crashes (as a dying GPU process would)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crashed: set[str] = set()

    def _work(self, work: Any, lease: Lease) -> Any:
        if lease.job.key not in self.crashed:
            self.crashed.add(lease.job.key)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super()._work(work, lease)


def test_a_crash_is_retried_and_nothing_is_duplicated(model: UserModel) -> None:
    flaky = FlakyExecutor(model, lease_s=30, backoff_s=0.0)
    done = flaky.wait("ml", flaky.submit("ml", "2", TEXT, key="flaky").key)
    assert done.status == "succeeded" and done.attempts == 2
    assert done.error["message"].startswith("RuntimeError: CUDA error")  # the last failure stays on record
    assert outputs_of(model, "flaky") == done.result["artifacts"] and len(done.result["artifacts"]) == 1


def test_cancel_stops_a_running_training_job(model: UserModel) -> None:
    executor = InlineExecutor(model, lease_s=0.3)
    job = executor.submit("ml", "2", TrainSpec(method="text-lora", steps=10_000), key="long")
    finished: list[Any] = []
    runner = threading.Thread(target=lambda: finished.append(executor.wait("ml", job.key)))
    runner.start()
    while model.store.jobs.job("ml", job.key).progress == 0.0:
        time.sleep(0.05)
    executor.cancel("ml", job.key)
    runner.join(timeout=60)
    assert finished and finished[0].status == "cancelled" and 0 < finished[0].progress < 0.5
    assert outputs_of(model, "long") == []


def test_a_job_of_a_dead_worker_is_finished_by_another(model: UserModel) -> None:
    store = model.store
    store.jobs.submit_job("ml", "2", TEXT.model_dump(mode="json"), key="orphan")
    assert store.jobs.claim_job("died-mid-job", lease_s=0.05, key="orphan") is not None
    time.sleep(0.1)  # the dead worker's lease runs out
    [done] = InlineExecutor(model).run_pending()
    assert done.key == "orphan" and done.status == "succeeded" and done.attempts == 2
    assert len(outputs_of(model, "orphan")) == 1


def test_jobs_prepared_together_fail_alone(model: UserModel) -> None:
    """`prepare_many` (the Ray executor's batch path): a job whose user is gone gets its own
    error; the others are prepared as `prepare` would."""
    from unipgen.orchestrator import prepare, prepare_many

    store = model.store
    store.users.create_user("ml", "ghost")
    jobs = [store.jobs.submit_job("ml", user, TEXT.model_dump(mode="json"), key=f"batch-{user}") for user in ("2", "ghost")]
    store.privacy.forget_user("ml", "ghost")  # gone between claim and prepare
    jobs.append(store.jobs.submit_job("ml", "2", TrainSpec(method="text-lora", steps=1).model_dump(mode="json"),
                                 key="batch-train"))
    ok, gone, train = prepare_many(model, jobs)
    assert isinstance(gone, Exception) and "ghost" in str(gone)
    single = prepare(model, jobs[0])
    assert ok.request.plan == single.request.plan and ok.sources == single.sources
    assert train.steps == 1 and train.method == "text-lora"


def test_jobs_finished_together_fail_alone(model: UserModel) -> None:
    """`finish_many` stores a group in one transaction; when one job of it was lost (its lease
    ran out and another worker took it), the others are still finished and it is left alone."""
    from unipgen.orchestrator import finish_many, prepare

    store = model.store
    for name in ("ok", "lost"):
        store.jobs.submit_job("ml", "2", TEXT.model_dump(mode="json"), key=f"group-{name}")
    claimed = [store.jobs.claim_job("w1", 30, tenant="ml", key=f"group-{name}") for name in ("ok", "lost")]
    done = [(job, work := prepare(model, job), [[_text_output(work)]]) for job in claimed]
    with pytest.raises(Exception, match="no longer held"):  # the all-at-once path refuses the group...
        lost = next(j for j in claimed if j.key == "group-lost")
        store.jobs.fail_job("ml", lost.key, "w1", {"code": "x", "message": "x"}, retryable=True, backoff_s=0)
        store.jobs.claim_jobs("w2", 30, 1, key=lost.key)  # ...because another worker holds this one now
        store.jobs.finish_jobs("w1", [("ml", j.key, {}, []) for j in claimed])
    assert store.jobs.job("ml", "group-ok").status == "running"  # nothing of the group was stored
    ended = finish_many(model, "w1", done, backoff_s=0)
    assert ended["group-ok"].status == "succeeded" and len(ended["group-ok"].result["artifacts"]) == 1
    assert ended["group-lost"].status == "running" and ended["group-lost"].worker == "w2"


def _text_output(work: Any) -> Any:
    from unipgen.schema.generation import GeneratedOutput

    return GeneratedOutput(data=b"an answer", media_type="text/plain", meta={"prompt": work.request.plan.prompt})
