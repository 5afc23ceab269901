"""The image-to-text backend (BLIP through transformers) on its tiny random pair: captions follow
the image, answers follow the question, the same image gives the same words, a saved folder loads
like the tiny reference, and bad inputs and profiles are named."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.helpers import png_bytes
from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.modalities import load_captioner
from unipgen.modalities.base import Captioner
from unipgen.modalities.caption import BlipCaptioner
from unipgen.modalities.caption_tiny import CAPTION_FOLDER, VQA_FOLDER, tiny_blip_dir
from unipgen.schema.profiles import ComponentSpec, load_profile, profile_names

pytest.importorskip("transformers")


def noise_png(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def captioner() -> BlipCaptioner:
    built = load_captioner(load_profile("tiny").backends["caption"])
    assert isinstance(built, BlipCaptioner) and isinstance(built, Captioner)
    built.setup()
    return built


def test_captions_follow_the_image_and_repeat_for_the_same_one(captioner: BlipCaptioner) -> None:
    red, blue = png_bytes("red", (40, 30)), png_bytes("blue", (40, 30))
    together = captioner.caption([red, blue])
    assert together == [captioner.caption([red])[0], captioner.caption([blue])[0]]  # a batch changes no words
    assert together[0] != together[1] and all(together)
    assert captioner.caption([red]) == captioner.caption([red]) and captioner.caption([]) == []


def test_answers_follow_the_question(captioner: BlipCaptioner) -> None:
    photo = noise_png(1)
    color, count = captioner.answer(photo, "what color is it?"), captioner.answer(photo, "how many dogs are there?")
    assert color != count and color == captioner.answer(photo, "  what color is it?  ")


def test_a_saved_folder_loads_like_the_tiny_reference(captioner: BlipCaptioner) -> None:
    folder = BlipCaptioner(ref=str(tiny_blip_dir() / CAPTION_FOLDER), vqa_ref=str(tiny_blip_dir() / VQA_FOLDER))
    photo = noise_png(2)
    assert not folder.random_weights and captioner.random_weights  # the tiny reference, not the folder, says so
    assert folder.caption([photo]) == captioner.caption([photo])
    assert folder.answer(photo, "where is it?") == captioner.answer(photo, "where is it?")


def test_bad_images_and_questions_are_named(captioner: BlipCaptioner) -> None:
    with pytest.raises(UnsupportedMediaError, match="image 2 is not an image"):
        captioner.caption([png_bytes(), b"not an image"])
    with pytest.raises(InvalidInputError, match="the question is empty"):
        captioner.answer(png_bytes(), "   ")
    with pytest.raises(InvalidInputError, match="over 500"):
        captioner.answer(png_bytes(), "why " * 200)
    hub = BlipCaptioner(ref="Salesforce/blip-image-captioning-base")  # built, nothing loaded
    with pytest.raises(InvalidInputError, match="no visual-question model: set the profile's caption option vqa_ref"):
        hub.answer(png_bytes(), "what is it?")


def test_every_profile_names_a_captioner_and_says_whether_its_weights_are_random() -> None:
    for name in profile_names():
        built = load_captioner(load_profile(name).backends["caption"])  # built, not loaded: no download
        assert built.random_weights == (name in ("tiny", "offline")), name
    cpu = load_captioner(load_profile("cpu").backends["caption"])
    assert cpu.models() == {"model": "Salesforce/blip-image-captioning-base", "vqa_model": "Salesforce/blip-vqa-base",
                            "random_weights": False}
    with pytest.raises(InvalidInputError, match="'transformers-lm' does not caption images"):
        load_captioner(load_profile("tiny").backends["text"])
    with pytest.raises(NotFoundError, match="unknown backend type 'nope'"):
        load_captioner(ComponentSpec(type="nope"))
    with pytest.raises(InvalidInputError, match="num_beams must be 1 to 16"):
        BlipCaptioner(num_beams=0)
