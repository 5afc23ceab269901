"""Training image adapters on the tiny random Stable Diffusion: DreamBooth-LoRA (loss falls, the
LoRA loads in plain diffusers and in the backend, prior preservation, cancel, resume) and textual
inversion (only the new token's row moves, the embedding loads and changes the image)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tests.helpers import fetch, put, stop_after
from unipgen.errors import InvalidInputError
from unipgen.modalities.image import LORA_WEIGHT_NAME, TINY_SD, DiffusersImageBackend, tiny_sd_dir
from unipgen.modalities.image_training import (
    TrainedImageAdapter,
    load_pipeline,
    train_dreambooth_lora,
    train_textual_inversion,
)
from unipgen.schema.context import AdapterRef, Conditioning, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest


def reference(color: tuple[int, int, int], shape: str) -> bytes:
    """A 64x64 PNG of one coloured shape on white: a stand-in for a subject photo."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if shape == "square":
        draw.rectangle((12, 12, 52, 52), fill=color)
    elif shape == "disc":
        draw.ellipse((12, 12, 52, 52), fill=color)
    else:
        draw.polygon([(32, 8), (56, 56), (8, 56)], fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [reference((255, 0, 0), "square"), reference((0, 0, 255), "disc"), reference((0, 160, 0), "triangle")]


def draw(pipe: Any, prompt: str, seed: int = 0) -> Any:
    """One 2-step image as a numpy array."""
    return pipe(prompt=prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(seed),
                output_type="np").images[0]


def request(context: UserContext, method: str, prompt: str, adapters: tuple[str, ...]) -> GenerationRequest:
    plan = PersonalizationPlan(modality="image", method=method, prompt=prompt, negative_prompt="", reasons=["test"],
                               subject=None, adapters=list(adapters), budget_tokens=77, used_tokens=8)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions())


def user_with(*refs: AdapterRef) -> UserContext:
    return UserContext(tenant="t", user="u", modality="image", instruction="x", profile={},
                       conditioning=Conditioning(adapters=list(refs)), built_at=datetime(2024, 1, 1, tzinfo=UTC))


@pytest.fixture(scope="module")
def pipe() -> Any:
    """One tiny pipeline shared by the LoRA runs (each deletes its adapter when done)."""
    torch.set_num_threads(1)
    return load_pipeline(TINY_SD)


@pytest.fixture(scope="module")
def trained(pipe: Any) -> TrainedImageAdapter:
    return train_dreambooth_lora(TINY_SD, IMAGES, "dog", steps=24, learning_rate=3e-2, prior_preservation=False,
                                 pipeline=pipe)


# ---------------------------------------------------------------- DreamBooth-LoRA


def test_dreambooth_loss_falls(trained: TrainedImageAdapter) -> None:
    losses = trained.losses
    assert trained.steps_done == 24 and len(losses) == 24
    first, second = sum(losses[:12]) / 12, sum(losses[12:]) / 12
    assert second < first - 0.01, (first, second)
    assert trained.prompt == "a photo of sks dog"
    assert trained.meta["method"] == "lora" and trained.meta["num_class_images"] == 0


