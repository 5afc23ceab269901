"""The MusicGen backend on a tiny random MusicGen built here: WAV out, same bytes for the same
seed, the prompt changes the music, a speech plan is refused; and music for a MovieLens user."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.helpers import movielens_model
from unipgen.errors import InvalidInputError
from unipgen.schema.context import PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest

pytest.importorskip("transformers")
soundfile = pytest.importorskip("soundfile")


def _request(prompt: str, seed: int = 1, method: str = "prompt_only") -> GenerationRequest:
    context = UserContext(tenant="t", user="u", modality="audio", instruction=prompt, profile={},
                          built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="audio", method=method, prompt=prompt, reasons=["test"], budget_tokens=120,
                               used_tokens=3)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed))


@pytest.fixture(scope="module")
def backend():  # noqa: ANN201
    from unipgen.modalities.audio import MusicgenAudioBackend

    music = MusicgenAudioBackend(seconds=2.0)
    music.setup()
    return music


def test_music_is_a_wav_of_the_asked_length_and_the_same_for_the_same_seed(backend) -> None:  # noqa: ANN001
    [[first], [again], [other_seed]] = backend.generate(
        [_request("comedy sunset beach"), _request("comedy sunset beach"), _request("comedy sunset beach", seed=2)],
        fetch=None)
    samples, rate = soundfile.read(io.BytesIO(first.data))
    assert first.media_type == "audio/wav" and rate == 16_000 and abs(len(samples) / rate - 2.0) < 0.1
    assert first.meta["sample_rate"] == 16_000 and first.meta["prompt"] == "comedy sunset beach"
    assert samples.std() > 0  # not silence
    assert first.data == again.data and first.data != other_seed.data


def test_the_prompt_changes_the_music(backend) -> None:  # noqa: ANN001
    [[comedy], [horror]] = backend.generate([_request("comedy sunset beach"), _request("horror forest noir")], None)
    assert comedy.data != horror.data


def test_a_speech_plan_is_refused_with_the_reason(backend) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInputError, match="text-to-speech"):
        backend.generate([_request("say hello", method="speaker_embedding")], None)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with movielens_model(tmp_path_factory.mktemp("audio")) as user_model:
        yield user_model


def test_music_for_a_user_carries_their_taste_and_is_stored_with_lineage(model) -> None:  # noqa: ANN001
    from unipgen.orchestrator import InlineExecutor
    from unipgen.schema.jobs import GenerateSpec

    executor = InlineExecutor(model, backoff_s=0.0)
    spec = GenerateSpec(modality="audio", instruction="music for my evening", options=GenerationOptions(seed=4))
    done = executor.wait("ml", executor.submit("ml", "2", spec, key="music-1").key)
    assert done.status == "succeeded", done.error
    plan = done.result["plan"]
    keywords = [k.text for p in model.context("ml", "2", "audio", "music for my evening").preferences
                for k in p.positive_keywords]
    assert plan["method"] == "prompt_only" and any(word in plan["prompt"] for word in keywords)
    [key] = done.result["artifacts"]
    artifact = model.store.artifacts.artifact("ml", key)
    assert artifact.media_type == "audio/wav" and not any(kind == "document" for kind, _ in artifact.derived_from)
    data, media_type = model.store.artifacts.artifact_blob("ml", key)
    assert soundfile.read(io.BytesIO(data))[1] == 16_000 and media_type == "audio/wav"


def test_every_profile_names_a_music_backend_that_builds() -> None:
    from unipgen.modalities import load_backend
    from unipgen.modalities.audio import MusicgenAudioBackend
    from unipgen.schema.profiles import load_profile, profile_names

    refs = {}
    for name in profile_names():
        backend = load_backend(load_profile(name).backends["audio"])  # built, not loaded: no download
        assert isinstance(backend, MusicgenAudioBackend) and backend.modality == "audio"
        refs[name] = backend.ref
    assert refs == {"tiny": "tiny-random", "offline": "tiny-random", "cpu": "facebook/musicgen-small",
                    "gpu": "facebook/musicgen-melody"}


# -- MusicGen-Melody: the user's recorded tune steers the music --------------------------------


def _tune(freqs: list[float], rate: int = 16_000, note_s: float = 0.4, container: str = "WAV") -> bytes:
    """A recorded tune: one sine note after another."""
    import numpy as np

    t = np.arange(int(rate * note_s)) / rate
    buffer = io.BytesIO()
    notes = [np.zeros(0)] + [0.5 * np.sin(2 * np.pi * f * t) for f in freqs]
    soundfile.write(buffer, np.concatenate(notes), rate, format=container)
    return buffer.getvalue()


C_MAJOR = [261.63, 329.63, 392.0, 523.25]  # C E G C: pitch classes 0 4 7 0
A_MAJOR = [440.0, 493.88, 554.37, 587.33]  # A B C# D: pitch classes 9 11 1 2
BLOBS = {"c-major": _tune(C_MAJOR * 2), "a-major": _tune(A_MAJOR * 2, rate=22_050, container="FLAC"),
         "not-audio": b"this is not a recording", "long": _tune(C_MAJOR * 10)}


def _melody_request(melody: str | None, seed: int = 1) -> GenerationRequest:
    from unipgen.schema.context import Conditioning

    context = UserContext(tenant="t", user="u", modality="audio", instruction="music", profile={},
                          conditioning=Conditioning(melody=melody), built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="audio", method="prompt_only", prompt="comedy sunset beach", reasons=["test"],
                               budget_tokens=120, used_tokens=3)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed))


@pytest.fixture(scope="module")
def melody_backend():  # noqa: ANN201
    from unipgen.modalities.audio_melody import MusicgenMelodyAudioBackend

    music = MusicgenMelodyAudioBackend(seconds=2.0, max_melody_seconds=5.0)
    music.setup()
    return music


def test_the_chromagram_finds_the_notes_of_a_tune_at_any_sample_rate() -> None:
    from unipgen.modalities.audio import decode_clip
    from unipgen.modalities.audio_melody import melody_chroma

    for key, notes in [("c-major", [0, 4, 7, 0]), ("a-major", [9, 11, 1, 2])]:
        samples = decode_clip(BLOBS[key], 16_000, 30.0, key)  # the A major clip is a 22.05 kHz FLAC
        assert abs(len(samples) - 16_000 * 3.2) <= 2
        chroma = melody_chroma(samples, 16_000, n_fft=2048, hop_length=1024)
        assert chroma.shape == (51, 12) and (chroma.sum(axis=1) == 1).all()  # one-hot rows
        # the loudest pitch class in the middle of each 0.4 s note (6.25 frames) is that note's
        assert [int(chroma[int(6.25 * i + 3)].argmax()) for i in range(4)] == notes


def test_a_melody_steers_the_music_and_stays_deterministic(melody_backend) -> None:  # noqa: ANN001
    import numpy as np

    [[plain], [c_major], [a_major], [c_again], [c_seed2]] = melody_backend.generate(
        [_melody_request(None), _melody_request("c-major"), _melody_request("a-major"), _melody_request("c-major"),
         _melody_request("c-major", seed=2)], BLOBS.get)
    waves = [soundfile.read(io.BytesIO(output.data)) for output in (plain, c_major, a_major)]
    assert all(rate == 16_000 and abs(len(wave) / rate - 2.0) < 0.1 and wave.std() > 0 for wave, rate in waves)
    assert plain.meta["melody"] is None and plain.meta["melody_seconds"] == 0.0
    assert c_major.meta["melody"] == "c-major" and c_major.meta["melody_seconds"] == 3.2
    assert c_major.data == c_again.data and c_major.data != c_seed2.data
    for one, other in [(0, 1), (0, 2), (1, 2)]:  # none vs each clip, and the two clips
        assert np.abs(waves[one][0] - waves[other][0]).mean() > 1e-4


def test_the_melody_clip_is_cut_to_max_melody_seconds(melody_backend) -> None:  # noqa: ANN001
    [[long]] = melody_backend.generate([_melody_request("long")], BLOBS.get)
    assert long.meta["melody_seconds"] == 5.0  # the clip is 16 s


def test_a_melody_that_is_not_audio_is_refused(melody_backend) -> None:  # noqa: ANN001
    from unipgen.errors import UnsupportedMediaError

    with pytest.raises(UnsupportedMediaError, match="melody reference not-audio is not an audio file"):
        melody_backend.generate([_melody_request("not-audio")], BLOBS.get)
    with pytest.raises(UnsupportedMediaError, match="no audio samples"):
        melody_backend.generate([_melody_request("empty")], {"empty": _tune([])}.get)
