"""Small real inputs for tests: a PNG, a WAV, unit vectors, an in-memory blob store, a
`should_stop` that stops a trainer after n steps, and a tiny user model on the MovieLens sample."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from unipgen.errors import NotFoundError

if TYPE_CHECKING:
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore


def png_bytes(color: str = "red", size: tuple[int, int] = (8, 8)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def photo_png(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    """A smooth random photo-like PNG (width x height) of three seeded waves, one per channel."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size[1], 0:size[0]] / max(size)
    channels = [np.sin(xs * rng.uniform(2, 9) + ys * rng.uniform(2, 9) + rng.uniform(0, 6)) for _ in range(3)]
    array = ((np.stack(channels, axis=-1) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
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


def add_text_artifact(store: MemoryStore, key: str, data: bytes, *, user: str,
                      derived_from: list[tuple[str, str]], kind: str = "output") -> None:
    """A small text/plain artifact (`kind`: output or adapter) of `user` in tenant ``acme`` (the
    `populated` fixture's), derived from `derived_from`: what forget and purge must follow."""
    store.artifacts.add_artifact("acme", key, kind=kind, media_type="text/plain", data=data, user=user,
                                 derived_from=derived_from)


def stop_after(n: int) -> Callable[[], bool]:
    """A `should_stop` that lets `n` steps run, then asks to stop (a cancelled or crashed job)."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > n

    return should_stop


@contextmanager
def movielens_model(root: Path) -> Iterator[UserModel]:
    """A user model (tiny profile) on tenant ``ml``: two users of the MovieLens sample, embedded;
    the store in `root`/home, the models' cache in `root`/cache. The store is closed after."""
    from tests.conftest import SAMPLE
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    store = MemoryStore.open(Settings(home=root / "home"))
    try:
        load_movielens(store, "ml", SAMPLE, users=2)
        model = UserModel(store, "tiny", cache_dir=root / "cache")
        model.embed_missing("ml")
        yield model
    finally:
        store.close()
