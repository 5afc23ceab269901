"""What a score is, said once (`unipgen.tiny`): every model component knows from its reference
whether its weights are random, and a score it computes is then a mechanical check, labelled as
such wherever it is shown; a score from trained weights is a measure."""

from __future__ import annotations

import pytest

from unipgen.core.encoders import load_encoder
from unipgen.modalities import CAPTION, load_backend, load_captioner
from unipgen.schema.profiles import load_profile
from unipgen.tiny import MEASURE, MECHANICAL, TINY_RANDOM, has_random_weights, is_random, score_kind, shown_score

pytest.importorskip("transformers")


class _Model:
    def __init__(self, ref: str) -> None:
        self.random_weights = is_random(ref)


def test_the_kind_follows_the_weights_of_every_model_involved() -> None:
    assert is_random(TINY_RANDOM) and not is_random("openai/clip-vit-base-patch32") and not is_random(None)
    tiny, real = _Model(TINY_RANDOM), _Model("openai/clip-vit-base-patch32")
    assert score_kind(real) == MEASURE and score_kind(tiny) == MECHANICAL and score_kind(real, tiny) == MECHANICAL
    assert score_kind(object()) == MEASURE and not has_random_weights(object())  # dlib, Resemblyzer, Kokoro
    assert shown_score(0.98976, MECHANICAL) == "0.990 (mechanical check: random weights)"
    assert shown_score(0.98976, MEASURE) == shown_score(0.98976, None) == "0.990"


@pytest.mark.parametrize("name", ["tiny", "offline", "cpu", "gpu"])
def test_every_component_of_a_profile_knows_whether_its_weights_are_random(name: str) -> None:
    """Built from the profile, not loaded: no download. The tiny and offline profiles' CLIP, CLAP
    and generators are random (not the packaged MiniLM, dlib, Resemblyzer, Kokoro or SmolLM2)."""
    profile = load_profile(name)
    random_encoders = {role for role, spec in profile.encoders.items() if has_random_weights(load_encoder(spec))}
    backends = {role: load_captioner(spec) if role == CAPTION else load_backend(spec)
                for role, spec in profile.backends.items()}
    random_backends = {role for role, backend in backends.items() if has_random_weights(backend)}
    if name in ("cpu", "gpu"):
        assert random_encoders == random_backends == set()
    else:
        assert random_encoders == {"image", "clap"}
        expected = {"image", "video", "audio", "3d", "caption"} | ({"text"} if name == "tiny" else set())
        assert random_backends == expected
