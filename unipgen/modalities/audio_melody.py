"""Music that follows the user's own tune: MusicGen-Melody (`MusicgenMelodyForConditionalGeneration`).

Like `MusicgenAudioBackend`, it turns a `prompt_only` music plan (the user's taste as keywords)
into a WAV; in addition, when the request names a melody reference
(`context.conditioning.melody`: the blob sha256 of a recording the user hummed or played), the
music follows that recording's chromagram. Without one it is plain text-to-music.

The chromagram: at each frame of the clip, which of the 12 pitch classes (C, C#, ... B) is the
loudest, as a one-hot row; the model reads up to `chroma_length` such frames (235 for the real
model: 30 s at 32 kHz with a 4096-sample hop). It is computed here with torch's STFT and
transformers' `chroma_filter_bank`, the same steps as `MusicgenMelodyFeatureExtractor`, whose
class needs torchaudio (not installed beside this torch); its parameters (`sampling_rate`,
`n_fft`, `hop_length`, `num_chroma`) are read from the model's `preprocessor_config.json`.

Model references: ``"tiny-random"`` (a tiny random MusicGen-Melody, as in `build_tiny_musicgen`;
chroma at 16 kHz with a 1024-sample hop) or a Hub id / local folder (``"facebook/musicgen-melody"``).
"""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, MissingDependencyError
from unipgen.modalities.audio import MusicgenAudioBackend, build_tiny_musicgen, decode_clip, save_tiny_musicgen
from unipgen.schema.generation import BlobFetcher, GenerationRequest
from unipgen.tiny import cached_tiny_model

if TYPE_CHECKING:
    import numpy as np

TINY_MUSICGEN_MELODY = "tiny-random"
_VERSION = 1  # bump when the tiny model's recipe changes: the cached folder is rebuilt

def tiny_musicgen_melody_dir(seed: int = 0) -> Path:
    """The folder of the tiny random MusicGen-Melody for `seed`, built on first use (about a second)."""
    return cached_tiny_model("musicgen-melody", _VERSION, seed, "config.json", partial(save_tiny_musicgen, melody=True))


def build_tiny_musicgen_melody(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random MusicGen-Melody, a local tokenizer and the chroma parameters (atomically):
    the tiny MusicGen recipe (`build_tiny_musicgen`) with a melody prefix."""
    return build_tiny_musicgen(directory, seed, melody=True)


def melody_chroma(samples: Any, sampling_rate: int, n_fft: int, hop_length: int, num_chroma: int = 12) -> np.ndarray:
    """(frames, num_chroma) float32 one-hot chromagram of mono samples, as MusicgenMelodyFeatureExtractor
    computes it: a centred, window-normalised power STFT projected on chroma bins, the loudest bin per frame."""
    import numpy as np
    import torch
    from transformers.audio_utils import chroma_filter_bank

    waveform = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    if len(waveform) < n_fft:  # too short for one window: centred zero padding, as the extractor does
        pad = n_fft - len(waveform)
        waveform = torch.nn.functional.pad(waveform, (pad // 2, pad - pad // 2))
    window = torch.hann_window(n_fft)
    spectrum = torch.stft(waveform, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                          pad_mode="reflect", return_complex=True)
    power = spectrum.abs().pow(2) / window.pow(2).sum()
    filters = torch.from_numpy(chroma_filter_bank(num_frequency_bins=n_fft, num_chroma=num_chroma,
                                                  sampling_rate=sampling_rate, tuning=0)).float()
    chroma = filters @ power  # (num_chroma, frames)
    one_hot = torch.zeros(chroma.shape[1], num_chroma)
    one_hot[torch.arange(chroma.shape[1]), chroma.argmax(dim=0)] = 1.0  # silence: all zero, argmax 0 (C)
    return one_hot.numpy()


class MusicgenMelodyAudioBackend(MusicgenAudioBackend):
    """Text-to-music with MusicGen-Melody; a melody reference in the context steers the tune."""

    def __init__(self, ref: str = TINY_MUSICGEN_MELODY, device: str = "cpu", seconds: float = 4.0,
                 guidance_scale: float = 3.0, max_seconds: float = 30.0, max_melody_seconds: float = 30.0) -> None:
        """`max_melody_seconds`: how much of the reference clip is read (its start); the model itself
        reads at most `chroma_length` chroma frames (30 s for the real one)."""
        super().__init__(ref=ref, device=device, seconds=seconds, guidance_scale=guidance_scale,
                         max_seconds=max_seconds)
        self.max_melody_seconds = max_melody_seconds
        self.chroma: dict[str, Any] = {}

    def setup(self) -> None:
        """Load the tokenizer, model and chroma parameters once (idempotent)."""
        if self.model is not None:
            return
        import transformers
        from transformers import AutoTokenizer, MusicgenMelodyForConditionalGeneration
        from transformers.feature_extraction_utils import FeatureExtractionMixin

        # Before transformers 5.18 (`is_first_iteration`), generation dropped the prefix that
        # carries the prompt and the melody (seen with 5.17: every request gave the same music).
        prepare = MusicgenMelodyForConditionalGeneration.prepare_inputs_for_generation
        if "is_first_iteration" not in inspect.signature(prepare).parameters:
            raise MissingDependencyError(f"transformers {transformers.__version__} ignores MusicGen-Melody's prompt and "
                               f"melody when generating: install transformers>=5.18")
        path = str(tiny_musicgen_melody_dir()) if self.ref == TINY_MUSICGEN_MELODY else self.ref
        self.chroma, _ = FeatureExtractionMixin.get_feature_extractor_dict(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = MusicgenMelodyForConditionalGeneration.from_pretrained(path).to(self.device).eval()  # type: ignore[arg-type]  # transformers' wrapped .to

    def _conditioning(self, request: GenerationRequest, fetch: BlobFetcher) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (1, frames, 12) chroma of the request's melody clip as `input_features`, if it has one."""
        import torch

        sha = request.context.conditioning.melody
        if sha is None:
            return {}, {"melody": None, "melody_seconds": 0.0}
        if fetch is None:
            raise InvalidInputError("a melody reference was given but there is no blob store to read it from")
        rate = int(self.chroma.get("sampling_rate", 32_000))
        samples = decode_clip(fetch(sha), rate, self.max_melody_seconds, f"melody reference {sha[:12]}")
        chroma = melody_chroma(samples, rate, int(self.chroma.get("n_fft", 16_384)),
                               int(self.chroma.get("hop_length", 4096)), int(self.chroma.get("num_chroma", 12)))
        features = torch.from_numpy(chroma).unsqueeze(0).to(self.device)
        return {"input_features": features}, {"melody": sha, "melody_seconds": round(len(samples) / rate, 3)}


__all__ = ["MusicgenMelodyAudioBackend", "build_tiny_musicgen_melody", "melody_chroma", "tiny_musicgen_melody_dir"]
