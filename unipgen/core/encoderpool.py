"""`EncoderPool`: the encoders of uploaded files run in a child process, so that a native crash
costs one request and never the service.

dlib, Pillow, libsndfile and the models under them are C and C++ fed untrusted bytes: one
38 KB PNG (39,000,000 x 1 pixels) made dlib segfault inside the service, taking every tenant's
requests with it. The header checks of `unipgen.memory.media` now refuse that file, but the
next bug in a decoder is not known yet; here a crash kills the child, the request that was
running answers 503 `encoder_failed` naming the file, and the next request starts a fresh child.

The child is a `ProcessPoolExecutor` worker started with 'spawn' (no fork of a threaded server);
it loads each encoder once and keeps it. Encoders raise their own errors (no face found, not
audio) across the boundary unchanged: they pickle. A request in flight on the pool when another
one crashed it is retried once on the fresh pool, so a crash costs only the request that caused
it (which crashes twice: it is refused after the second). An encode that runs past
`timeout_s` (a decoder stuck in a loop) has its process killed and answers 503 as well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from unipgen.errors import EncoderFailedError
from unipgen.schema.profiles import ModelProfile
from unipgen.settings import Settings

log = logging.getLogger("unipgen.encoders")

#: The roles whose inputs are uploaded files (the text encoder reads strings: it stays in-process).
UPLOAD_ROLES = ("face", "voice", "image")

#: Options each built-in encoder type takes from the settings' input budgets.
_LIMIT_OPTIONS = {"dlib-face": {"max_side": "encoder_image_side"}, "clip": {"max_side": "encoder_image_side"},
                  "resemblyzer": {"max_decoded_bytes": "max_audio_decoded_bytes"}}


def apply_input_limits(profile: ModelProfile, settings: Settings) -> ModelProfile:
    """`profile` with the settings' budgets (reduced image side, decoded audio bytes) given to the
    encoders that take them, unless the profile sets them itself."""
    encoders = {}
    for role, spec in profile.encoders.items():
        limits = {option: getattr(settings, name) for option, name in _LIMIT_OPTIONS.get(spec.type, {}).items()}
        encoders[role] = spec.model_copy(update={"options": limits | spec.options})
    return profile.model_copy(update={"encoders": encoders})


class EncoderPool:
    """`encode(role, inputs, what)` in a child process; `close()` stops it. Built lazily: no
    process starts until the first upload."""

    def __init__(self, profile: ModelProfile, workers: int = 1, context: str = "spawn",
                 timeout_s: float | None = None) -> None:
        self.profile = profile
        self.workers = workers
        self.context = context
        self.timeout_s = timeout_s  # an encode that runs longer has its process killed
        self.restarts = 0  # pools thrown away after a crash (for the log and the tests)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def encode(self, role: str, inputs: Sequence[Any], what: str) -> np.ndarray:
        """The role's encoder's `encode(inputs)`, run in the child; `what` names the file(s)."""
        for attempt in (1, 2):
            executor = self._current()
            try:
                return executor.submit(_encode, role, list(inputs)).result(timeout=self.timeout_s)
            except TimeoutError:
                self._kill(executor)
                raise EncoderFailedError(f"the {role} encoder took more than {self.timeout_s:g} s on {what} "
                                         "(UNIPGEN_ENCODER_TIMEOUT_S): its process was stopped, nothing was "
                                         "stored") from None
            except BrokenProcessPool:
                self._discard(executor)
                log.error("the %s encoder's process died on %s (attempt %d)", role, what, attempt)
        raise EncoderFailedError(f"the {role} encoder's process crashed on {what} (a native crash in a decoder "
                                 "or the model): nothing was stored, and the next request gets a fresh process")

    def submit(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` in the child (a picklable, module-level function); its future."""
        return self._current().submit(fn, *args)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _current(self) -> ProcessPoolExecutor:
        import multiprocessing

        from unipgen.core.encoders import ENCODERS

        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context(self.context),
                    initializer=_start, initargs=(self.profile.model_dump_json(), dict(ENCODERS)))
            return self._executor

    def _kill(self, executor: ProcessPoolExecutor) -> None:
        """Stop a pool whose child is stuck (a decoder in a loop): kill its processes, then forget it.
        The executor has no public way to kill its workers before Python 3.14 (`terminate_workers`)."""
        for process in list(getattr(executor, "_processes", {}).values()):
            process.kill()
        self._discard(executor)

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        """Forget a broken pool (once, however many requests saw it break)."""
        with self._lock:
            if self._executor is broken:
                self._executor = None
                self.restarts += 1
        broken.shutdown(wait=False, cancel_futures=True)


# -- the child process -------------------------------------------------------------------------------

_PROFILE: ModelProfile | None = None
_LOADED: dict[str, Any] = {}


def _start(profile_json: str, registry: dict[str, str]) -> None:
    """Child initializer: the profile, and the encoder types registered in the parent (plugins)."""
    global _PROFILE

    from unipgen.core.encoders import ENCODERS

    ENCODERS.update(registry)
    _PROFILE = ModelProfile.model_validate_json(profile_json)


def _encode(role: str, inputs: list[Any]) -> np.ndarray:
    from unipgen.core.encoders import load_encoder
    from unipgen.errors import NotFoundError

    assert _PROFILE is not None, "the pool's initializer did not run"
    if role not in _LOADED:
        if role not in _PROFILE.encoders:
            raise NotFoundError(f"profile {_PROFILE.name!r} has no {role!r} encoder")
        _LOADED[role] = load_encoder(_PROFILE.encoders[role])
    vectors: np.ndarray = _LOADED[role].encode(inputs)
    return vectors
