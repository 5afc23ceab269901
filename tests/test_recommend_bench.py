"""`unipgen bench recommend` at toy sizes: every key docs/benchmarks.md quotes is reported, and the
service's list agrees with brute force (speed itself is measured by the bench, never asserted here)."""

from __future__ import annotations

from unipgen.bench import recommend as bench


def test_recommend_latency_part_agrees_with_brute_force() -> None:
    result = bench._recommend(3000, 60, 5)
    assert result["recall_at_10"] == 1.0  # under 20k items the index is exact: the same top 10
    assert result["catalog"] == 3000 and result["dim"] == 640 and result["index"] is None
    for key in ("recommend_p50_ms", "recommend_p99_ms", "numpy_p50_ms", "numpy_p99_ms", "p99_ratio_vs_numpy"):
        assert result[key] > 0


def test_fit_and_refit_part_reports_time_memory_and_a_changed_fit() -> None:
    result = bench._fit_and_refit(400, 300, 6000)
    assert result["fit_s"] >= 0 and result["fit_peak_rss_mb"] > 0 and result["refit_after_forget_s"] >= 0
    assert result["refit_changed"] and result["fit_dim"] == 256 + 384
