"""The adversarial upload corpus of issue 14, generated (nothing checked in): pixel and audio
bombs, extreme dimensions, truncated, corrupt and disguised files, oversized JSON bodies.

Each `Case` says where it goes, what it sends, and how the service must refuse it (statuses
allowed, error code, words of the message). Sizes derive from the service's `Settings`, so the
same corpus drives the live-server tests (small budgets, fast) and `unipgen bench hardening`
(default budgets; `issue_sizes` adds the 50 MB and 100 MB bodies the issue reported).
Used by tests/api/test_hardening.py and `unipgen.bench.hardening`.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "persona-sample"
FACE = SAMPLE / "faces" / "s1-1.pgm"
DOG = SAMPLE / "subject" / "dog-00.jpg"
VOICE = SAMPLE / "voice" / "1688-142285-0002.flac"


@dataclass
class Case:
    """One request of the corpus. `files` are multipart (field, (filename, bytes, type)) pairs;
    `json_body` (bytes) goes as `application/json`; `chunked` sends it without a Content-Length."""

    name: str
    path: str  # relative to /v1/users/{user}/ when it does not start with "/"
    expect: tuple[int, ...]
    code: str | None
    words: str = ""
    files: list[tuple[str, tuple[str, bytes, str]]] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)
    json_body: bytes | None = None
    chunked: bool = False
    about: str = ""

    @property
    def size(self) -> int:
        return len(self.json_body or b"") + sum(len(f[1][1]) for f in self.files)


# -- file makers -----------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png(width: int, height: int, color: int = 0) -> bytes:
    """A black PNG of any size, made row by row with zlib (never a whole image in memory):
    color type 0 (grey, 1 byte a pixel) or 2 (RGB)."""
    bands = 3 if color == 2 else 1
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + width * bands)  # filter byte + pixels
    per_batch = max(1, (1 << 20) // len(row))  # about a megabyte of rows per call
    compressed = [packer.compress(row * min(per_batch, height - start)) for start in range(0, height, per_batch)]
    compressed.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(compressed)) + _chunk(b"IEND", b"")


@functools.cache
def big_face(width: int = 4_600, height: int = 5_600) -> bytes:
    """A real face (ORL s1-1) blown up to a large RGB PNG: accepted, and decoded in full once by
    the store's integrity check in the service process."""
    from PIL import Image

    with Image.open(FACE) as face:
        canvas = face.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def gif_header(width: int, height: int) -> bytes:
    """A GIF that declares `width` x `height` (at most 65535 a side) with one tiny frame of data."""
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x4c\x01\x00"
    return b"GIF89a" + screen + frame + b"\x3b"


