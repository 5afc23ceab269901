"""Uploaded files, checked before the store sees them: the size limit (read no further than
it), the declared media type against the sniffed one, the audio length limit. The store then
decodes images fully (with its decompression-bomb guard) and refuses what is not media."""

from __future__ import annotations

from fastapi import UploadFile

from unipgen.errors import PayloadTooLargeError, UnsupportedMediaError
from unipgen.memory.media import check_size, sniff_audio, sniff_image

#: Declared types that say nothing about the content: the sniffed type decides.
_UNSPECIFIC = {"", "application/octet-stream", "binary/octet-stream"}
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "audio/x-wav": "audio/wav",
            "audio/wave": "audio/wav", "audio/vnd.wave": "audio/wav", "audio/x-flac": "audio/flac",
            "audio/mp3": "audio/mpeg"}


async def read_limited(upload: UploadFile, limit: int, what: str) -> bytes:
    """The file's bytes, refused as soon as it is over `limit` (a huge upload is not read whole)."""
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


async def read_image(upload: UploadFile, limit: int, what: str) -> tuple[bytes, str]:
    """The image's bytes and its sniffed media type."""
    data = await read_limited(upload, limit, what)
    media_type = sniff_image(data, what)
    _agree(upload, media_type, what)
    return data, media_type


async def read_audio(upload: UploadFile, limit: int, max_seconds: float, what: str) -> tuple[bytes, str]:
    """The recording's bytes and its sniffed media type."""
    data = await read_limited(upload, limit, what)
    info = sniff_audio(data, what)
    _agree(upload, info.media_type, what)
    if info.duration_s > max_seconds:
        raise PayloadTooLargeError(f"{what} lasts {info.duration_s:.1f} s, over the limit of {max_seconds:g} s")
    return data, info.media_type
