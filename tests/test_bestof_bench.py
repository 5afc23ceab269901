"""`unipgen bench bestof`: the by-user bootstrap interval, and a quick run on two cheap modalities
reporting every key docs/benchmarks.md quotes (the kept score is never below the first seed's)."""

from __future__ import annotations

import pytest

from unipgen.bench import bestof as bench


def test_the_interval_resamples_users_with_all_their_prompts() -> None:
    same = [{"user": u, "single": 0.1, "kept": 0.3} for u in "aabb"]
    assert bench.bootstrap_by_user(same, resamples=200) == [0.2, 0.2]
    # user a gains 0.2 on both prompts, user b nothing on its one: the interval spans both users
    rows = [{"user": "a", "single": 0.0, "kept": 0.2}] * 2 + [{"user": "b", "single": 0.5, "kept": 0.5}]
    low, high = bench.bootstrap_by_user(rows, resamples=2000)
    assert low == 0.0 and high == 0.2


@pytest.mark.slow
def test_quick_bestof_bench_reports_the_gain() -> None:
    pytest.importorskip("diffusers")
    result = bench.run(quick=True, modalities=["image", "3d"])
    assert result["best_of"] == 8 and result["users"] == 2 and "random weights" in result["note"]
    assert result["note"].startswith("mechanical check")  # from the models' weights, not the profile's name
    for modality in ("image", "3d"):
        row = result["modalities"][modality]
        assert row["score_kind"] == "mechanical check" and {r["kind"] for r in row["rows"]} == {"mechanical check"}
        assert row["scored_requests"] == 2 and row["space"] == "image"
        assert row["kept_mean"] >= row["candidates_mean"] and row["kept_mean"] >= row["single_mean"]
        assert row["gain"] == pytest.approx(row["kept_mean"] - row["single_mean"], abs=2e-4)
        assert row["gain_ci95"][0] <= row["gain"] <= row["gain_ci95"][1]
