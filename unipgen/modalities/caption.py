"""Image to text with BLIP (transformers): a caption of a photo, or the answer to a question about it.

`BlipCaptioner` (profile type ``transformers-blip``, the profile's ``caption`` backend) holds two
models, as Salesforce publishes them: a captioning model (`BlipForConditionalGeneration`, `ref`)
and a visual-question model (`BlipForQuestionAnswering`, `vqa_ref`, loaded on the first
question). References: ``"tiny-random"`` (the tiny random pair of `caption_tiny`, built offline),
a Hub id or a local folder.

It answers with the model's own words, unpersonalized: `unipgen.orchestrator.describe` puts them
in the user's style with the text backend. It takes image bytes and never opens the store, so
any path that holds an image in memory (a stored artifact, a subject's photo, an upload, an
image just generated) can caption it in-process. Decoding is greedy or beam search: the same
image gives the same words.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.modalities.caption_tiny import CAPTION_FOLDER, TINY_BLIP, VQA_FOLDER, image_processor_class, tiny_blip_dir
from unipgen.schema.describe import MAX_QUESTION_CHARS
from unipgen.tiny import is_random


class BlipCaptioner:
    """Captions (`caption`) and answers about images (`answer`) with a BLIP pair (see the module doc).

    Options: `vqa_ref` (the visual-question model; with a ``"tiny-random"`` `ref` it defaults
    to the tiny one, otherwise questions need it set), `device`, `dtype`, `max_new_tokens`
    (the longest caption or answer), `num_beams` (1: greedy), `prompt` (text the caption
    continues, BLIP's conditional captioning, e.g. "a picture of"; kept in the caption),
    `max_side` (images are decoded reduced to this side before the processor resizes them).
    """

    def __init__(self, ref: str = TINY_BLIP, vqa_ref: str | None = None, device: str = "cpu",
                 dtype: str = "float32", max_new_tokens: int = 30, num_beams: int = 3, prompt: str | None = None,
                 max_side: int = 1024) -> None:
        if not 1 <= max_new_tokens <= 200:
            raise InvalidInputError(f"caption backend: max_new_tokens must be 1 to 200, not {max_new_tokens}")
        if not 1 <= num_beams <= 16:
            raise InvalidInputError(f"caption backend: num_beams must be 1 to 16, not {num_beams}")
        self.ref = ref
        self.vqa_ref = vqa_ref if vqa_ref is not None or not is_random(ref) else TINY_BLIP
        self.random_weights = is_random(ref) or is_random(self.vqa_ref)
        self.device, self.dtype = device, dtype
        self.max_new_tokens, self.num_beams, self.prompt, self.max_side = max_new_tokens, num_beams, prompt, max_side
        self._caption: tuple[Any, Any, Any] | None = None  # (model, tokenizer, image processor)
        self._vqa: tuple[Any, Any, Any] | None = None

    # -- loading -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the captioning model (idempotent); the visual-question model loads on the first question."""
        if self._caption is None:
            from transformers import BlipForConditionalGeneration

            self._caption = self._load(self.ref, CAPTION_FOLDER, BlipForConditionalGeneration)

    def _vqa_parts(self) -> tuple[Any, Any, Any]:
        if self.vqa_ref is None:
            raise InvalidInputError(f"the caption backend {self.ref!r} has no visual-question model: set the "
                                    "profile's caption option vqa_ref (e.g. Salesforce/blip-vqa-base) to ask questions")
        if self._vqa is None:
            from transformers import BlipForQuestionAnswering

            self._vqa = self._load(self.vqa_ref, VQA_FOLDER, BlipForQuestionAnswering)
        return self._vqa

    def _load(self, ref: str, tiny_folder: str, model_class: Any) -> tuple[Any, Any, Any]:
        import torch
        from transformers import AutoTokenizer

        path: str | Path = tiny_blip_dir() / tiny_folder if is_random(ref) else ref
        model = model_class.from_pretrained(path, dtype=getattr(torch, self.dtype)).to(self.device).eval()
        return model, AutoTokenizer.from_pretrained(path), image_processor_class().from_pretrained(path)

    # -- images --------------------------------------------------------------------------------

    def image(self, data: bytes, what: str = "image") -> Any:
        """`data` decoded as an RGB PIL image no larger than `max_side` a side (a JPEG through
        libjpeg's scaled decoding); anything Pillow cannot read is `UnsupportedMediaError`."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as opened:
                opened.draft("RGB", (self.max_side, self.max_side))
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UnsupportedMediaError(f"{what} is not an image Pillow can read: {exc}") from None
        image.thumbnail((self.max_side, self.max_side))
        return image

    def _pixels(self, parts: tuple[Any, Any, Any], images: Sequence[bytes]) -> Any:
        model, _, processor = parts
        decoded = [self.image(data, f"image {number + 1}") for number, data in enumerate(images)]
        pixels = processor(images=decoded, return_tensors="pt")["pixel_values"]
        return pixels.to(self.device, dtype=model.dtype)

    # -- captions and answers ------------------------------------------------------------------

    def caption(self, images: Sequence[bytes]) -> list[str]:
        """One caption per image, in order, from one batched call."""
        import torch

        self.setup()
        assert self._caption is not None
        if not images:
            return []
        model, tokenizer, _ = self._caption
        inputs: dict[str, Any] = {"pixel_values": self._pixels(self._caption, images)}
        if self.prompt:
            tokens = tokenizer([self.prompt] * len(images), return_tensors="pt")
            inputs |= {"input_ids": tokens["input_ids"].to(self.device),
                       "attention_mask": tokens["attention_mask"].to(self.device)}
        with torch.inference_mode():
            out = model.generate(**inputs, **self._decoding())
        return [_clean(tokenizer.decode(row, skip_special_tokens=True)) for row in out]

    def answer(self, image: bytes, question: str) -> str:
        """The answer to `question` about `image` (one call per question: BLIP's question encoder
        attends to padding, so a batch of questions of different lengths would change answers)."""
        import torch

        question = question.strip()
        if not question:
            raise InvalidInputError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidInputError(f"the question is {len(question)} characters, over {MAX_QUESTION_CHARS}")
        parts = self._vqa_parts()
        model, tokenizer, _ = parts
        pixels = self._pixels(parts, [image])
        tokens = tokenizer([question], return_tensors="pt", truncation=True, max_length=64)
        with torch.inference_mode():
            out = model.generate(input_ids=tokens["input_ids"].to(self.device), pixel_values=pixels,
                                 attention_mask=tokens["attention_mask"].to(self.device), **self._decoding())
        return _clean(tokenizer.decode(out[0], skip_special_tokens=True))

    def _decoding(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams, "do_sample": False}

    def models(self) -> dict[str, Any]:
        """What an output's meta records about the captioner: its models and whether their weights are random."""
        return {"model": self.ref, "vqa_model": self.vqa_ref, "random_weights": self.random_weights}


def _clean(text: str) -> str:
    """A decoded caption as one line of text."""
    return " ".join(text.split())


__all__ = ["MAX_QUESTION_CHARS", "BlipCaptioner"]
