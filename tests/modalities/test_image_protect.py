"""Anti-DreamBooth protection (misalign, ASPL) on the tiny random Stable Diffusion: the protected photos keep
their size, stay within the budget (so above the PSNR it promises) and use it, are the same for
the same seed, and leave the pipeline as it was."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tests.helpers import photo_png
from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.modalities.image import TINY_SD
from unipgen.modalities.image_protect import ProtectionBudget, protect_images, psnr
from unipgen.modalities.image_training import load_pipeline

SMALL = ProtectionBudget(rounds=2, pgd_steps=2, surrogate_steps=1, step_size=2.0)  # misalign, the default


def pixels(data: bytes) -> Any:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


PHOTOS = [photo_png(1), photo_png(2)]


@pytest.fixture(scope="module")
def pipe() -> Any:
    return load_pipeline(TINY_SD)


@pytest.fixture(scope="module")
def protected(pipe: Any) -> Any:
    return protect_images(TINY_SD, PHOTOS, "dog", budget=SMALL, seed=0, pipeline=pipe)


def test_protected_photos_keep_their_size_and_stay_within_the_budget(protected: Any) -> None:
    assert protected.rounds_done == 2 and len(protected.losses) == 2
    for original, copy in zip(PHOTOS, protected.images):
        before, after = pixels(original), pixels(copy.data)
        assert copy.data.startswith(b"\x89PNG") and after.shape == before.shape == (72, 96, 3)
        change = int(np.abs(after - before).max())
        assert copy.max_change == change and 0 < change <= 4  # epsilon 4: whole levels, never more
        assert copy.psnr == pytest.approx(psnr(before, after)) and copy.psnr >= 20 * math.log10(255 / 4)
    assert protected.meta["budget"]["epsilon"] == 4.0 and protected.meta["prompt"] == "a photo of sks dog"


def test_the_search_spends_its_budget_on_the_pixels_the_model_sees(protected: Any) -> None:
    """The trainer sees the 96x72 photo's centre (a 72x72 square, resized to 64): most of its
    pixels move; the columns it never sees stay as they were. (Whether the change misleads a
    model is measured by `unipgen bench protect`, not here.)"""
    for original, copy in zip(PHOTOS, protected.images):
        change = np.abs(pixels(copy.data) - pixels(original))
        assert (change[:, 16:80] > 0).mean() > 0.5 and change[:, 16:80].mean() >= 1.0
        assert not change[:, :6].any() and not change[:, -6:].any()


def test_the_same_seed_gives_the_same_photos_and_the_pipeline_is_left_as_it_was(pipe: Any, protected: Any) -> None:
    weights = {name: value.clone() for name, value in pipe.unet.state_dict().items()}
    again = protect_images(TINY_SD, PHOTOS, "dog", budget=SMALL, seed=0, pipeline=pipe)
    assert [copy.data for copy in again.images] == [copy.data for copy in protected.images]
    other = protect_images(TINY_SD, PHOTOS[:1], "dog", budget=ProtectionBudget(rounds=1, pgd_steps=1), seed=1,
                           pipeline=pipe)
    assert other.images[0].data != protected.images[0].data
    after = pipe.unet.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[name], weights[name]) for name in weights)
    assert not any(param.requires_grad for param in pipe.unet.parameters())


def test_a_stopped_run_and_an_upright_photo(pipe: Any) -> None:
    """Stopped before its first round, nothing is changed; a photo stored sideways with an EXIF
    orientation is protected upright, as viewers show it."""
    from PIL import Image

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.open(io.BytesIO(photo_png(3, (80, 64)))).save(buffer, format="JPEG", exif=exif)
    result = protect_images(TINY_SD, [buffer.getvalue()], "dog", pipeline=pipe, should_stop=lambda: True)
    [copy] = result.images
    assert result.rounds_done == 0 and result.losses == [] and copy.max_change == 0 and copy.psnr == math.inf
    assert pixels(copy.data).shape == (80, 64, 3)


def test_bad_budgets_and_files_are_refused(pipe: Any) -> None:
    with pytest.raises(InvalidInputError, match="epsilon must be in"):
        protect_images(TINY_SD, PHOTOS, "dog", budget=ProtectionBudget(epsilon=4, step_size=5), pipeline=pipe)
    with pytest.raises(InvalidInputError, match="rounds, pgd_steps and draws must be at least 1"):
        protect_images(TINY_SD, PHOTOS, "dog", budget=ProtectionBudget(rounds=0), pipeline=pipe)
    with pytest.raises(InvalidInputError, match="at least one photo"):
        protect_images(TINY_SD, [], "dog", pipeline=pipe)
    with pytest.raises(UnsupportedMediaError, match="photo 1 to protect is not an image"):
        protect_images(TINY_SD, [PHOTOS[0], b"not an image"], "dog", pipeline=pipe)


def test_psnr() -> None:
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    assert psnr(image, image) == math.inf
    assert psnr(image, image + 4) == pytest.approx(20 * math.log10(255 / 4))


def _gradient_cosine(pipe: Any, photos: list[bytes], against: list[bytes], draws: int = 8) -> float:
    """Cosine of a fresh surrogate LoRA's DreamBooth gradient on `photos` and on `against`, over
    the same fixed draws of noise and timestep (the LoRA seeded as `protect_images` seeds it)."""
    from unipgen.modalities.image_training import (
        default_resolution,
        denoise_loss,
        embed_prompt,
        encode_latents,
        lora_config,
        lora_parameters,
        noise_scheduler,
    )
    from unipgen.modalities.seeding import output_generator

    torch.manual_seed(0)
    pipe.unet.add_adapter(lora_config(4), adapter_name="probe")
    try:
        params, scheduler = lora_parameters(pipe.unet, "probe"), noise_scheduler(pipe)
        states = embed_prompt(pipe, "a photo of sks dog", len(photos) * draws)
        grads = []
        for images in (photos, against):
            latents = encode_latents(pipe, images, default_resolution(pipe), 0).repeat(draws, 1, 1, 1)
            loss = denoise_loss(pipe, scheduler, latents, states, output_generator(5, 0)).mean()
            grads.append(torch.cat([part.flatten() for part in torch.autograd.grad(loss, params)]))
        return float(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0))
    finally:
        pipe.unet.delete_adapters("probe")
        pipe.unet.requires_grad_(False)


def test_misalign_turns_the_fine_tuning_gradient_away_from_the_real_photos(pipe: Any) -> None:
    """`misalign` searches for the change that makes a fine-tune on the protected photos move
    against what it would learn from the real ones: the surrogate's gradient on them points further
    from its gradient on the originals than after ASPL's change or random noise of the same size."""
    budget = ProtectionBudget(rounds=2, pgd_steps=4, surrogate_steps=0, method="misalign")
    misaligned = protect_images(TINY_SD, PHOTOS, "dog", budget=budget, seed=0, pipeline=pipe)
    assert misaligned.meta["budget"]["method"] == "misalign" and all(-1 <= value <= 1 for value in misaligned.losses)
    assert all(0 < copy.max_change <= 4 for copy in misaligned.images)
    rng = np.random.default_rng(0)
    noisy = []
    for photo in PHOTOS:
        from PIL import Image

        image = pixels(photo) + rng.choice([-4, 4], size=pixels(photo).shape)
        buffer = io.BytesIO()
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
        noisy.append(buffer.getvalue())
    aspl = protect_images(TINY_SD, PHOTOS, "dog", budget=replace(budget, method="aspl"), seed=0, pipeline=pipe)
    cosine = _gradient_cosine(pipe, [copy.data for copy in misaligned.images], PHOTOS)
    assert cosine < _gradient_cosine(pipe, noisy, PHOTOS)
    assert cosine < _gradient_cosine(pipe, [copy.data for copy in aspl.images], PHOTOS)
    with pytest.raises(InvalidInputError, match="protection method must be one of aspl, misalign"):
        protect_images(TINY_SD, PHOTOS, "dog", budget=ProtectionBudget(method="glaze"), pipeline=pipe)
