"""The benchmark harness runs and reports every key docs/benchmarks.md quotes (at toy sizes:
speed itself is measured by `unipgen bench memory`, never asserted in tests)."""

from __future__ import annotations

import pytest

from unipgen.bench import run_benchmark


@pytest.fixture(scope="module")
def memory_bench():  # noqa: ANN201
    import importlib
    import sys

    from unipgen.bench import BENCHMARKS_DIR

    sys.path.insert(0, str(BENCHMARKS_DIR))
    try:
        yield importlib.import_module("memory_bench")
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))


def test_ingest_and_forget_stages(memory_bench) -> None:  # noqa: ANN001
    ingest = memory_bench.bench_ingest(None, 300, 30)
    assert ingest["ingest_events"] == 300 and ingest["ingest_events_per_s"] > 0
    assert ingest["ingest_speedup_vs_naive"] == pytest.approx(
        ingest["ingest_events_per_s"] / ingest["naive_events_per_s"], rel=0.05)
    forget = memory_bench.bench_forget(events=100, blobs=5)
    assert forget["forget_deleted"]["blobs"] == 5 and forget["forget_deleted"]["events"] == 100


def test_search_stages(memory_bench) -> None:  # noqa: ANN001
    import vector_bench

    store = memory_bench.bench_store_search(n_users=2, per_user=50, dim=16, queries=50)
    assert store["store_user_search_p99_ms"] >= store["store_user_search_p50_ms"] > 0
    user = vector_bench.bench_user_search(n_users=5, per_user=50, dim=16, queries=50)
    assert {"user_search_p99_ms", "baseline_user_search_p99_ms"} <= user.keys()
    ann = vector_bench.bench_ann(n=3000, dim=16, queries=20)
    assert ann["ann_recall_at_10"] == pytest.approx(1.0)  # below the IVF threshold search is exact


def test_unknown_benchmark_is_named() -> None:
    from unipgen.errors import NotFoundError

    with pytest.raises(NotFoundError, match="benchmark 'nope' not found"):
        run_benchmark("nope")


def test_usermodel_ranking_harness_on_the_sample() -> None:
    """The leave-last-out harness end to end on the shipped 8-user sample. Item texts are
    embedded by a cheap deterministic stand-in: the harness, not the encoder, is under test."""
    import hashlib
    import sys

    import numpy as np

    from tests.conftest import SAMPLE
    from unipgen.bench import BENCHMARKS_DIR

    def hashed(texts: list[str]) -> np.ndarray:
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:16] for t in texts]
        matrix = np.stack(rows).astype(np.float32) - 127.5
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    sys.path.insert(0, str(BENCHMARKS_DIR))
    try:
        import usermodel_bench
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))
    result = usermodel_bench.bench_ranking(SAMPLE, quick=True, text_encoder=hashed)
    assert result["users_evaluated"] >= 1
    for key in ("ndcg_at_10", "hr_at_10", "popularity_ndcg_at_10", "no_decay_ndcg_at_10", "update_events_per_s"):
        assert key in result
    assert 0.0 <= result["ndcg_at_10"] <= result["hr_at_10"] <= 1.0
