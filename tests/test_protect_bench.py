"""`unipgen bench protect` end to end on a synthetic DreamBench-layout folder (quick: the harness,
not the figures; docs/benchmarks.md has those): every key the docs quote, the PSNR the budget
promises, the control's noise, the tiny model pre-trained on the subject not evaluated, and the
command's JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from tests.helpers import photo_png  # noqa: E402

CLASSES = """Classes

subject_name,class
rex,dog
bag,backpack

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
]

Live Subject Prompts

prompt_list = [
'a {0} {1} in the snow'.format(unique_token, class_token),
]
"""


@pytest.fixture(scope="module")
def dreambench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dreambench")
    (root / "prompts_and_classes.txt").write_text(CLASSES)
    (root / "rex").mkdir()
    (root / "bag").mkdir()
    for n in range(3):
        (root / "rex" / f"0{n}.png").write_bytes(photo_png(30 + n, (80, 64)))
        (root / "bag" / f"0{n}.png").write_bytes(photo_png(40 + n, (64, 72)))
    return root


def test_the_harness_reports_losses_gaps_and_psnr(dreambench: Path) -> None:
    from typer.testing import CliRunner

    from unipgen.cli import app

    result = CliRunner().invoke(app, ["bench", "protect", "--quick", "--data", str(dreambench), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [(name, row)] = report["subjects"].items()
    # The first subject (objects first) is evaluated; the model is pre-trained on the other one's photos.
    assert (name, row["class"], row["photos"], report["draws"]) == ("bag", "backpack", 2, 2)
    assert report["budget"]["rounds"] == 1 and report["attack"]["steps"] == 2 and report["model"] == "tiny-pretrained"
    assert report["pretraining"]["subjects"] == ["rex"] and report["pretraining"]["photos"] == 3
    assert report["budget"]["learning_rate"] == report["attack"]["learning_rate"]  # the surrogate learns as the attacker
    assert 20 * math.log10(255 / 4) <= row["psnr"]["min"] <= row["psnr"]["mean"] and row["max_change"] <= 4
    # Every channel of the control moves by 4 (less where clipped at 0 or 255): more than the protection.
    assert 20 * math.log10(255 / 4) <= row["control_psnr"] < row["psnr"]["mean"]
    assert set(row["loss"]) == {"base", "clean", "control", "protected"} and len(row["search_values"]) == 1
    assert row["gap"] == pytest.approx(row["loss"]["protected"] - row["loss"]["clean"], abs=2e-6)
    assert set(row["loss_low_t"]) == set(row["loss"])  # None where no draw fell below LOW_T
    low = row["loss_low_t"]
    assert row["gap_low_t"] is None if low["clean"] is None else \
        row["gap_low_t"] == pytest.approx(low["protected"] - low["clean"], abs=2e-6)
    summary = report["summary"]
    assert summary["subjects"] == 1 and summary["min_psnr"] == row["psnr"]["min"]
    assert summary["passed"] == (row["gap"] > 0 and row["psnr"]["min"] >= 35.0)
    assert {"cpu", "torch", "diffusers", "torch_threads"} <= report["machine"].keys()


def test_the_same_harness_runs_on_a_model_folder_as_on_real_weights(dreambench: Path, tmp_path: Path) -> None:
    """A profile whose image model is a folder on disk (as SD 1.5 would be on the cpu or gpu
    profile) takes the real-weights path: no pre-training, the model as it is, the real
    DreamBooth-LoRA's learning rate for the attacker and the surrogate alike."""
    from unipgen.bench.protect import REAL_ATTACK, run
    from unipgen.modalities.image_tiny import tiny_sd_dir

    profile = (Path(__file__).resolve().parent.parent / "unipgen" / "profiles" / "tiny.toml").read_text()
    profile = profile.replace('type = "diffusers-sd"\nref = "tiny-random"', f'type = "diffusers-sd"\nref = "{tiny_sd_dir()}"')
    assert str(tiny_sd_dir()) in profile
    (tmp_path / "folder.toml").write_text(profile.replace('name = "tiny"', 'name = "folder"'))
    report = run(dreambench, profile=str(tmp_path / "folder.toml"), quick=True)
    assert report["model"] == str(tiny_sd_dir()) and report["pretraining"] is None
    assert report["attack"]["learning_rate"] == report["budget"]["learning_rate"] == REAL_ATTACK[1]
    assert report["budget"]["method"] == "misalign" and report["summary"]["subjects"] == 1
