"""Small real inputs for tests: a PNG, a WAV, unit vectors, an in-memory blob store, and a
`should_stop` that stops a trainer after n steps."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import numpy as np

from unipgen.errors import NotFoundError


def png_bytes(color: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 16_000, freq: float = 220.0) -> bytes:
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.2 * np.sin(2 * np.pi * freq * t), rate, format="WAV")
    return buffer.getvalue()


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


#: The in-memory blob store backends fetch from in tests (sha256 → bytes; shared by test modules).
BLOBS: dict[str, bytes] = {}


def fetch(sha: str) -> bytes:
    if sha not in BLOBS:
        raise NotFoundError(f"blob {sha} not found")
    return BLOBS[sha]


def put(data: bytes) -> str:
    """Store `data` in `BLOBS`; its sha256."""
    sha = hashlib.sha256(data).hexdigest()
    BLOBS[sha] = data
    return sha


def stop_after(n: int) -> Callable[[], bool]:
    """A `should_stop` that lets `n` steps run, then asks to stop (a cancelled or crashed job)."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > n

    return should_stop
