"""The preference benchmark's whole path (generate pairs, judge, DPO, held-out comparison) at toy size."""

from __future__ import annotations

import pytest

from unipgen.bench import preference


def test_preference_bench_quick_reports_every_figure() -> None:
    pytest.importorskip("peft")
    result = preference.run(quick=True)
    assert result["model"] == "tiny-random" and result["held_out"] == 2 and result["score_kind"] == "mechanical check"
    assert result["pairs"] in (1, 2, 3) and result["dpo_steps"] == 4
    assert result["dpo_loss_first"] == pytest.approx(0.6931, abs=1e-3)  # the fresh adapter is the reference
    assert result["dpo_margin_after"] > result["dpo_margin_before"]
    assert 0.0 <= result["dpo_win_rate"] <= 1.0 and result["words_base"] >= 0
