"""Upload checks through the live service: each bad file is refused with a code naming the
problem, and nothing is stored."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import soundfile

from tests.api.conftest import Live
from unipgen.demo import PERSONA_SAMPLE

FACE = PERSONA_SAMPLE / "faces" / "s1-1.pgm"
DOG = PERSONA_SAMPLE / "subject" / "dog-00.jpg"
VOICE = PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac"


def _wav(seconds: float, rate: int = 8_000) -> bytes:
    """Silence as 8-bit WAV: long audio in few bytes (the size limit here is 300 kB)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * rate), dtype=np.float32), rate, format="WAV", subtype="PCM_U8")
    return buffer.getvalue()


def _png_bomb() -> bytes:
    """A tiny PNG file that declares a 20000 x 20000 image (400 M pixels)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def http(live: Live) -> httpx.Client:
    with live.client() as api:
        api.create_user("uploader")
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=60) as client:
        yield client


CASES = {
    "not an image": ("faces", ("f.png", b"hello, not a picture", "image/png"), 415, "unsupported_media", "not a readable image"),
    "declared png, is jpeg": ("faces", ("f.png", DOG.read_bytes(), "image/png"), 415, "unsupported_media",
                              "declared image/png but its content is image/jpeg"),
    "over the size limit": ("faces", ("f.jpg", b"\xff" * 310_000, "image/jpeg"), 413, "payload_too_large",
                            "is 310000 bytes, over the limit of 300000 bytes (UNIPGEN_MAX_BLOB_BYTES)"),
    "request over the upload body limit": ("faces", ("f.jpg", b"\xff" * 400_000, "image/jpeg"), 413,
                                           "payload_too_large", "for this route (UNIPGEN_MAX_BLOB_BYTES)"),
    "decompression bomb": ("faces", ("f.png", _png_bomb(), "image/png"), 413, "payload_too_large",
                           "over the limit of 40000000 pixels (UNIPGEN_MAX_IMAGE_PIXELS)"),
    "empty file": ("faces", ("f.png", b"", "image/png"), 422, "invalid_input", "is empty"),
    "audio too long": ("voices", ("v.wav", _wav(31.0), "audio/wav"), 413, "payload_too_large",
                       "lasts 31.0 s, over the limit of 30 s"),
    "not audio": ("voices", ("v.wav", b"RIFF nonsense", "audio/wav"), 415, "unsupported_media", "not a readable audio"),
    "an image as a voice": ("voices", ("v.wav", FACE.read_bytes(), "application/octet-stream"), 415,
                            "unsupported_media", "not a readable audio"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_upload_is_refused_and_changes_nothing(http: httpx.Client, case: str) -> None:
    kind, upload, status, code, words = CASES[case]
    response = http.post(f"/v1/users/uploader/{kind}", data={"key": "x", "consent": "true"}, files={"file": upload})
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code) and words in body["message"]
    assert http.get(f"/v1/users/uploader/{kind}").json() == []


def test_consent_is_required_for_biometric_data(http: httpx.Client) -> None:
    for kind, upload in (("faces", ("f.pgm", FACE.read_bytes(), "image/x-portable-anymap")),
                         ("voices", ("v.flac", VOICE.read_bytes(), "audio/flac"))):
        missing = http.post(f"/v1/users/uploader/{kind}", data={"key": "x"}, files={"file": upload})
        assert missing.status_code == 422 and "consent" in missing.json()["message"]
        refused = http.post(f"/v1/users/uploader/{kind}", data={"key": "x", "consent": "false"}, files={"file": upload})
        assert refused.status_code == 422 and "consent" in refused.json()["message"]
        assert http.get(f"/v1/users/uploader/{kind}").json() == []


def test_a_good_voice_sample_is_stored(http: httpx.Client) -> None:
    response = http.post("/v1/users/uploader/voices", data={"key": "ok", "consent": "true"},
                         files={"file": ("v.flac", VOICE.read_bytes(), "audio/x-flac")})  # an alias of audio/flac
    assert response.status_code == 201 and response.json() == {"key": "ok", "media_type": "audio/flac"}
