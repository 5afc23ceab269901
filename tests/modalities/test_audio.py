"""The MusicGen backend on a tiny random MusicGen built here: WAV out, same bytes for the same
seed, the prompt changes the music, a speech plan is refused; and music for a MovieLens user."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
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
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    root: Path = tmp_path_factory.mktemp("audio")
    store = MemoryStore.open(Settings(home=root / "home"))
    load_movielens(store, "ml", SAMPLE, users=2)
    user_model = UserModel(store, "tiny", cache_dir=root / "cache")
    user_model.embed_missing("ml")
    yield user_model
    store.close()


def test_music_for_a_user_carries_their_taste_and_is_stored_with_lineage(model) -> None:  # noqa: ANN001
    from unipgen.orchestrator.executor import InlineExecutor
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
    artifact = model.store.artifact("ml", key)
    assert artifact.media_type == "audio/wav" and not any(kind == "document" for kind, _ in artifact.derived_from)
    data, media_type = model.store.artifact_blob("ml", key)
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
                    "gpu": "facebook/musicgen-medium"}
