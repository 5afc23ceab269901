"""The face and voice encoders on real photos and recordings (the shipped persona sample).

ORL faces s1-1/s1-2 are one person and s2-1 another; LibriSpeech 1688-…0002/0009 are one speaker
and 1998-…0008 another. Each group is skipped where its optional packages are not installed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from unipgen.core.encoders.base import Encoder, NoFaceFoundError
from unipgen.core.encoders.face import DlibFaceEncoder  # cheap: dlib loads on first encode
from unipgen.core.encoders.voice import ResemblyzerVoiceEncoder  # cheap: likewise torch
from unipgen.errors import InvalidInputError, UnsupportedMediaError

SAMPLE = Path(__file__).resolve().parents[2] / "unipgen" / "data" / "persona-sample"
FACES = [SAMPLE / "faces" / name for name in ("s1-1.pgm", "s1-2.pgm", "s2-1.pgm")]
VOICES = [SAMPLE / "voice" / name for name in
          ("1688-142285-0002.flac", "1688-142285-0009.flac", "1998-15444-0008.flac")]

# find_spec, not importorskip: it does not import (resemblyzer pulls in torch), and each group
# runs where only its own extra is installed.
needs_dlib = pytest.mark.skipif(
    find_spec("dlib") is None or find_spec("face_recognition_models") is None,
    reason="needs dlib and face_recognition_models (the face extra)")
needs_resemblyzer = pytest.mark.skipif(
    find_spec("resemblyzer") is None, reason="needs resemblyzer (the voice extra)")


@pytest.fixture(scope="module")
def face_encoder() -> DlibFaceEncoder:
    return DlibFaceEncoder()


@pytest.fixture(scope="module")
def voice_encoder() -> Iterator[ResemblyzerVoiceEncoder]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on 2 shared cores can be 10x slower
    yield ResemblyzerVoiceEncoder()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def voice_vectors(voice_encoder: ResemblyzerVoiceEncoder) -> np.ndarray:
    return voice_encoder.encode([path.read_bytes() for path in VOICES])


def _wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV")
    return buffer.getvalue()


def _gray_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (128, 128, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- faces -------------------------------------------------------------------------------------

@needs_dlib
def test_face_same_person_is_closer(face_encoder: DlibFaceEncoder) -> None:
    assert isinstance(face_encoder, Encoder)
    assert (face_encoder.space, face_encoder.dim, face_encoder.metric) == ("face", 128, "l2")
    vectors = face_encoder.encode([path.read_bytes() for path in FACES])
    assert vectors.shape == (3, 128) and vectors.dtype == np.float32
    same = np.linalg.norm(vectors[0] - vectors[1])
    different = [np.linalg.norm(vectors[i] - vectors[2]) for i in (0, 1)]
    # 0.6 is dlib's own same-person threshold for these descriptors.
    assert same < 0.6 < min(different)


@needs_dlib
def test_face_errors_name_the_photo(face_encoder: DlibFaceEncoder) -> None:
    with pytest.raises(NoFaceFoundError, match=r"image #1\b"):
        face_encoder.encode([FACES[0].read_bytes(), _gray_png()])
    with pytest.raises(UnsupportedMediaError, match=r"image #0\b"):
        face_encoder.encode([b"not an image at all"])
    assert face_encoder.encode([]).shape == (0, 128)


# ---- voice -------------------------------------------------------------------------------------

@needs_resemblyzer
def test_voice_same_speaker_is_closer(
    voice_encoder: ResemblyzerVoiceEncoder, voice_vectors: np.ndarray
) -> None:
    assert isinstance(voice_encoder, Encoder)
    assert (voice_encoder.space, voice_encoder.dim, voice_encoder.metric) == ("voice", 256, "ip")
    assert voice_vectors.shape == (3, 256) and voice_vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(voice_vectors, axis=1), 1, atol=1e-5)
    cosine = voice_vectors @ voice_vectors.T
    assert cosine[0, 1] > max(cosine[0, 2], cosine[1, 2])


@needs_resemblyzer
def test_voice_stereo_other_rate_matches(
    voice_encoder: ResemblyzerVoiceEncoder, voice_vectors: np.ndarray
) -> None:
    """A 22.05 kHz stereo copy is mixed down and resampled to the same speaker vector."""
    import librosa
    import soundfile

    mono, rate = soundfile.read(VOICES[0], dtype="float32")
    resampled = librosa.resample(mono, orig_sr=rate, target_sr=22_050)
    stereo = np.stack([resampled, 0.5 * resampled], axis=1)
    vector = voice_encoder.encode([_wav_bytes(stereo, 22_050)])[0]
    assert float(vector @ voice_vectors[0]) > 0.95


@needs_resemblyzer
def test_voice_errors(voice_encoder: ResemblyzerVoiceEncoder) -> None:
    import soundfile

    speech, rate = soundfile.read(VOICES[0], dtype="float32")
    with pytest.raises(InvalidInputError, match=r"audio #1 .*at least 1\.0 s"):
        voice_encoder.encode([VOICES[1].read_bytes(), _wav_bytes(speech[: rate // 2], rate)])
    with pytest.raises(InvalidInputError, match=r"audio #0 is silent"):
        voice_encoder.encode([_wav_bytes(np.zeros(3 * rate, dtype=np.float32), rate)])
    with pytest.raises(UnsupportedMediaError, match=r"audio #0\b"):
        voice_encoder.encode([b"RIFF but not really a wave file"])
    assert voice_encoder.encode([]).shape == (0, 256)
