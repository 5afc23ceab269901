"""The SpeechT5 backend on a tiny random SpeechT5 built here: a decodable 16 kHz WAV (or FLAC), the
same bytes for the same seed, the speaker vector changes the voice, bad text and a missing
speaker source are refused with the reason."""

from __future__ import annotations

import importlib.util
import io
from datetime import UTC, datetime

import numpy as np
import pytest

from unipgen.errors import InvalidInputError, MissingDependencyError
from unipgen.schema.context import Conditioning, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
soundfile = pytest.importorskip("soundfile")

TEXT = "hello there, how are you?"


def _voice(seed: int) -> list[float]:
    """A unit 256-d vector standing in for a user's mean Resemblyzer embedding."""
    vector = np.random.default_rng(seed).normal(size=256)
    return (vector / np.linalg.norm(vector)).tolist()


def _request(text: str = TEXT, method: str = "speaker_embedding", voice: list[float] | None = None, seed: int = 1,
             samples: dict[str, str] | None = None, user: str = "u") -> GenerationRequest:
    conditioning = Conditioning(voice_embedding=voice, voice_samples=samples or {})
    context = UserContext(tenant="t", user=user, modality="speech", instruction=text, profile={},
                          conditioning=conditioning, built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="speech", method=method, prompt=text, reasons=["test"], budget_tokens=120,
                               used_tokens=3)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed))


def _samples(output) -> np.ndarray:  # noqa: ANN001
    samples, rate = soundfile.read(io.BytesIO(output.data))
    assert rate == 16_000
    return samples


@pytest.fixture(scope="module")
def backend():  # noqa: ANN201
    import torch

    from unipgen.modalities.speech_t5 import SpeechT5Backend

    torch.set_num_threads(1)
    speech = SpeechT5Backend(max_length_ratio=4.0)  # ~0.5 s of speech per 8 characters: quick
    speech.setup()
    return speech


def test_speech_is_a_16_khz_wav_and_the_same_for_the_same_seed(backend) -> None:  # noqa: ANN001
    [[first], [again], [other_seed]] = backend.generate(
        [_request(voice=_voice(1)), _request(voice=_voice(1)), _request(voice=_voice(1), seed=2)], fetch=None)
    samples = _samples(first)
    assert first.media_type == "audio/wav" and samples.std() > 0.01  # not silence
    assert first.meta["sample_rate"] == 16_000 and abs(first.meta["seconds"] - len(samples) / 16_000) < 1e-3
    assert first.meta["prompt"] == TEXT and first.meta["method"] == "speaker_embedding" and first.meta["seed"] == 1
    assert first.meta["speaker_source"] == "resemblyzer:voice_embedding" and first.meta["model"] == "tiny-random"
    assert first.data == again.data and first.data != other_seed.data


def test_the_speaker_vector_changes_the_voice(backend) -> None:  # noqa: ANN001
    [[default], [alice], [bob]] = backend.generate(
        [_request(method="prompt_only", voice=_voice(1)), _request(voice=_voice(1), user="alice"),
         _request(voice=_voice(2), user="bob")], fetch=None)
    assert default.meta["speaker_source"] == "default:zeros"
    waves = [_samples(output) for output in (default, alice, bob)]
    assert len({len(wave) for wave in waves}) == 1  # same text, same length: only the voice differs
    for one, other in [(0, 1), (0, 2), (1, 2)]:
        assert np.abs(waves[one] - waves[other]).mean() > 0.005


def test_longer_text_gives_longer_speech_and_flac_decodes() -> None:
    from unipgen.modalities.speech_t5 import SpeechT5Backend

    speech = SpeechT5Backend(max_length_ratio=2.0, audio_format="flac")
    [[short], [long]] = speech.generate([_request("hi.", voice=_voice(1)), _request(TEXT, voice=_voice(1))], None)
    assert short.media_type == "audio/flac" and 0 < len(_samples(short)) < len(_samples(long))


def test_empty_too_long_and_unvoiced_requests_are_refused(backend) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInputError, match="no text to speak"):
        backend.generate([_request("   ", voice=_voice(1))], None)
    with pytest.raises(InvalidInputError, match="limit is 400"):
        backend.generate([_request("a" * 401, voice=_voice(1))], None)
    with pytest.raises(InvalidInputError, match="no voice embedding"):
        backend.generate([_request()], None)
    with pytest.raises(InvalidInputError, match="cannot apply 'lora'"):
        backend.generate([_request(method="lora", voice=_voice(1))], None)


def test_a_resemblyzer_vector_that_does_not_fit_the_model_is_refused(backend) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInputError, match="128 values"):
        backend.generate([_request(voice=[0.1] * 128)], None)
    from unipgen.modalities.speech_t5 import SpeechT5Backend

    with pytest.raises(InvalidInputError, match="default_speaker has 3 values"):
        SpeechT5Backend(default_speaker=[0.0, 1.0, 0.0]).setup()


@pytest.mark.skipif(importlib.util.find_spec("speechbrain") is not None, reason="speechbrain is installed")
def test_the_speechbrain_encoder_without_speechbrain_says_what_to_install() -> None:
    from unipgen.modalities.speech_t5 import SpeechT5Backend

    speech = SpeechT5Backend(speaker_encoder="speechbrain/spkrec-xvect-voxceleb", max_length_ratio=1.0)
    request = _request(samples={"hello": "ab" * 32})
    with pytest.raises(MissingDependencyError, match="needs the speechbrain package"):
        speech.generate([request], fetch=lambda sha: b"")
    with pytest.raises(InvalidInputError, match="no voice recordings"):
        speech.generate([_request(voice=_voice(1))], None)
    [[plain]] = speech.generate([_request(method="prompt_only")], None)  # no speaker needed: still speaks
    assert plain.meta["speaker_source"] == "default:zeros"
