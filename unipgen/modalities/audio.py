"""Music from a user's taste: MusicGen (transformers' `MusicgenForConditionalGeneration`).

The router gives music requests a `prompt_only` plan whose prompt carries the user's preference
keywords (genres, moods); this backend turns it into a WAV file. `audiocraft`, MusicGen's own
package, cannot be installed beside a current torch (it pins torch 2.1), so the model comes from
transformers, which loads the same Hub checkpoints (`facebook/musicgen-small`...).

Model references:
* ``"tiny-random"``: a tiny random-weight MusicGen built locally (tests, offline demos): a
  2-layer T5 text encoder, a 2-codebook EnCodec at 16 kHz and a 2-layer decoder;
* a Hub id or a local folder: loaded with `from_pretrained`.

Each request is generated on its own, seeded by `options.seed`, so the same request gives the
same bytes; `seconds` sets the length (one decoder step per frame of the audio encoder: 50 a
second for the real models).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.modalities.seeding import seed_global
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import build_atomically, cached_tiny_model, is_random

if TYPE_CHECKING:
    import numpy as np

TINY_MUSICGEN = "tiny-random"
_VERSION = 3  # bump when the tiny model's recipe changes: the cached folder is rebuilt


def tiny_musicgen_dir(seed: int = 0) -> Path:
    """The folder of the tiny random MusicGen for `seed`, built on first use (well under a second)."""
    return cached_tiny_model("musicgen", _VERSION, seed, "config.json", save_tiny_musicgen)


#: The tiny melody model's chroma parameters (`preprocessor_config.json`): 15.6 chroma frames a second.
TINY_CHROMA = {"feature_extractor_type": "MusicgenMelodyFeatureExtractor", "feature_size": 12, "num_chroma": 12,
               "sampling_rate": 16_000, "hop_length": 1024, "n_fft": 2048, "chunk_length": 8, "padding_value": 0.0,
               "return_attention_mask": False, "stem_indices": [3, 2]}


def build_tiny_musicgen(directory: Path, seed: int = 0, melody: bool = False) -> Path:
    """Save a tiny random MusicGen (or, with `melody`, MusicGen-Melody and its chroma parameters)
    and a locally trained tokenizer to `directory` (atomically)."""
    return build_atomically(directory, lambda scratch: save_tiny_musicgen(scratch, seed, melody))


def save_tiny_musicgen(scratch: Path, seed: int, melody: bool = False) -> None:
    """Write the tiny MusicGen (`build_tiny_musicgen`) into `scratch`, not atomically: for a builder
    that renames the folder into place itself (`unipgen.tiny.cached_tiny_model`)."""
    import torch
    import transformers

    from unipgen.tiny import build_tiny_tokenizer

    kind = "MusicgenMelody" if melody else "Musicgen"
    tokenizer = build_tiny_tokenizer(max_length=256)
    text = transformers.T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                 pad_token_id=tokenizer.pad_token_id)
    # hop 640 at 16 kHz: 25 frames a second (4 s = 100 decoder steps); 0.3 kbps over 6-bit
    # codebooks: 2 codebooks (the real models: 50 frames a second, 4 codebooks)
    audio = transformers.EncodecConfig(hidden_size=8, num_filters=4, upsampling_ratios=[8, 5, 4, 4], codebook_size=64,
                                       num_residual_layers=1, num_lstm_layers=1, sampling_rate=16_000,
                                       audio_channels=1, codebook_dim=8, target_bandwidths=[0.3])
    decoder = getattr(transformers, f"{kind}DecoderConfig")(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
        num_codebooks=audio.num_quantizers, pad_token_id=64, bos_token_id=64, max_position_embeddings=4096,
        initializer_factor=1.0)
    # A wide init (not 0.02) makes the logits peaked, so that the music depends on the prompt
    # through cross-attention rather than being near-uniform noise set by the seed alone. Melody:
    # chroma_length 125 = 8 s of chroma frames, read by the decoder as a prefix before the music.
    extra = {"num_chroma": 12, "chroma_length": 125} if melody else {}
    config = getattr(transformers, f"{kind}Config")(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                                                    decoder=decoder.to_dict(), initializer_factor=1.0, **extra)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{kind}ForConditionalGeneration")(config).eval()
    # EnCodec's codebooks start as zeros (training fills them): every code would decode to the
    # same sound. Random codebooks make the audio follow the generated codes, hence the prompt.
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    if melody:
        (scratch / "preprocessor_config.json").write_text(json.dumps(TINY_CHROMA, indent=2))


class MusicgenAudioBackend:
    """Text-to-music with MusicGen; the plan's prompt carries the user's taste."""

    modality = "audio"
    methods = frozenset({"prompt_only"})

    def __init__(self, ref: str = TINY_MUSICGEN, device: str = "cpu", seconds: float = 4.0,
                 guidance_scale: float = 3.0, max_seconds: float = 30.0) -> None:
        self.ref = ref
        self.random_weights = is_random(ref)  # its outputs are noise, and scores on them mechanical checks
        self.device = device
        self.seconds = seconds
        self.guidance_scale = guidance_scale
        self.max_seconds = max_seconds
        self.model: Any = None
        self.tokenizer: Any = None

    def setup(self) -> None:
        """Load the tokenizer and model once (idempotent)."""
        if self.model is not None:
            return
        from transformers import AutoTokenizer, MusicgenForConditionalGeneration

        path = str(tiny_musicgen_dir()) if self.ref == TINY_MUSICGEN else self.ref
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = MusicgenForConditionalGeneration.from_pretrained(path).to(self.device).eval()  # type: ignore[arg-type]  # transformers' wrapped .to

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.audio_encoder.sampling_rate)

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One WAV per output of each request, in order; the same bytes for the same seed."""
        self.setup()
        for request in requests:
            if request.plan.method not in self.methods:
                raise InvalidInputError(f"the music backend cannot apply {request.plan.method!r} "
                                        f"(speech needs a text-to-speech backend in the profile)")
        results = []
        for request in requests:
            extra, meta = self._conditioning(request, fetch)  # once per request, shared by its outputs
            results.append([self._one(request, index, extra, meta) for index in range(request.options.num_outputs)])
        return results

    def _conditioning(self, request: GenerationRequest, fetch: BlobFetcher) -> tuple[dict[str, Any], dict[str, Any]]:
        """Extra `model.generate` inputs for a request, and what to add to its meta (none here)."""
        return {}, {}

    def _one(self, request: GenerationRequest, index: int, extra: dict[str, Any],
             meta: dict[str, Any]) -> GeneratedOutput:
        import torch

        prompt = request.plan.prompt
        inputs = self.tokenizer([prompt], return_tensors="pt", padding=True).to(self.device)
        steps = self._steps()
        guidance = request.options.guidance_scale if request.options.guidance_scale is not None else self.guidance_scale
        seed_global(request.options.seed, index)
        with torch.inference_mode():
            audio = self.model.generate(**inputs, **extra, max_new_tokens=steps, do_sample=True,
                                        guidance_scale=guidance)
        samples = audio[0, 0].float().cpu().numpy()
        return GeneratedOutput(data=_wav(samples, self.sample_rate), media_type="audio/wav", meta={
            "model": self.ref, "method": request.plan.method, "prompt": prompt, "seed": request.options.seed,
            "sample_rate": self.sample_rate, "seconds": round(len(samples) / self.sample_rate, 3), **meta})

    def _steps(self) -> int:
        if not 0 < self.seconds <= self.max_seconds:
            raise InvalidInputError(f"music length {self.seconds} s is outside (0, {self.max_seconds}] s")
        return max(int(self.seconds * self.model.config.audio_encoder.frame_rate), 1)


