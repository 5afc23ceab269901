"""A face encoder that dies of a real segmentation fault on a marked photo: the test of the
encoder process's containment (tests/api/test_hardening.py). Registered by that test only;
it runs in the service's encoder process, never in the test process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence

import numpy as np

from unipgen.core.encoders.face import DlibFaceEncoder

#: Bytes that, anywhere in a photo (Pillow ignores what follows a PNG's end), make the encoder crash.
MARKER = b"SEGFAULT-ME"
#: Bytes that make it hang, as a decoder stuck in a loop would.
HANG = b"HANG-ME"


class CrashingFaceEncoder(DlibFaceEncoder):
    """dlib's face encoder, except that a photo holding `MARKER` kills the process with SIGSEGV,
    as a native crash in a decoder would, and one holding `HANG` never returns."""

    def encode(self, images: Sequence[bytes]) -> np.ndarray:
        if any(MARKER in image for image in images):
            os.kill(os.getpid(), signal.SIGSEGV)
        if any(HANG in image for image in images):
            time.sleep(3600)
        return super().encode(images)
