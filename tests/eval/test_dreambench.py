"""The DreamBench harness: a quick run on a synthetic DreamBench-layout folder (structure, score
ranges, baseline, the plans the router chose, report files), prompt parsing, bad folders, and a
quick run on the shared DreamBench when it is there."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")

from unipgen.core.router import mentioned_subject
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval.dreambench import (
    PUBLISHED,
    class_prompt,
    dreambench_prompts,
    personal_instruction,
    pick_subjects,
    run_dreambench,
)
from unipgen.schema.context import SubjectAsset

PROMPTS = """Classes

subject_name,class
red_toy,toy
pup,dog
absent,vase

Prompts

Object Prompts

prompt_list = [
'a {0} {1} in the jungle'.format(unique_token, class_token),
'a red {0} {1}'.format(unique_token, class_token),
'a cube shaped {0} {1}'.format(unique_token, class_token)
]

Live Subject Prompts

prompt_list = [
'a {0} {1} in the snow'.format(unique_token, class_token),
'a {0} {1} wearing a red hat'.format(unique_token, class_token),
]
"""


def _png(color: tuple[int, int, int], shape: str) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if shape == "disc" else draw.rectangle)((12, 12, 52, 52), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_dreambench(root: Path) -> Path:
    """2 subjects × 2 PNGs and a prompts file in the DreamBench layout ("absent" has no folder)."""
    for subject, color in (("red_toy", (220, 30, 30)), ("pup", (120, 80, 40))):
        (root / subject).mkdir(parents=True)
        for number, shape in enumerate(("square", "disc")):
            (root / subject / f"0{number}.png").write_bytes(_png(color, shape))
    (root / "prompts_and_classes.txt").write_text(PROMPTS, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dreambench")
    return run_dreambench(make_dreambench(root / "data"), quick=True, out=root / "report")


def test_prompt_templates_become_instructions_the_router_routes(tmp_path: Path) -> None:
    objects, live = dreambench_prompts(make_dreambench(tmp_path))
    assert objects[1] == "a red {0} {1}" and live == ["a {0} {1} in the snow", "a {0} {1} wearing a red hat"]
    assert class_prompt(objects[2], "stuffed animal") == "a cube shaped stuffed animal"
    asked = personal_instruction(objects[2], "stuffed animal")
    assert asked == "a cube shaped version of my stuffed animal"
    assert personal_instruction(live[0], "dog") == "my dog in the snow"
    plush = SubjectAsset(key="bear_plushie", name="bear_plushie", class_noun="stuffed animal", image_shas=[])
    assert mentioned_subject(asked, [plush]) == plush
    assert mentioned_subject(class_prompt(objects[2], "stuffed animal"), [plush]) is None  # the baseline's prompt


def test_quick_run_scores_every_method_and_the_baseline(quick: dict[str, Any]) -> None:
    settings, results = quick["settings"], quick["results"]
    assert settings["subjects"] == ["red_toy", "pup"]  # an object and a live subject; "absent" has no folder
    assert [s["kind"] for s in quick["subjects"]] == ["object", "live"]
    assert list(results) == ["baseline", "ip-adapter", "lora"]
    plans = {name: entry["plan_method"] for name, entry in results.items()}
    assert plans == {"baseline": "prompt_only", "ip-adapter": "ip_adapter", "lora": "lora"}
    for entry in results.values():
        assert set(entry["per_subject"]) == {"red_toy", "pup"}
        for row in entry["per_subject"].values():
            assert row["images"] == 2  # 2 prompts × 1 image
            assert all(-1 <= row[k] <= 1 for k in ("dino_i", "clip_i", "clip_t"))
        mean = entry["mean"]
        rows = entry["per_subject"].values()
        assert math.isclose(mean["dino_i"], sum(r["dino_i"] for r in rows) / 2)
    lora = results["lora"]
    assert lora["train_seconds"] > 0 and all(r["loss_first_last"] for r in lora["per_subject"].values())
    assert results["ip-adapter"]["train_seconds"] is None
    assert math.isclose(lora["vs_baseline"]["clip_i"], lora["mean"]["clip_i"] - results["baseline"]["mean"]["clip_i"])
    # personalized images differ from the baseline's: the subject conditioning reached the pipeline
    assert results["ip-adapter"]["per_subject"]["pup"]["clip_i"] != results["baseline"]["per_subject"]["pup"]["clip_i"]


def test_real_images_and_published_numbers_are_reported(quick: dict[str, Any]) -> None:
    real = quick["real_images"]["per_subject"]
    assert all(0 < row["clip_i"] <= 1 and row["images"] == 2 for row in real.values())
    assert quick["published"]["DreamBooth (Stable Diffusion)"] == {"dino_i": 0.668, "clip_i": 0.803, "clip_t": 0.305}
    assert quick["published"]["Real images"]["dino_i"] == PUBLISHED["Real images"]["dino_i"] == 0.774
    assert quick["machine"]["cores"] >= 1 and quick["seconds"] > 0


def test_report_files_link_a_real_plot(quick: dict[str, Any]) -> None:
    from PIL import Image

    files = {k: Path(v) for k, v in quick["report"].items()}
    assert json.loads(files["json"].read_text())["results"]["baseline"]["mean"] == quick["results"]["baseline"]["mean"]
    page = files["html"].read_text()
    assert f"src='{files['plot'].name}'" in page and "prompt_only" in page
    assert f"]({files['plot'].name})" in files["markdown"].read_text()
    with Image.open(files["plot"]) as plot:
        assert plot.format == "PNG" and plot.width > 300 and len(plot.getcolors(1 << 20) or []) > 10
    assert (files["html"].parent / "samples" / "pup-lora.png").is_file() and "samples/pup-lora.png" in page
    # the tiny models' figures are labelled mechanical checks, from the models' weights
    assert quick["score_kinds"] == {"dino_i": "mechanical check", "clip_i": "mechanical check",
                                    "clip_t": "mechanical check"}
    assert "CLIP-I (mechanical check)" in page and "mean nothing about the methods" in page


def test_bad_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        run_dreambench(tmp_path / "nowhere", quick=True, out=tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="prompts_and_classes.txt not found"):
        run_dreambench(tmp_path / "empty", quick=True, out=tmp_path / "out")
    data = make_dreambench(tmp_path / "data")
    (data / "prompts_and_classes.txt").write_text("Classes\n\nsubject_name,class\npup,dog\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="no object prompts"):
        run_dreambench(data, quick=True, out=tmp_path / "out")


def test_bad_options_are_named(tmp_path: Path) -> None:
    data = make_dreambench(tmp_path / "data")
    with pytest.raises(InvalidInputError, match="unknown method"):
        run_dreambench(data, methods="dreambooth-full", out=tmp_path / "out")
    with pytest.raises(NotFoundError, match="absent"):
        pick_subjects(data, {"pup": "dog", "absent": "vase"}, ["absent"])
    with pytest.raises(InvalidInputError, match="images_per_prompt"):
        run_dreambench(data, images_per_prompt=0, out=tmp_path / "out")


@pytest.mark.shared_data
def test_quick_run_on_shared_dreambench(shared_data: Path, tmp_path: Path) -> None:
    result = run_dreambench(shared_data / "dreambench", quick=True, methods="ip-adapter", out=tmp_path / "out")
    assert len(result["subjects"]) == 2 and {s["kind"] for s in result["subjects"]} == {"object", "live"}
    assert result["settings"]["prompts_per_subject"] == 2
    assert set(result["results"]) == {"baseline", "ip-adapter"}
    assert all(-1 <= v <= 1 for entry in result["results"].values() for v in entry["mean"].values())
