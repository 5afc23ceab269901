"""`unipgen bench recommend` at toy sizes: every key docs/benchmarks.md quotes is reported, and the
service's list agrees with brute force (speed itself is measured by the bench, never asserted here)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from unipgen.bench import BENCHMARKS_DIR


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS_DIR))
    try:
        yield importlib.import_module("recommend_bench")
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))


def test_recommend_latency_part_agrees_with_brute_force(bench: ModuleType) -> None:
    result = bench._recommend(3000, 60, 5)
    assert result["recall_at_10"] == 1.0  # under 20k items the index is exact: the same top 10
    assert result["catalog"] == 3000 and result["dim"] == 640 and result["index"] is None
    for key in ("recommend_p50_ms", "recommend_p99_ms", "numpy_p50_ms", "numpy_p99_ms", "p99_ratio_vs_numpy"):
        assert result[key] > 0


def test_fit_and_refit_part_reports_time_memory_and_a_changed_fit(bench: ModuleType) -> None:
    result = bench._fit_and_refit(400, 300, 6000)
    assert result["fit_s"] >= 0 and result["fit_peak_rss_mb"] > 0 and result["refit_after_forget_s"] >= 0
    assert result["refit_changed"] and result["fit_dim"] == 256 + 384
