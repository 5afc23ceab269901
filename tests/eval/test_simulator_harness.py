"""`unipgen eval simulator`: the held-out split and its pairs, and the harness end to end on the
packaged MovieLens sample through the live store (structure, intervals, report files)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE
from unipgen.errors import NotFoundError
from unipgen.eval.movielens_data import load_movielens
from unipgen.eval.simulator import JUDGES, held_out_split, run_simulator, user_pairs


def hashed(texts: list[str]) -> np.ndarray:
    """A cheap deterministic text encoder: the harness, not the encoder, is under test here."""
    rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:16] for t in texts]
    matrix = np.stack(rows).astype(np.float32) - 127.5
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_the_held_out_ratings_are_each_users_latest_and_pairs_put_the_higher_first() -> None:
    data = load_movielens(SAMPLE)
    train, held = held_out_split(data)
    assert len(held) == len(np.unique(data.user))
    for user, rows in held:
        mine = np.flatnonzero(data.user == user)
        assert not train[rows].any() and train[np.setdiff1d(mine, rows)].all()
        assert rows[-1] == mine[-1] and data.ts[rows].min() >= data.ts[np.setdiff1d(mine, rows)].max()
        assert len(rows) == max(2, round(0.2 * len(mine)))
    user, rows = held[0]
    stars = {int(data.item[r]): float(data.rating[r]) for r in rows}
    pairs = user_pairs(data, rows, np.random.default_rng(0), cap=5)
    assert 0 < len(pairs) <= 5
    assert all(stars[a] > stars[b] and gap == stars[a] - stars[b] for a, b, gap in pairs)


def test_the_harness_on_the_sample(tmp_path: Path) -> None:
    result = run_simulator(SAMPLE, out=tmp_path, text_encoder=hashed)
    assert result["benchmark"] == "simulator" and result["settings"]["text_encoder"] == "hashed"
    assert 0 < result["users_evaluated"] <= 8 and result["pairs"] > result["users_evaluated"]
    for name in JUDGES:
        low, high = result[name]["ci95"]
        assert 0 <= low <= result[name]["accuracy"] <= high <= 1
    for other in ("popularity", "random"):
        figure = result[f"simulator_minus_{other}"]
        assert figure["difference"] == pytest.approx(result["simulator"]["accuracy"] - result[other]["accuracy"],
                                                     abs=1e-3)
        assert figure["ci95"][0] <= figure["difference"] <= figure["ci95"][1]
    assert sum(row["pairs"] for row in result["by_rating_gap"].values()) == result["pairs"]
    assert result["target_met"] == (result["simulator_minus_popularity"]["ci95"][0] > 0)
    assert result["fit"]["generation"] == 1 and result["machine"]["cores"] >= 1
    assert json.loads(Path(result["report"]["json"]).read_text())["pairs"] == result["pairs"]
    assert "simulator - popularity" in Path(result["report"]["markdown"]).read_text()
    assert Path(result["report"]["html"]).is_file()


def test_a_missing_folder_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nowhere"):
        run_simulator(tmp_path / "nowhere", text_encoder=hashed)
