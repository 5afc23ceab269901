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