def _wav(samples: Any, sample_rate: int) -> bytes:
    """16-bit PCM WAV of float samples in [-1, 1] (clipped)."""
    return encode_audio(samples, sample_rate, "wav")


#: Output formats: soundfile format, subtype and media type (both lossless, 16-bit).
AUDIO_FORMATS = {"wav": ("WAV", "PCM_16", "audio/wav"), "flac": ("FLAC", "PCM_16", "audio/flac")}


def encode_audio(samples: Any, sample_rate: int, audio_format: str = "wav") -> bytes:
    """16-bit WAV or FLAC bytes of mono float samples in [-1, 1] (clipped)."""
    import numpy as np
    import soundfile

    container, subtype, _ = AUDIO_FORMATS[audio_format]
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def decode_clip(data: bytes, sample_rate: int, max_seconds: float, what: str) -> np.ndarray:
    """Mono float32 samples of an audio file (WAV, FLAC, OGG...), resampled to `sample_rate`, cut to
    its first `max_seconds`; `what` names the file in errors (UnsupportedMediaError if not audio)."""
    import math

    import numpy as np
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        raise UnsupportedMediaError(f"{what} is not an audio file soundfile can read (WAV, FLAC, OGG): {exc}") from exc
    mono = samples.mean(axis=1)[: int(max_seconds * rate)]  # cut first: resampling is the costly part
    if mono.size == 0:
        raise UnsupportedMediaError(f"{what} holds no audio samples")
    if rate != sample_rate:
        try:
            from scipy.signal import resample_poly
        except ImportError:  # linear interpolation: coarser, but numpy only
            times = np.arange(int(len(mono) * sample_rate / rate)) * (rate / sample_rate)
            mono = np.interp(times, np.arange(len(mono)), mono)
        else:
            common = math.gcd(int(rate), int(sample_rate))
            mono = resample_poly(mono, sample_rate // common, int(rate) // common)
    return np.asarray(mono, dtype=np.float32)


__all__ = ["AUDIO_FORMATS", "TINY_CHROMA", "MusicgenAudioBackend", "build_tiny_musicgen", "decode_clip", "encode_audio",
           "tiny_musicgen_dir"]
