"""`unipgen bench hardening` at quick size: every corpus file refused as expected, the service
alive after each, and the figures the issue's targets are judged by."""

from __future__ import annotations

import pytest

from unipgen.bench import hardening

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.mark.slow
def test_hardening_bench_quick_refuses_everything_and_survives() -> None:
    result = hardening.run(quick=True)
    assert result["all_as_expected"] is True and result["survived_all"] is True
    assert result["accepted"] == 3 and result["refusals"] == len(result["cases"]) - 3  # 3 controls
    assert result["rest_mb"]["service"] > 0 and result["rest_mb"]["encoder"] > 0  # the encoder process was found
    names = {case["name"] for case in result["cases"]}
    assert {"png_39000000x1", "png_6316x6316_rgb", "flac_192k_8ch_119s", "json_chunked_over_limit"} <= names
    for case in result["cases"]:
        assert case["seconds"] > 0 and case["service_rss_increase_mb"] >= 0 and case["alive"], case
    # the memory target holds on any machine; time depends on the machine's load: checked loosely
    assert result["max_service_rss_increase_mb"] <= 200 and result["max_encoder_rss_increase_mb"] <= 200
    assert result["max_refusal_s"] < 10