@functools.cache
def noise_image(width: int, height: int, fmt: str) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@functools.cache
def big_jpeg(side: int) -> bytes:
    """A grey `side` x `side` JPEG (tiny file, `side`² pixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (128, 128, 128)).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


@functools.cache
def silent_flac(rate: int, channels: int, seconds: int) -> bytes:
    """Silence as FLAC, written a second at a time (188 KB for 192 kHz x 8 channels x 119 s)."""
    import numpy as np
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as out:
        block = np.zeros((rate, channels), dtype=np.int16)
        for _ in range(seconds):
            out.write(block)
    return buffer.getvalue()


def wav(samples: Any, rate: int, subtype: str) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def zip_file() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "not an image")
    return buffer.getvalue()


def documents_body(count: int, chars: int) -> bytes:
    """A documents request of `count` documents of `chars` characters each."""
    text = "lorem ipsum " * (chars // 12 + 1)
    return json.dumps({"documents": [{"key": f"d{n}", "text": text[:chars]} for n in range(count)]}).encode()


# -- the corpus ------------------------------------------------------------------------------------


def _upload(name: str, route: str, filename: str, data: bytes, media_type: str, expect: tuple[int, ...],
            code: str | None, words: str = "", about: str = "") -> Case:
    form = {"key": name, "consent": "true"}
    if route == "subjects":
        form = {"key": name, "name": "Rex", "class_noun": "dog"}
    field_name = "files" if route == "subjects" else "file"
    return Case(name, route, expect, code, words, [(field_name, (filename, data, media_type))], form, about=about)


def image_cases() -> list[Case]:
    face = FACE.read_bytes()
    cut_png, cut_jpeg = noise_image(256, 256, "PNG"), noise_image(256, 256, "JPEG")
    bad_crc = bytearray(cut_png)
    bad_crc[len(bad_crc) // 2] ^= 0xFF
    return [
        _upload("png_39000000x1", "faces", "wide.png", png(39_000_000, 1), "image/png", (413,), "payload_too_large",
                "UNIPGEN_MAX_IMAGE_SIDE", "the issue's 38 KB PNG that made dlib segfault"),
        _upload("png_1x39000000", "faces", "tall.png", png(1, 39_000_000), "image/png", (413,), "payload_too_large",
                "UNIPGEN_MAX_IMAGE_SIDE", "the same, standing"),
        _upload("png_12000x400", "faces", "strip.png", png(12_000, 400), "image/png", (422,), "invalid_input",
                "UNIPGEN_MAX_IMAGE_ASPECT", "30:1 strip within the side limit"),
        _upload("png_7000x7000", "faces", "bomb.png", png(7_000, 7_000), "image/png", (413,), "payload_too_large",
                "UNIPGEN_MAX_IMAGE_PIXELS", "49 M pixels, 48 KB"),
        _upload("png_20000x20000", "faces", "bomb.png", png(20_000, 20_000), "image/png", (413,), "payload_too_large",
                "UNIPGEN_MAX_IMAGE_PIXELS", "400 M pixels: Pillow's own bomb guard, reported as the setting"),
        _upload("gif_65535x65535", "faces", "bomb.gif", gif_header(65_535, 65_535), "image/gif", (413,),
                "payload_too_large", "UNIPGEN_MAX_IMAGE_PIXELS", "4.3 G pixels declared by a 30-byte GIF"),
        _upload("png_6316x6316_rgb", "faces", "black.png", png(6_316, 6_316, 2), "image/png", (422,), "no_face",
                "no face", "the issue's 6316 x 6316 PNG (here 116 KB, RGB) under the pixel cap: decoded then reduced, in the encoder process"),
        _upload("jpeg_6000x6000", "faces", "grey.jpg", big_jpeg(6_000), "image/jpeg", (422,), "no_face", "no face",
                "36 M pixels: decoded at 1/8 scale"),
        _upload("png_truncated", "faces", "cut.png", cut_png[: len(cut_png) * 3 // 5], "image/png", (415,),
                "unsupported_media", "", "a PNG cut at 60%"),
        _upload("jpeg_truncated", "faces", "cut.jpg", cut_jpeg[: len(cut_jpeg) // 2], "image/jpeg", (415,),
                "unsupported_media", "", "a JPEG cut in half"),
        _upload("png_corrupt", "faces", "bad.png", bytes(bad_crc), "image/png", (415,), "unsupported_media", "",
                "one byte of the compressed data flipped"),
        _upload("text_as_png", "faces", "f.png", b"hello, not a picture", "image/png", (415,), "unsupported_media",
                "not a readable image", "text declared image/png"),
        _upload("zip_as_png", "faces", "f.png", zip_file(), "application/octet-stream", (415,), "unsupported_media",
                "not a readable image", "a zip archive"),
        _upload("jpeg_declared_png", "faces", "f.png", DOG.read_bytes(), "image/png", (415,), "unsupported_media",
                "declared image/png but its content is image/jpeg", "a disguised JPEG"),
        _upload("audio_as_face", "faces", "f.jpg", VOICE.read_bytes(), "application/octet-stream", (415,),
                "unsupported_media", "not a readable image", "a FLAC sent as a photo"),
        _upload("empty_face", "faces", "f.png", b"", "image/png", (422,), "invalid_input", "is empty", "0 bytes"),
        _upload("subject_bomb_photo", "subjects", "bomb.png", png(20_000, 20_000), "image/png", (413,),
                "payload_too_large", "UNIPGEN_MAX_IMAGE_PIXELS", "a subject photo that is a pixel bomb"),
        _upload("face_ok", "faces", "face.pgm", face, "image/x-portable-anymap", (201,), None, "",
                "a real face (control: must be accepted)"),
        _upload("face_4600x5600_png", "faces", "big-face.png", big_face(), "image/png", (201,), None, "",
                "a real face as a 25.8 M pixel PNG (control: accepted; the largest decode in the service process)"),
    ]


def audio_cases(max_audio_seconds: float) -> list[Case]:
    import numpy as np

    voice = VOICE.read_bytes()
    nan = np.zeros(16_000 * 2, dtype=np.float32)
    nan[100] = np.nan
    return [
        _upload("flac_192k_8ch_119s", "voices", "bomb.flac", silent_flac(192_000, 8, 119), "audio/flac", (413,),
                "payload_too_large", "UNIPGEN_MAX_AUDIO_DECODED_BYTES", "the issue's 188 KB FLAC: 731 MB as float32"),
        _upload("wav_too_long", "voices", "long.wav",
                wav(np.zeros(int((max_audio_seconds + 1) * 8_000), dtype=np.float32), 8_000, "PCM_U8"),
                "audio/wav", (413,), "payload_too_large", "UNIPGEN_MAX_AUDIO_SECONDS", "8-bit silence past the limit"),
        _upload("flac_truncated", "voices", "cut.flac", voice[: len(voice) // 3], "audio/flac", (201, 415, 422),
                None, "", "a real recording cut to a third (libsndfile may decode what is left)"),
        _upload("wav_nan", "voices", "nan.wav", wav(nan, 16_000, "FLOAT"), "audio/wav", (422,), "invalid_input",
                "NaN", "float WAV with a NaN sample"),
        _upload("wav_silent", "voices", "silent.wav", wav(np.zeros(16_000 * 3, dtype=np.float32), 16_000, "PCM_16"),
                "audio/wav", (422,), "invalid_input", "silent", "3 s of silence"),
        _upload("text_as_wav", "voices", "v.wav", b"RIFF nonsense", "audio/wav", (415,), "unsupported_media",
                "not a readable audio", "text declared audio/wav"),
        _upload("image_as_voice", "voices", "v.wav", FACE.read_bytes(), "application/octet-stream", (415,),
                "unsupported_media", "not a readable audio", "a photo sent as a voice"),
        _upload("voice_ok", "voices", "v.flac", voice, "audio/flac", (201,), None, "",
                "a real recording (control: must be accepted)"),
    ]


def body_cases(max_request_bytes: int, max_bulk_request_bytes: int, max_document_chars: int,
               issue_sizes: bool = False) -> list[Case]:
    over = json.dumps({"key": "x" * (max_request_bytes + 10)}).encode()
    bulk_docs = max(2, max_bulk_request_bytes // 50_000 + 2)
    cases = [
        Case("json_over_request_limit", "/v1/users", (413,), "payload_too_large", "UNIPGEN_MAX_REQUEST_BYTES",
             json_body=over, about="a user whose id is over the ordinary body limit"),
        Case("json_chunked_over_limit", "/v1/users", (413,), "payload_too_large", "UNIPGEN_MAX_REQUEST_BYTES",
             json_body=over, chunked=True, about="the same without a Content-Length"),
        Case("json_bulk_over_limit", "documents", (413,), "payload_too_large", "UNIPGEN_MAX_BULK_REQUEST_BYTES",
             json_body=documents_body(bulk_docs, 50_000), about="documents over the bulk body limit"),
        Case("json_long_document", "documents", (413,), "payload_too_large", "UNIPGEN_MAX_DOCUMENT_CHARS",
             json_body=documents_body(1, max_document_chars + 1), about="one document over the length limit"),
    ]
    if issue_sizes:
        cases += [
            Case("json_50mb_document", "documents", (413,), "payload_too_large", "UNIPGEN_MAX_BULK_REQUEST_BYTES",
                 json_body=documents_body(1, 50_000_000), about="the issue's 50 MB document"),
            Case("json_100mb_1000_documents", "documents", (413,), "payload_too_large",
                 "UNIPGEN_MAX_BULK_REQUEST_BYTES", json_body=documents_body(1000, 100_000),
                 about="the issue's 100 MB body of 1000 documents"),
        ]
    return cases


def corpus(settings: Any, issue_sizes: bool = False) -> list[Case]:
    """Every case, sized for `settings` (a `unipgen.settings.Settings`)."""
    return (image_cases() + audio_cases(settings.max_audio_seconds)
            + body_cases(settings.max_request_bytes, settings.max_bulk_request_bytes, settings.max_document_chars,
                         issue_sizes))


def send(http: httpx.Client, user: str, case: Case) -> httpx.Response:
    """POST the case with an httpx client (base URL and key set); the response."""
    path = case.path if case.path.startswith("/") else f"/v1/users/{user}/{case.path}"
    if case.json_body is not None:
        headers = {"Content-Type": "application/json"}
        content: bytes | Iterator[bytes] = case.json_body
        if case.chunked:
            body = case.json_body

            def stream() -> Iterator[bytes]:
                for start in range(0, len(body), 65_536):
                    yield body[start:start + 65_536]

            content = stream()
        return http.post(path, content=content, headers=headers)
    return http.post(path, data=case.form, files=case.files)
