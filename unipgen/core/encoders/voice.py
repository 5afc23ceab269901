"""Resemblyzer speaker embeddings: a recording → the 256-d GE2E voice vector of its speaker.

Resemblyzer (a 3-layer LSTM trained with the GE2E loss; weights ship inside the package) cuts
the speech into 1.6 s windows, embeds each and averages. Its preprocessing normalises the volume
and trims silences with WebRTC VAD. The vectors are L2-normalised and compared by cosine: on
LibriSpeech test-other, two utterances of one speaker average about 0.87, of two speakers 0.52.

``webrtcvad`` imports ``pkg_resources`` (setuptools < 81) at import time, and ``resemblyzer``
imports ``webrtcvad`` from its package ``__init__``, so without ``pkg_resources`` the encoder
cannot load at all; that is reported as a missing dependency with the fix.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from unipgen.core.encoders.base import l2_normalize, require
from unipgen.errors import InvalidInputError, MissingDependencyError, PayloadTooLargeError, UnsupportedMediaError

#: Resemblyzer's model rate; other rates are resampled to it.
SAMPLE_RATE = 16_000

#: The least speech (after silence trimming) that gets an embedding. Shorter clips are padded
#: with zeros to a 1.6 s window by Resemblyzer and their vectors drift: on LibriSpeech, 1 s crops
#: still find their speaker among 99 full utterances 98% of the time, 0.5 s crops only 81%.
MIN_SPEECH_SECONDS = 1.0

#: Default of the most bytes a recording may decode to (frames x channels x float32), checked on
#: the header before reading (`Settings.max_audio_decoded_bytes`).
MAX_DECODED_BYTES = 64 * 1024 * 1024

#: Frames read, downmixed and resampled at a time: the whole signal is never held at the source
#: rate and channel count (a 188 KB FLAC of 192 kHz x 8 channels decodes to 869 MB of float32).
BLOCK_FRAMES = 65_536


class ResemblyzerVoiceEncoder:
    """Recordings (WAV/FLAC/OGG bytes) → L2-normalised 256-d speaker vectors, compared by cosine."""

    space = "voice"
    dim = 256
    metric = "ip"

    def __init__(self, device: str = "cpu", max_decoded_bytes: int = MAX_DECODED_BYTES) -> None:
        self.device = device
        self.max_decoded_bytes = max_decoded_bytes
        self._model: Any = None

    def _load(self) -> Any:
        """The Resemblyzer `VoiceEncoder`, loaded once (a 17 MB LSTM, ~0.1 s)."""
        if self._model is None:
            resemblyzer = _import_resemblyzer()
            self._model = resemblyzer.VoiceEncoder(self.device, verbose=False)
        return self._model

    def encode(self, audio: Sequence[bytes]) -> np.ndarray:
        """(len(audio), 256) float32 unit vectors, one per recording, in order.

        Raises `UnsupportedMediaError` for bytes that are not audio and `InvalidInputError` for a
        recording with less than `MIN_SPEECH_SECONDS` of speech once silences are trimmed.
        """
        if not audio:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        rows = [model.embed_utterance(_speech(data, index, self.max_decoded_bytes))
                for index, data in enumerate(audio)]
        return l2_normalize(np.asarray(rows))


def _import_resemblyzer() -> Any:
    """`import resemblyzer`, quiet about its dependencies' deprecation warnings."""
    with warnings.catch_warnings():
        # webrtcvad warns that pkg_resources is deprecated, resemblyzer imports a deprecated
        # scipy module path: noise for our users, nothing they can act on.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        try:
            return require("resemblyzer", "identity")
        except MissingDependencyError as exc:
            if "pkg_resources" in str(exc):
                raise MissingDependencyError(
                    "resemblyzer needs webrtcvad, which imports pkg_resources: "
                    "pip install 'setuptools<81'"
                ) from exc
            raise


def _speech(data: bytes, index: int, max_decoded_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """The preprocessed 16 kHz waveform Resemblyzer embeds: volume-normalised, silences trimmed."""
    from resemblyzer import preprocess_wav

    wave = _decode_mono_16k(data, index, max_decoded_bytes)
    if len(wave) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
        raise _too_short(index, len(wave) / SAMPLE_RATE)
    if not np.any(wave):
        # Resemblyzer's volume normalisation divides by the RMS: silence would become NaN.
        raise InvalidInputError(f"audio #{index} is silent")
    speech: np.ndarray = preprocess_wav(wave, source_sr=None)  # already at its rate: no librosa resampler
    if len(speech) < MIN_SPEECH_SECONDS * SAMPLE_RATE:
        raise _too_short(index, len(speech) / SAMPLE_RATE)
    return speech


def _decode_mono_16k(data: bytes, index: int, max_decoded_bytes: int) -> np.ndarray:
    """float32 mono samples in [-1, 1] at 16 kHz from audio file bytes, read block by block."""
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            _check_budget(sound.frames, sound.channels, sound.samplerate, index, max_decoded_bytes)
            return _mono_16k(sound, index, max_decoded_bytes)
    except (RuntimeError, TypeError, ValueError) as exc:  # soundfile's errors are RuntimeErrors
        # libsndfile's own reason ("Format not recognised.") without the BytesIO repr around it.
        reason = getattr(exc, "error_string", None) or str(exc)
        raise UnsupportedMediaError(f"audio #{index} is not a readable audio file: {reason}") from None


def _mono_16k(sound: Any, index: int, max_decoded_bytes: int) -> np.ndarray:
    """Each block downmixed, then resampled by a streaming resampler (soxr, the filter librosa
    uses): what is held is the 16 kHz mono result and one block."""
    import soxr

    rate = int(sound.samplerate)
    stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32") if rate != SAMPLE_RATE else None
    parts, frames = [], 0
    for block in sound.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
        frames += len(block)  # a header can lie about its length: count what is decoded
        _check_budget(frames, sound.channels, rate, index, max_decoded_bytes)
        if not np.all(np.isfinite(block)):
            raise InvalidInputError(f"audio #{index} has NaN or infinite samples")
        mono = np.ascontiguousarray(block.mean(axis=1, dtype=np.float32))
        parts.append(stream.resample_chunk(mono) if stream is not None else mono)
    if stream is not None:
        parts.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def _check_budget(frames: int, channels: int, rate: int, index: int, limit: int) -> None:
    decoded = frames * channels * 4
    if decoded > limit:
        raise PayloadTooLargeError(
            f"audio #{index} decodes to {decoded} bytes ({rate} Hz x {channels} channels x {frames / rate:.1f} s "
            f"as float32), over the limit of {limit} bytes (UNIPGEN_MAX_AUDIO_DECODED_BYTES)")


def _too_short(index: int, seconds: float) -> InvalidInputError:
    return InvalidInputError(
        f"audio #{index} has {seconds:.2f} s of speech; at least {MIN_SPEECH_SECONDS:.1f} s "
        "is needed (after silence trimming)"
    )
