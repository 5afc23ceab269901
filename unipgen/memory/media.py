"""Checks on uploaded files, each before the expensive step it guards: the size of the bytes, then
what the header declares (an image's sides, aspect ratio and pixel count; a recording's decoded
size, rate x channels x seconds as float32), and only then a decode. A 38 KB PNG can declare
39,000,000 x 1 pixels and a 188 KB FLAC can decode to 869 MB: the header says so for free.

Every limit is a setting (`MediaLimits.from_settings`), and every refusal names the limit and
its environment variable, so an operator knows which one to raise."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, PayloadTooLargeError, UnsupportedMediaError

if TYPE_CHECKING:
    from unipgen.settings import Settings

#: Default of `Settings.max_image_pixels` (decompression-bomb guard), for callers without settings.
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class MediaLimits:
    """The budgets of decoded media (the defaults are `Settings`' defaults)."""

    max_image_pixels: int = MAX_IMAGE_PIXELS
    max_image_side: int = 12_000
    max_image_aspect: float = 20.0
    max_audio_decoded_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaLimits:
        return cls(settings.max_image_pixels, settings.max_image_side, settings.max_image_aspect,
                   settings.max_audio_decoded_bytes)


@dataclass(frozen=True)
class AudioInfo:
    media_type: str
    duration_s: float
    sample_rate: int
    channels: int = 1
    frames: int = 0

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the whole recording decoded to float32 (what a naive `soundfile.read` holds)."""
        return self.frames * self.channels * 4


def check_size(data: bytes, limit: int, what: str, *, allow_empty: bool = False) -> None:
    if not data and not allow_empty:
        raise InvalidInputError(f"{what} is empty")
    if len(data) > limit:
        raise PayloadTooLargeError(f"{what} is {len(data)} bytes, over the limit of {limit} bytes "
                                   "(UNIPGEN_MAX_BLOB_BYTES)")


def check_dimensions(width: int, height: int, what: str, limits: MediaLimits) -> None:
    """Refuse an image from its declared size: each side, the aspect ratio, the pixel count."""
    size = f"{what} is {width}x{height} pixels"
    if max(width, height) > limits.max_image_side:
        raise PayloadTooLargeError(f"{size}: a side is over the limit of {limits.max_image_side} pixels "
                                   "(UNIPGEN_MAX_IMAGE_SIDE)")
    if min(width, height) < 1:
        raise UnsupportedMediaError(f"{size}: an image needs at least one pixel")
    if max(width, height) / min(width, height) > limits.max_image_aspect:
        raise InvalidInputError(f"{size}: its aspect ratio is over the limit of {limits.max_image_aspect:g}:1 "
                                "(UNIPGEN_MAX_IMAGE_ASPECT)")
    if width * height > limits.max_image_pixels:
        raise PayloadTooLargeError(f"{size}, over the limit of {limits.max_image_pixels} pixels "
                                   "(UNIPGEN_MAX_IMAGE_PIXELS)")


def image_header(data: bytes, what: str = "image", limits: MediaLimits | None = None) -> str:
    """The media type of an image from its header alone (nothing decoded), its size checked."""
    with open_image(data, what, limits) as image:
        return _media_type(image)


def sniff_image(data: bytes, what: str = "image", limits: MediaLimits | None = None) -> str:
    """The media type of an image, after checking its header and decoding it (JPEG at a reduced
    scale: libjpeg checks the whole stream at 1/8 of the memory); raises if it is not a valid image."""
    with open_image(data, what, limits) as image:
        media_type = _media_type(image)
        with _decode_errors(what):
            image.draft(image.mode, (image.width // 8 or 1, image.height // 8 or 1))
            image.load()
        return media_type


def open_image(data: bytes, what: str, limits: MediaLimits | None = None) -> Any:
    """The opened (header read, not decoded) PIL image, its size checked against `limits`."""
    from PIL import Image

    limits = limits or MediaLimits()
    with _decode_errors(what), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the checks below decide
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:  # over twice Pillow's own limit: no size to report
            raise PayloadTooLargeError(f"{what} is over the limit of {limits.max_image_pixels} pixels "
                                       f"(UNIPGEN_MAX_IMAGE_PIXELS): {exc}") from None
    try:
        check_dimensions(image.width, image.height, what, limits)
    except Exception:
        image.close()
        raise
    return image


def _media_type(image: Any) -> str:
    from PIL import Image

    return Image.MIME.get(image.format or "", "application/octet-stream")


@contextmanager
def _decode_errors(what: str) -> Iterator[None]:
    """Pillow's ways of saying "not an image" (or a bomb it caught itself) as `UnsupportedMediaError`."""
    from PIL import Image, UnidentifiedImageError

    bad = (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError,
           SyntaxError, ValueError, EOFError)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except InvalidInputError:
            raise
        except bad as exc:
            raise UnsupportedMediaError(f"{what} is not a readable image: {exc}") from exc


_AUDIO_TYPES = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}


def sniff_audio(data: bytes, what: str = "audio", limits: MediaLimits | None = None) -> AudioInfo:
    """Media type, duration, rate and channels of an audio file from its header; raises if it is
    not audio or if it would decode to more than `limits.max_audio_decoded_bytes`."""
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise UnsupportedMediaError(f"{what} is not a readable audio file: {exc}") from exc
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise UnsupportedMediaError(f"{what} holds no audio frames")
    media_type = _AUDIO_TYPES.get(info.format, "application/octet-stream")
    found = AudioInfo(media_type, info.frames / info.samplerate, int(info.samplerate), int(info.channels),
                      int(info.frames))
    check_decoded_audio(found, what, (limits or MediaLimits()).max_audio_decoded_bytes)
    return found


def check_decoded_audio(info: AudioInfo, what: str, limit: int) -> None:
    if info.decoded_bytes > limit:
        raise PayloadTooLargeError(
            f"{what} decodes to {info.decoded_bytes} bytes ({info.sample_rate} Hz x {info.channels} channels x "
            f"{info.duration_s:.1f} s as float32), over the limit of {limit} bytes (UNIPGEN_MAX_AUDIO_DECODED_BYTES)")


def check_document_length(documents: Sequence[Any], limit: int) -> None:
    """Refuse a document whose text is over `limit` characters (before it is embedded or stored)."""
    for document in documents:
        if len(document.text) > limit:
            raise PayloadTooLargeError(f"document {document.key!r} is {len(document.text)} characters, over the "
                                       f"limit of {limit} characters (UNIPGEN_MAX_DOCUMENT_CHARS)")
