"""CLAP through transformers: audio and text into one space (music scored against words).

The profile's ``clap`` role. `encode` embeds audio files (WAV, FLAC, OGG bytes), `encode_text`
embeds texts into the same space, so a clip can be compared with a user's preference keywords
(best-of-N for music) or with its prompt (the CLAP score of `unipgen.eval.media_metrics`).

`ref` is a Hub id (`laion/clap-htsat-unfused` in the cpu and gpu profiles: HTSAT audio tower,
RoBERTa text tower, 48 kHz, 10 s windows; its weights must be in the local Hugging Face cache),
a local folder, or ``tiny-random`` for the tiny random CLAP built offline (`unipgen.tiny`; 16 kHz,
2 s windows; its numbers mean nothing).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.encoders.base import l2_normalize, require
from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.tiny import TINY_CLAP, is_random, tiny_clap_dir

CLAP_REF = "laion/clap-htsat-unfused"


class ClapEncoder:
    """Audio files → L2-normalised CLAP audio vectors; `encode_text` for the text side."""

    space = "clap"
    metric = "ip"

    def __init__(self, ref: str = CLAP_REF, device: str = "cpu") -> None:
        self.ref, self.device = ref, device
        self.random_weights = is_random(ref)
        self._parts: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._parts is None:
            transformers = require("transformers", "ml")
            path: str | Path = tiny_clap_dir() if self.ref == TINY_CLAP else self.ref
            model = transformers.ClapModel.from_pretrained(path).to(self.device).eval()
            self._parts = (model, transformers.AutoTokenizer.from_pretrained(path),
                           transformers.ClapFeatureExtractor.from_pretrained(path))
        return self._parts

    @property
    def dim(self) -> int:
        return int(self._load()[0].config.projection_dim)

    def encode(self, audio: Sequence[bytes]) -> np.ndarray:
        """(len(audio), dim) unit vectors; clips are resampled to the model's rate, the first window
        scored (a longer clip is cropped where a fixed seed says: the same clip, the same vector)."""
        import torch

        model, _, extractor = self._load()
        if not audio:
            raise InvalidInputError("no audio given")
        waves = [decode_mono(data, index, extractor.sampling_rate) for index, data in enumerate(audio)]
        fusion = bool(model.config.audio_config.enable_fusion)
        state = np.random.get_state()  # the extractor crops long clips at random: make that repeatable
        np.random.seed(0)
        try:
            inputs = extractor(waves, sampling_rate=extractor.sampling_rate, return_tensors="pt",
                               truncation="fusion" if fusion else "rand_trunc")
        finally:
            np.random.set_state(state)
        with torch.inference_mode():
            features = model.get_audio_features(input_features=inputs["input_features"].to(self.device),
                                                is_longer=inputs["is_longer"].to(self.device) if fusion else None)
        return l2_normalize(_pooled(features).double().cpu().numpy())

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts into the audio space (CLAP scores, music against preference keywords)."""
        import torch

        model, tokenizer, _ = self._load()
        if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
            raise InvalidInputError("every text must be a non-empty string")
        tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return l2_normalize(_pooled(features).double().cpu().numpy())


def _pooled(output: Any) -> Any:
    # transformers 5 returns a model output whose pooler_output is the projection; 4.x the tensor.
    return getattr(output, "pooler_output", output)


def decode_mono(data: bytes, index: int, rate: int) -> np.ndarray:
    """Float mono samples at `rate` from audio file bytes (WAV, FLAC, OGG)."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        samples, source_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = getattr(exc, "error_string", None) or str(exc)
        raise UnsupportedMediaError(f"audio #{index} is not a readable audio file: {reason}") from None
    if len(samples) == 0 or not np.all(np.isfinite(samples)):
        raise InvalidInputError(f"audio #{index} is empty or has NaN/infinite samples")
    wave: np.ndarray = samples.mean(axis=1)
    if source_rate != rate:
        common = math.gcd(int(source_rate), int(rate))
        wave = resample_poly(wave, rate // common, int(source_rate) // common).astype(np.float32)
    return wave


__all__ = ["CLAP_REF", "ClapEncoder", "decode_mono"]
