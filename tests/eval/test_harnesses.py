"""The movielens, voice and faces harnesses: bad folders (synthetic), the MovieLens harness end to
end on the packaged 8-user sample (structure, report files, ranking_metrics figures equal to the
rank-based ones), and a quick run of each on the shared data when it is there (figures in range,
the model ahead of its untrained baseline)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from tests.conftest import SAMPLE
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval.environment import shared_data_dir
from unipgen.eval.identity import run_faces, run_voice
from unipgen.eval.movielens import CURVE_KS, VARIANTS, run_movielens

PREFIXES = {"model": "", **{name: f"{name}_" for name in VARIANTS[1:]}}


def hashed(texts: list[str]) -> np.ndarray:
    """A cheap deterministic stand-in for MiniLM: the harness, not the encoder, is under test."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:16] for t in texts]
    matrix = np.stack(rows).astype(np.float32) - 127.5
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def assert_report(result: dict[str, Any], out: Path, stem: str) -> None:
    """The JSON holds the returned figures; Markdown and HTML exist and show the plot."""
    for kind in ("json", "markdown", "html", "plot"):
        assert Path(result["report"][kind]).is_file() and Path(result["report"][kind]).parent == out
    saved = json.loads((out / f"{stem}.json").read_text())
    assert saved["benchmark"] == stem and saved["seconds"] == result["seconds"]
    plot = Path(result["report"]["plot"]).name
    assert f"]({plot})" in (out / f"{stem}.md").read_text()
    assert f"src='{plot}'" in (out / f"{stem}.html").read_text()
    assert Path(result["report"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_ranking_figures(result: dict[str, Any]) -> None:
    """In [0, 1], monotone in k, and the @10 curve (ranking_metrics on top lists) equals the
    harness's own rank-based NDCG@10 / HR@10 for every variant."""
    for name in VARIANTS:
        ndcg, hr = result["at_k"][name]["ndcg"], result["at_k"][name]["hr"]
        assert ndcg[10] == result[f"{PREFIXES[name]}ndcg_at_10"] and hr[10] == result[f"{PREFIXES[name]}hr_at_10"]
        assert all(0.0 <= ndcg[k] <= hr[k] <= 1.0 for k in CURVE_KS)
        assert [hr[k] for k in CURVE_KS] == sorted(hr[k] for k in CURVE_KS)


# ---------------------------------------------------------------- bad folders (synthetic)


@pytest.mark.parametrize("harness", [run_movielens, run_voice, run_faces])
def test_missing_folder_is_not_found_and_named(harness: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(NotFoundError, match="nowhere"):
        harness(missing)


def test_movielens_wrong_layout_is_invalid_and_named(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,10\n")
    with pytest.raises(InvalidInputError, match=rf"{tmp_path}.*no movies.csv"):
        run_movielens(tmp_path, text_encoder=hashed)
    (tmp_path / "movies.csv").write_text("id,name\n1,Toy Story (1995)\n")
    with pytest.raises(InvalidInputError, match=r"movies.csv.*columns \['movieId', 'title', 'genres'\] missing"):
        run_movielens(tmp_path, text_encoder=hashed)
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,four,10\n")
    with pytest.raises(InvalidInputError, match="unreadable value"):
        run_movielens(tmp_path, text_encoder=hashed)


def test_movielens_without_evaluable_users_is_invalid(tmp_path: Path) -> None:
    # Only even userIds: nobody to report on.
    shutil.copy(SAMPLE / "movies.csv", tmp_path / "movies.csv")
    rows = (SAMPLE / "ratings.csv").read_text().splitlines()
    (tmp_path / "ratings.csv").write_text("\n".join([rows[0], *(r for r in rows[1:] if int(r.split(",")[0]) % 2 == 0)]))
    with pytest.raises(InvalidInputError, match="odd \\(test\\) userIds; found [1-9][0-9]* and 0"):
        run_movielens(tmp_path, text_encoder=hashed)


@pytest.mark.parametrize("harness, suffix", [(run_voice, ".flac"), (run_faces, ".pgm")])
def test_identity_wrong_layout_is_invalid_and_named(harness: Any, suffix: str, tmp_path: Path) -> None:
    (tmp_path / f"loose{suffix}").write_bytes(b"x")  # files must sit in one sub-folder per identity
    with pytest.raises(InvalidInputError, match=rf"sub-folders of {tmp_path}"):
        harness(tmp_path)
    (tmp_path / "only-one").mkdir()
    for index in range(3):
        (tmp_path / "only-one" / f"{index}{suffix}").write_bytes(b"x")
    with pytest.raises(InvalidInputError, match=rf"{tmp_path}: 3 files in 1 sub-folder"):
        harness(tmp_path)
    with pytest.raises(InvalidInputError, match="per_identity must be >= 1"):
        harness(tmp_path, per_identity=0)


# ---------------------------------------------------------------- structure (packaged sample)


def test_movielens_harness_on_the_sample(tmp_path: Path) -> None:
    result = run_movielens(SAMPLE, out=tmp_path, rounds=1, text_encoder=hashed)
    assert result["benchmark"] == "movielens" and result["settings"]["text_encoder"] == "hashed"
    assert result["users_evaluated"] >= 1 and result["tuning_users"] >= 1
    assert_ranking_figures(result)
    low, high = result["ndcg_gain_vs_popularity_ci95"]
    assert -1.0 <= low <= high <= 1.0
    assert_report(result, tmp_path, "movielens")
    saved = json.loads((tmp_path / "movielens.json").read_text())
    assert saved["at_k"]["model"]["ndcg"]["10"] == result["ndcg_at_10"]  # JSON keys are strings
    assert "| popularity |" in (tmp_path / "movielens.md").read_text()
    # EASE, item-kNN and SASRec: reported on the same users, with their tuned settings.
    for name, knob in (("ease", "lambda"), ("itemknn", "k"), ("sasrec", "best_epoch")):
        assert 0.0 <= result[f"{name}_ndcg_at_10"] <= result[f"{name}_hr_at_10"] <= 1.0
        assert knob in result["baselines"][name]["params"] and f"{name}_tuning_ndcg_at_10" in result
        assert len(result[f"ndcg_gain_vs_{name}_ci95"]) == 2 and f"| {name} |" in (tmp_path / "movielens.md").read_text()


# ---------------------------------------------------------------- quick runs on the shared data


def shared(name: str) -> Path:
    path = shared_data_dir() / name
    if not path.is_dir():
        pytest.skip(f"shared data set {path} is absent (set UNIPGEN_SHARED_DATA to run this)")
    return path


def test_movielens_quick_on_shared_data(tmp_path: Path) -> None:
    """40 tuning and 40 test users; the first run embeds the 9.7k titles with MiniLM (~80 s, then
    cached). NDCG@10 over popularity is positive on every subset tried (40 to 610 users) but its
    bootstrap interval crosses 0 on some 60-user subsets, so the test asserts the wide cut-off,
    where the model is ~3x popularity."""
    pytest.importorskip("sentence_transformers")
    result = run_movielens(shared("movielens-latest-small"), quick=True, out=tmp_path)
    assert result["users_evaluated"] == 40 and result["settings"]["quick"] is True
    assert_ranking_figures(result)
    model, popularity = result["at_k"]["model"], result["at_k"]["popularity"]
    assert model["hr"][50] > popularity["hr"][50] and model["ndcg"][50] > popularity["ndcg"][50]
    assert_report(result, tmp_path, "movielens")


def test_faces_quick_on_shared_data(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    result = run_faces(shared("orl-faces"), quick=True, out=tmp_path)
    assert (result["face_people"], result["face_photos"]) == (6, 30)
    for key in ("face_top1", "face_pair_auc", "face_top1_pixels", "face_pair_auc_pixels"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["face_same_mean_l2"] < result["face_diff_mean_l2"]
    assert result["face_top1"] >= result["face_top1_pixels"]
    assert result["face_pair_auc"] > result["face_pair_auc_pixels"]
    assert_report(result, tmp_path, "faces")


def test_voice_quick_on_shared_data(tmp_path: Path) -> None:
    pytest.importorskip("resemblyzer")
    result = run_voice(shared("librispeech-test-other-mini"), quick=True, out=tmp_path)
    assert (result["voice_speakers"], result["voice_utterances"] + result["voice_refused"]) == (4, 16)
    for key in ("voice_top1", "voice_pair_auc", "voice_mfcc_top1", "voice_mfcc_pair_auc"):
        assert 0.0 <= result[key] <= 1.0, key
    assert -1.0 <= result["voice_diff_mean"] < result["voice_same_mean"] <= 1.0
    assert result["voice_top1"] >= result["voice_mfcc_top1"]
    assert result["voice_pair_auc"] > result["voice_mfcc_pair_auc"]
    assert_report(result, tmp_path, "voice")


def test_a_profiles_text_encoder_is_named_by_its_ref_for_the_embedding_cache() -> None:
    import numpy as np

    from unipgen.eval.movielens_data import minilm_encoder, profile_text_encoder

    encode = profile_text_encoder("tiny")
    assert encode.__qualname__ == "sentence-transformers:sentence-transformers/all-MiniLM-L6-v2"
    texts = ["Heat (1995) — Crime, Thriller", "Toy Story (1995) — Animation"]
    assert np.allclose(encode(texts), minilm_encoder()(texts), atol=1e-5)  # tiny names the default MiniLM
