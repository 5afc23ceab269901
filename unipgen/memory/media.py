"""Checks on uploaded files: the size limit, and that an image or audio file is what it claims."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from unipgen.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError

#: Decoded images larger than this many pixels are refused (decompression-bomb guard).
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class AudioInfo:
    media_type: str
    duration_s: float
    sample_rate: int


def check_size(data: bytes, limit: int, what: str, *, allow_empty: bool = False) -> None:
    if not data and not allow_empty:
        raise InvalidInputError(f"{what} is empty")
    if len(data) > limit:
        raise PayloadTooLargeError(f"{what} is {len(data)} bytes, over the limit of {limit} bytes")


def sniff_image(data: bytes, what: str = "image") -> str:
    """The media type of an image, after fully decoding it; raises if it is not a valid image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise UnsupportedMediaError(
                        f"{what} is {image.width}x{image.height} pixels, over {MAX_IMAGE_PIXELS}"
                    )
                image.load()
                return Image.MIME.get(image.format or "", "application/octet-stream")
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnsupportedMediaError(f"{what} is not a readable image: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedMediaError(f"{what} is not a readable image: {exc}") from exc


_AUDIO_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}


def sniff_audio(data: bytes, what: str = "audio") -> AudioInfo:
    """Media type, duration and sample rate of an audio file; raises if it is not audio."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise UnsupportedMediaError(f"{what} is not a readable audio file: {exc}") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise UnsupportedMediaError(f"{what} holds no audio frames")
    media_type = _AUDIO_TYPES.get(info.format, "application/octet-stream")
    return AudioInfo(media_type, info.frames / info.samplerate, int(info.samplerate))
