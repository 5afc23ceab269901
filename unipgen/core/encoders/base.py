"""What every encoder is: a callable from raw inputs to a matrix of vectors in one named space.

An encoder declares the store space it writes (`space`), the vector size (`dim`) and how its
vectors compare (`metric`: ``ip`` for L2-normalised vectors compared by cosine, ``l2`` for raw
vectors compared by Euclidean distance, as dlib face descriptors are). `encode` takes a batch
and returns a float32 matrix with one row per input, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from unipgen.errors import InvalidInputError, MissingDependencyError

Metric = Literal["ip", "l2"]


@runtime_checkable
class Encoder(Protocol):
    """Raw inputs (texts, image bytes, audio bytes) → vectors of one space."""

    space: str
    dim: int
    metric: Metric

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        """(len(inputs), dim) float32, one row per input, in order."""
        ...


class NoFaceFoundError(InvalidInputError):
    """A face photo in which no face could be detected."""

    code = "no_face"


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or fail with an install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'unipgen[{extra}]' ({exc})"
        ) from exc


def reduce_image(image: Any, max_side: int) -> Any:
    """`image` decoded at no more than `max_side` pixels a side: JPEGs through libjpeg's scaled
    decoding (`draft`), others decoded then reduced, never converted at full size."""
    if image.mode in ("P", "1"):  # resampling a palette would pick nearest colours: go to RGB first
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side))  # keeps the aspect ratio; uses draft for JPEG
    return image
