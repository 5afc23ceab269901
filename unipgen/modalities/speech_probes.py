"""The bundled Kokoro voices' probe vectors, kept per process and on disk.

The voice search (`voice_match.match_style`) scores the bundled voices first: each one's score is
the cosine between the user's vector and the Resemblyzer vector of the probe sentence spoken in
that voice, and that vector does not depend on the user. `cached_probe` keeps it in memory (every
backend of the process shares it) and in a file under `probe_cache_dir`, so that a new process
(a worker, `unipgen demo`) does not synthesize the bundled voices again either: a search then
synthesizes only the user's own candidates (the blend and the steps).

The key names everything the vector depends on: what the caller passes (the ONNX file, speed,
threads, the probe's tokens, the pack's bytes), the onnxruntime and Resemblyzer versions, and the
CPU (model and flags: the int8 model's float operations may round differently on another CPU,
and a difference of 1e-7 in a style changes the audio). The stored vector is the computed one,
bit for bit. A file that does not read back as 256 finite numbers is ignored and written again;
a folder owned by another user is not used.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

#: Vectors kept in memory (1 KB each; the least recently used dropped beyond it).
MEMORY_SIZE = 256
_memory: OrderedDict[str, np.ndarray] = OrderedDict()
_lock = threading.Lock()


def probe_cache_dir() -> Path:
    """Where probe vectors are kept on disk (beside the tiny models, in the temp folder)."""
    return Path(tempfile.gettempdir()) / "unipgen-kokoro-probes"


def cached_probe(key: tuple[Any, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The (256,) vector `compute` makes for `key`: from memory, else from disk, else computed
    (and kept in both). Read-only: it is shared."""
    name = hashlib.sha256(repr((*key, *_environment())).encode()).hexdigest()[:40]
    with _lock:
        if name in _memory:
            _memory.move_to_end(name)
            return _memory[name]
    folder = _own_folder()
    vector = _read(folder / f"{name}.npy") if folder else None
    if vector is None:
        vector = np.asarray(compute(), np.float32)
        if folder:
            _write(folder / f"{name}.npy", vector)
    vector.setflags(write=False)
    with _lock:
        _memory[name] = vector
        while len(_memory) > MEMORY_SIZE:
            _memory.popitem(last=False)
    return vector


@functools.cache
def _environment() -> tuple[str, ...]:
    """The library versions and the CPU that a probe vector also depends on."""
    import onnxruntime

    cpu = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu += "".join(line for line in lines if line.startswith(("model name", "flags")))[:4000]
    except OSError:
        cpu += platform.processor()
    return onnxruntime.__version__, metadata.version("resemblyzer"), hashlib.sha256(cpu.encode()).hexdigest()[:16]


def _own_folder() -> Path | None:
    """The cache folder, made private if new; None when it cannot be made or is someone else's."""
    folder = probe_cache_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        owner = folder.stat().st_uid
    except OSError:
        return None
    getuid = getattr(os, "getuid", None)
    return folder if getuid is None or owner == getuid() else None


def _read(path: Path) -> np.ndarray | None:
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if vector.shape != (256,) or vector.dtype != np.float32 or not np.all(np.isfinite(vector)):
        return None
    return vector


def _write(path: Path, vector: np.ndarray) -> None:
    """Write atomically (a reader sees the whole file or none); a full or read-only disk is no error."""
    scratch: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            scratch = Path(handle.name)
            np.save(handle, vector, allow_pickle=False)
        os.replace(scratch, path)
    except OSError:
        if scratch is not None:
            scratch.unlink(missing_ok=True)


__all__ = ["MEMORY_SIZE", "cached_probe", "probe_cache_dir"]
