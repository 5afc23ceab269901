"""CLIP through transformers: images and texts into one space (image preference, CLIP scores).

`ref` is a Hub id (`openai/clip-vit-base-patch32` in the cpu profile), a local folder, or
``tiny-random`` for the tiny model built offline (`unipgen.tiny`).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.encoders.base import l2_normalize, reduce_image, require
from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.tiny import TINY_CLIP, is_random, tiny_clip_dir


class ClipEncoder:
    """Images (bytes or PIL) → L2-normalised CLIP image vectors; `encode_text` for the text side."""

    space = "image"
    metric = "ip"

    def __init__(self, ref: str = TINY_CLIP, device: str = "cpu", max_side: int = 1024) -> None:
        self.ref = ref
        self.random_weights = is_random(ref)  # its scores are then mechanical checks (`unipgen.tiny`)
        self.device = device
        self.max_side = max_side  # image bytes are decoded reduced to this (CLIP sees 224 pixels)
        self._parts: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._parts is None:
            transformers = require("transformers", "ml")
            path: str | Path = tiny_clip_dir() if self.ref == TINY_CLIP else self.ref
            model = transformers.CLIPModel.from_pretrained(path).to(self.device).eval()
            # The PIL processor (transformers 5) needs no torchvision; 4.x has only the one class.
            processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
            self._parts = (model, transformers.AutoTokenizer.from_pretrained(path),
                           processor.from_pretrained(path))
        return self._parts

    @property
    def dim(self) -> int:
        return int(self._load()[0].config.projection_dim)

    def encode(self, inputs: Sequence[Any]) -> np.ndarray:
        import torch

        model, _, processor = self._load()
        images = [_to_image(item, number, self.max_side) for number, item in enumerate(inputs)]
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        with torch.inference_mode():
            return l2_normalize(_pooled(model.get_image_features(pixel_values=pixels)).cpu().numpy())

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts into the image space (for CLIP-T scores and text-to-image preference)."""
        import torch

        model, tokenizer, _ = self._load()
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InvalidInputError("every text must be a non-empty string")
        tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            features = model.get_text_features(input_ids=tokens["input_ids"],
                                               attention_mask=tokens["attention_mask"])
        return l2_normalize(_pooled(features).cpu().numpy())


def _pooled(output: Any) -> Any:
    # transformers 5 returns a model output whose pooler_output is the projection; 4.x the tensor.
    return getattr(output, "pooler_output", output)


def video_frames(data: bytes, max_frames: int | None = None) -> list[Any]:
    """RGB PIL frames of a video file's bytes: GIF through PIL, anything else (MP4, WebM...)
    through PyAV; `max_frames` keeps that many evenly spaced (first and last included)."""
    return evenly_spaced(_gif_frames(data) if data[:4] == b"GIF8" else _av_frames(data), max_frames)


def evenly_spaced(frames: list[Any], count: int | None) -> list[Any]:
    """`count` of `frames`, evenly spaced, first and last included (all of them if fewer or None)."""
    if not frames:
        raise InvalidInputError("the video has no frames")
    if count is not None and len(frames) > count:
        if count < 1:
            raise InvalidInputError("max_frames must be >= 1")
        frames = [frames[round(i)] for i in np.linspace(0, len(frames) - 1, count)]
    return frames


def _gif_frames(data: bytes) -> list[Any]:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise UnsupportedMediaError(f"not a readable GIF: {exc}") from None


def _av_frames(data: bytes) -> list[Any]:
    av = require("av", "ml")
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise UnsupportedMediaError("the file has no video stream")
            return [frame.to_image() for frame in container.decode(video=0)]
    except av.error.FFmpegError as exc:
        raise UnsupportedMediaError(f"not a readable video: {exc}") from None


def _to_image(item: Any, number: int, max_side: int = 1024) -> Any:
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    try:
        with Image.open(io.BytesIO(item)) as image:
            return reduce_image(image, max_side).convert("RGB")
    except (UnidentifiedImageError, OSError, TypeError) as exc:
        raise UnsupportedMediaError(f"image #{number} is not a readable image: {exc}") from None
