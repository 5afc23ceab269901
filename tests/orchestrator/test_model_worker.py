"""`ModelWorker`'s micro-batcher, driven in this process (no Ray): a window that would hold
requests for 10 minutes shows that complete bursts go at once and partial ones wait."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from unipgen.schema.context import PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest
from unipgen.schema.profiles import load_profile

pytest.importorskip("transformers")

WINDOW_MS = 600_000.0  # 10 minutes: a test that waited it out would hit the timeouts below


def _request(prompt: str, seed: int) -> GenerationRequest:
    context = UserContext(tenant="t", user="u", modality="text", instruction=prompt, profile={},
                          built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="text", method="prompt_only", prompt=prompt, reasons=["test"],
                               budget_tokens=64, used_tokens=4)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed, max_new_tokens=3))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return _worker(tmp_path_factory)


def _worker(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202
    from unipgen.orchestrator.ray_executor import ModelWorker

    spec = load_profile("tiny").backends["text"]
    options = {k: v for k, v in spec.options.items() if k not in ("num_gpus", "max_batch_requests", "max_wait_ms")}
    blobs = Path(tmp_path_factory.mktemp("blobs"))
    return ModelWorker({"type": spec.type, "ref": spec.ref, "options": options}, blobs.as_posix(), max_batch=16,
                       max_wait_ms=WINDOW_MS)


def test_a_complete_burst_is_one_batch_without_waiting(worker) -> None:  # noqa: ANN001
    async def main() -> list[list]:
        calls = [worker.generate(_request(f"hello {n}", n), ("b1", 3)) for n in range(3)]
        return await asyncio.wait_for(asyncio.gather(*calls), timeout=120)

    before = len(worker.batches)
    outputs = asyncio.run(main())
    assert len(outputs) == 3 and all(out and out[0].data for out in outputs)
    assert worker.batches[before:] == [3]


def test_a_lone_request_is_a_burst_of_one(worker) -> None:  # noqa: ANN001
    async def main() -> list:
        return await asyncio.wait_for(worker.generate(_request("alone", 7), ("solo", 1)), timeout=120)

    before = len(worker.batches)
    assert asyncio.run(main())[0].data and worker.batches[before:] == [1]


def test_a_jobs_best_of_candidates_go_as_one_batch(worker) -> None:  # noqa: ANN001
    """`generate_many` (the Ray executor sends a job's requests with it): one list of outputs per
    request, in order, all in one backend call, each what the request gives on its own."""
    requests = [_request("candidates", seed) for seed in (4, 5, 6)]

    async def main() -> list[list]:
        return await asyncio.wait_for(worker.generate_many(requests, ("job", 3)), timeout=120)

    before = len(worker.batches)
    outputs = asyncio.run(main())
    assert worker.batches[before:] == [3]
    assert [out[0].meta["seed"] for out in outputs] == [4, 5, 6]
    alone = asyncio.run(asyncio.wait_for(worker.generate(requests[1], ("one", 1)), timeout=120))
    assert alone[0].data == outputs[1][0].data  # the text backend seeds each row: batch-invariant


def test_an_incomplete_burst_waits_for_the_window(tmp_path_factory: pytest.TempPathFactory) -> None:
    worker = _worker(tmp_path_factory)  # its own: the requests left waiting stay in its queue

    async def main() -> None:
        calls = [worker.generate(_request(f"part {n}", n), ("b2", 3)) for n in range(2)]  # 2 of 3 arrive
        await asyncio.wait_for(asyncio.gather(*calls), timeout=2)

    before = len(worker.batches)
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    assert worker.batches[before:] == []
