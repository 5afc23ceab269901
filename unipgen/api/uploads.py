"""Uploaded files, checked before an encoder or the store sees them, from what costs nothing:
the size limit (read no further than it), then the header (an image's sides, aspect ratio and
pixels; a recording's length and decoded size), the declared media type against the sniffed
one. Nothing is decoded here: the encoders decode (in the service's encoder process, reduced to
what they need) and the store checks the file again before keeping it."""

from __future__ import annotations

from fastapi import UploadFile

from unipgen.errors import EncoderFailedError, PayloadTooLargeError, UnsupportedMediaError
from unipgen.memory.media import MediaLimits, check_size, image_header, sniff_audio

#: Declared types that say nothing about the content: the sniffed type decides.
_UNSPECIFIC = {"", "application/octet-stream", "binary/octet-stream"}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "audio/x-wav": "audio/wav",
            "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav", "audio/x-flac": "audio/flac",
            "audio/mp3": "audio/mpeg"}


async def read_limited(upload: UploadFile, limit: int, what: str) -> bytes:
    """The file's bytes, refused as soon as it is over `limit` (a huge upload is not read whole)."""
    if upload.size is not None and upload.size > limit:  # the form parser counted it: say its size
        raise PayloadTooLargeError(f"{what} is {upload.size} bytes, over the limit of {limit} bytes "
                                   "(UNIPGEN_MAX_BLOB_BYTES)")
    data = await upload.read(limit + 1)
    check_size(data, limit, what)
    return data


def _declared(upload: UploadFile) -> str:
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    return _ALIASES.get(declared, declared)


def _agree(upload: UploadFile, sniffed: str, what: str) -> None:
    declared = _declared(upload)
    if declared not in _UNSPECIFIC and declared != sniffed:
        raise UnsupportedMediaError(f"{what} ({upload.filename or 'upload'}) is declared {declared} "
                                    f"but its content is {sniffed}")


async def read_image(upload: UploadFile, limit: int, what: str, limits: MediaLimits) -> tuple[bytes, str]:
    """The image's bytes and its media type, sniffed from its header (sizes checked, not decoded)."""
    data = await read_limited(upload, limit, what)
    media_type = image_header(data, what, limits)
    _agree(upload, media_type, what)
    return data, media_type


async def read_audio(upload: UploadFile, limit: int, max_seconds: float, what: str,
                     limits: MediaLimits) -> tuple[bytes, str]:
    """The recording's bytes and its media type, sniffed from its header (length and decoded size checked)."""
    data = await read_limited(upload, limit, what)
    info = sniff_audio(data, what, limits)
    _agree(upload, info.media_type, what)
    if info.duration_s > max_seconds:
        raise PayloadTooLargeError(f"{what} lasts {info.duration_s:.1f} s, over the limit of {max_seconds:g} s "
                                   "(UNIPGEN_MAX_AUDIO_SECONDS)")
    return data, info.media_type


def naming(files: str, error: EncoderFailedError) -> EncoderFailedError:
    """The encoder's failure with the uploaded file names added (the encoder knows only keys)."""
    return EncoderFailedError(f"{error.message} (uploaded as {files})")