def test_lora_loads_in_plain_diffusers_and_changes_the_image(trained: TrainedImageAdapter, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(tiny_sd_dir(), safety_checker=None)
    plain.set_progress_bar_config(disable=True)
    before = draw(plain, trained.prompt)
    (tmp_path / LORA_WEIGHT_NAME).write_bytes(trained.data)
    plain.load_lora_weights(str(tmp_path), weight_name=LORA_WEIGHT_NAME)
    after = draw(plain, trained.prompt)
    assert abs(after - before).max() > 1e-3


def test_lora_serves_through_the_backend(trained: TrainedImageAdapter) -> None:
    context = user_with(AdapterRef(key="mine", method="lora", blob_sha=put(trained.data)))
    backend = DiffusersImageBackend()
    [[plain]] = backend.generate([request(context, "prompt_only", trained.prompt, ())], fetch)
    [[lora]] = backend.generate([request(context, "lora", trained.prompt, ("mine",))], fetch)
    assert lora.data != plain.data and lora.meta["adapters"] == ["mine"]


def test_prior_preservation_draws_class_images_and_changes_the_loss(pipe: Any) -> None:
    args = {"steps": 2, "learning_rate": 3e-2, "pipeline": pipe}
    with_prior = train_dreambooth_lora(TINY_SD, IMAGES, "dog", num_class_images=3, class_image_steps=2, **args)
    without = train_dreambooth_lora(TINY_SD, IMAGES, "dog", prior_preservation=False, **args)
    assert with_prior.meta["num_class_images"] == 3 and with_prior.meta["class_prompt"] == "a photo of dog"
    assert with_prior.losses[0] != without.losses[0]
    given = train_dreambooth_lora(TINY_SD, IMAGES, "dog", class_images=IMAGES[:2], **args)
    assert given.meta["num_class_images"] == 2


def test_cancel_stops_after_n_steps(pipe: Any) -> None:
    result = train_dreambooth_lora(TINY_SD, IMAGES, "dog", steps=10, prior_preservation=False,
                                   should_stop=stop_after(3), pipeline=pipe)
    assert result.steps_done == 3 and len(result.losses) == 3 and result.data


def test_interrupted_then_resumed_equals_uninterrupted(pipe: Any, tmp_path: Path) -> None:
    args = {"steps": 6, "learning_rate": 3e-2, "num_class_images": 2, "class_image_steps": 2, "checkpoint_every": 3,
            "pipeline": pipe}
    whole = train_dreambooth_lora(TINY_SD, IMAGES, "dog", checkpoint_dir=tmp_path / "a", **args)
    cut = train_dreambooth_lora(TINY_SD, IMAGES, "dog", checkpoint_dir=tmp_path / "b", should_stop=stop_after(4),
                                **args)
    assert cut.steps_done == 4
    resumed = train_dreambooth_lora(TINY_SD, IMAGES, "dog", checkpoint_dir=tmp_path / "b", **args)
    assert resumed.meta["resumed_from"] == 4 and resumed.steps_done == 6
    assert resumed.losses == whole.losses and resumed.data == whole.data
    with pytest.raises(InvalidInputError, match="different training run"):
        train_dreambooth_lora(TINY_SD, IMAGES[:1], "dog", checkpoint_dir=tmp_path / "b", **args)


# ---------------------------------------------------------------- textual inversion


def test_textual_inversion_moves_only_the_new_row_and_changes_the_image() -> None:
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load

    torch.set_num_threads(1)
    own = load_pipeline(TINY_SD)
    table = own.text_encoder.get_input_embeddings().weight
    before = table.detach().clone()
    start = train_textual_inversion(TINY_SD, IMAGES, steps=0)  # the initializer's embedding, untrained
    result = train_textual_inversion(TINY_SD, IMAGES, steps=4, learning_rate=5e-2, pipeline=own)
    assert result.meta["token"] == "<sks>" and result.prompt == "a photo of <sks>" and len(result.losses) == 4
    learned, initial = load(result.data)["<sks>"], load(start.data)["<sks>"]
    assert torch.equal(table[: before.shape[0]], before)  # the old rows are exactly as they were
    assert torch.equal(table[before.shape[0]], learned) and not torch.equal(learned, initial)

    images = []
    for data in (start.data, result.data):
        plain = StableDiffusionPipeline.from_pretrained(tiny_sd_dir(), safety_checker=None)
        plain.set_progress_bar_config(disable=True)
        plain.load_textual_inversion(load(data), token="<sks>")
        images.append(draw(plain, "a photo of <sks> in the snow"))
    assert abs(images[0] - images[1]).max() > 1e-4


def test_textual_inversion_serves_through_the_backend_and_cancels() -> None:
    torch.set_num_threads(1)
    result = train_textual_inversion(TINY_SD, IMAGES, steps=5, learning_rate=5e-2, should_stop=stop_after(2))
    assert result.steps_done == 2
    context = user_with(AdapterRef(key="ti", method="textual_inversion", blob_sha=put(result.data),
                                   meta=result.meta))
    [[output]] = DiffusersImageBackend().generate([request(context, "textual_inversion", result.prompt, ("ti",))],
                                                  fetch)
    assert output.data.startswith(b"\x89PNG")
