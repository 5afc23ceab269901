"""Speech in the user's voice: SpeechT5 text-to-speech (transformers' `SpeechT5ForTextToSpeech`).

The plan's prompt is the text to speak. SpeechT5 takes a speaker vector beside the text: with
the `speaker_embedding` method it is derived from the user's voice, with `prompt_only` it is a
fixed default speaker. A HiFi-GAN vocoder turns the predicted mel frames into a 16 kHz waveform.

Where the speaker vector comes from (`speaker_encoder`):
* ``"speechbrain/spkrec-xvect-voxceleb"`` (or a local copy of it): a 512-d x-vector computed from
  the user's raw recordings (`context.conditioning.voice_samples`), as the real checkpoint
  (`microsoft/speecht5_tts`) was trained with; needs the optional `speechbrain` package;
* ``"resemblyzer"``: the context's 256-d mean Resemblyzer embedding (`voice_embedding`); only
  for a model whose `speaker_embedding_dim` is 256, such as the tiny one.
Left unset, it is chosen by the model: 256-d → resemblyzer, otherwise speechbrain.

Model references: ``"tiny-random"`` (a tiny random SpeechT5 and HiFi-GAN with a locally trained
character tokenizer; offline tests and demos: it babbles) or a Hub id / local folder, loaded with
`from_pretrained` (the vocoder from `vocoder`, by default ``"microsoft/speecht5_hifigan"``).
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, MissingDependencyError
from unipgen.modalities.audio import AUDIO_FORMATS, decode_clip, encode_audio
from unipgen.modalities.seeding import seed_global
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import build_atomically, cached_tiny_model, is_random

if TYPE_CHECKING:
    import torch

TINY_SPEECHT5 = "tiny-random"
HUB_VOCODER = "microsoft/speecht5_hifigan"
SPEECHBRAIN_XVECT = "speechbrain/spkrec-xvect-voxceleb"
RESEMBLYZER = "resemblyzer"
_VERSION = 3  # bump when the tiny model's recipe changes: the cached folder is rebuilt

# What the tiny character tokenizer learns its alphabet from.
_SENTENCES = (
    "the quick brown fox jumps over the lazy dog.",
    "hello, how are you today? i am fine!",
    "pack my box with five dozen liquor jugs; sphinx of black quartz, judge my vow.",
    "0 1 2 3 4 5 6 7 8 9 - ' \" : ( )",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
)


def tiny_speecht5_dir(seed: int = 0) -> Path:
    """The folder of the tiny random SpeechT5 for `seed` (vocoder in `vocoder/`), built on first use."""
    return cached_tiny_model("speecht5", _VERSION, seed, "vocoder/config.json", _save_tiny_speecht5)


def build_tiny_speecht5(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random SpeechT5 (256-d speakers), its HiFi-GAN and a char tokenizer (atomically)."""
    return build_atomically(directory, lambda scratch: _save_tiny_speecht5(scratch, seed))


def _save_tiny_speecht5(scratch: Path, seed: int) -> None:
    import sentencepiece
    import torch
    from transformers import (
        SpeechT5Config,
        SpeechT5ForTextToSpeech,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        SpeechT5Tokenizer,
    )

    # A character-level sentencepiece model with SpeechT5's special ids (<s>=0 <pad>=1 </s>=2 <unk>=3).
    model_file = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES * 4), model_writer=model_file, model_type="char", vocab_size=80,
        hard_vocab_limit=False, character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2, unk_id=3, minloglevel=2)
    (scratch / "spm_char.model").write_bytes(model_file.getvalue())
    tokenizer = SpeechT5Tokenizer(vocab_file=str(scratch / "spm_char.model"))
    config = SpeechT5Config(
        vocab_size=len(tokenizer), hidden_size=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_layers=2, decoder_attention_heads=2, decoder_ffn_dim=37, num_mel_bins=20,
        speech_decoder_prenet_units=32, speech_decoder_postnet_layers=2, speech_decoder_postnet_units=32,
        speaker_embedding_dim=256, max_text_positions=256, max_speech_positions=1024, encoder_max_relative_position=32,
        conv_dim=[8], conv_stride=[4], conv_kernel=[8], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    # upsampling 4*4*4*4 = 256 samples per mel frame at 16 kHz (the real vocoder's hop too)
    vocoder_config = SpeechT5HifiGanConfig(
        model_in_dim=20, upsample_initial_channel=16, upsample_rates=[4, 4, 4, 4], upsample_kernel_sizes=[8, 8, 8, 8],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], initializer_range=0.3)
    torch.manual_seed(seed)
    model = SpeechT5ForTextToSpeech(config).eval()
    vocoder = SpeechT5HifiGan(vocoder_config).eval()
    # Random stop logits would end speech after one step; a low bias lets it run to the length
    # limit, so the tiny model's output length follows the text (10 frames per character).
    with torch.no_grad():
        model.speech_decoder_postnet.prob_out.bias.fill_(-10.0)
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    vocoder.save_pretrained(scratch / "vocoder")


class SpeechT5Backend:
    """Text-to-speech with SpeechT5; the speaker vector carries the user's voice."""

    modality = "speech"
    methods = frozenset({"speaker_embedding", "prompt_only"})

    def __init__(self, ref: str = TINY_SPEECHT5, vocoder: str | None = None, speaker_encoder: str | None = None,
                 device: str = "cpu", audio_format: str = "wav", max_chars: int = 400,
                 max_voice_samples: int = 8, max_voice_seconds: float = 20.0, max_length_ratio: float = 20.0,
                 stop_threshold: float = 0.5, default_speaker: Sequence[float] | None = None,
                 speaker_cache_dir: str | None = None) -> None:
        """`max_chars`: longest text accepted; `max_voice_samples` / `max_voice_seconds`: how many
        recordings, and how much of each, feed an x-vector; `max_length_ratio`: at most this many
        mel frames per text token, halved by the model's reduction factor; `stop_threshold`: the
        stop probability that ends speech; `default_speaker`: the `prompt_only` speaker vector (None:
        zeros, i.e. no speaker information); `speaker_cache_dir`: where speechbrain keeps its files."""
        if audio_format not in AUDIO_FORMATS:
            raise InvalidInputError(f"audio_format {audio_format!r} is not one of {sorted(AUDIO_FORMATS)}")
        self.ref = ref
        self.random_weights = is_random(ref)
        self.vocoder_ref = vocoder
        self.speaker_encoder = speaker_encoder
        self.device = device
        self.audio_format = audio_format
        self.max_chars = max_chars
        self.max_voice_samples = max_voice_samples
        self.max_voice_seconds = max_voice_seconds
        self.max_length_ratio = max_length_ratio
        self.stop_threshold = stop_threshold
        self.default_speaker = list(default_speaker) if default_speaker is not None else None
        self.speaker_cache_dir = speaker_cache_dir
        self.model: Any = None
        self.vocoder: Any = None
        self.tokenizer: Any = None
        self._xvector_model: Any = None
        self._xvectors: dict[tuple[str, ...], Any] = {}  # recordings' shas → their x-vector

    def setup(self) -> None:
        """Load the tokenizer, model and vocoder once (idempotent); check the speaker source fits."""
        if self.model is not None:
            return
        from transformers import AutoTokenizer, SpeechT5ForTextToSpeech, SpeechT5HifiGan

        path = str(tiny_speecht5_dir()) if self.ref == TINY_SPEECHT5 else self.ref
        vocoder = self.vocoder_ref or (str(Path(path) / "vocoder") if self.ref == TINY_SPEECHT5 else HUB_VOCODER)
        model = SpeechT5ForTextToSpeech.from_pretrained(path)
        dim = model.config.speaker_embedding_dim
        if self.speaker_encoder is None:
            self.speaker_encoder = RESEMBLYZER if dim == 256 else SPEECHBRAIN_XVECT
        if self.speaker_encoder == RESEMBLYZER and dim != 256:
            raise InvalidInputError(f"speaker_encoder 'resemblyzer' gives 256-d voice vectors, but {self.ref!r} "
                                    f"takes {dim}-d speaker vectors: use {SPEECHBRAIN_XVECT!r}")
        if self.default_speaker is not None and len(self.default_speaker) != dim:
            raise InvalidInputError(f"default_speaker has {len(self.default_speaker)} values; {self.ref!r} takes {dim}")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.vocoder = SpeechT5HifiGan.from_pretrained(vocoder).to(self.device).eval()  # type: ignore[arg-type]  # transformers' wrapped .to
        self.model = model.to(self.device).eval()  # type: ignore[arg-type]  # as above; set last: setup is done

    @property
    def sample_rate(self) -> int:
        return int(self.vocoder.config.sampling_rate)

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One audio file per output of each request, in order; the same bytes for the same seed."""
        self.setup()
        for request in requests:
            if request.plan.method not in self.methods:
                raise InvalidInputError(f"the speech backend cannot apply {request.plan.method!r}; "
                                        f"it applies {sorted(self.methods)}")
            self._text(request)
        results = []
        for request in requests:
            speaker, source = self._speaker(request, fetch)
            results.append([self._one(request, index, speaker, source) for index in range(request.options.num_outputs)])
        return results

    def _text(self, request: GenerationRequest) -> str:
        text = request.plan.prompt.strip()
        if not text:
            raise InvalidInputError("there is no text to speak: the plan's prompt is empty")
        if len(text) > self.max_chars:
            raise InvalidInputError(f"the text to speak has {len(text)} characters; the limit is {self.max_chars}")
        return text

    def _one(self, request: GenerationRequest, index: int, speaker: Any, source: str) -> GeneratedOutput:
        import torch

        text = self._text(request)
        ids = self.tokenizer(text, return_tensors="pt", normalize=True).input_ids.to(self.device)
        config = self.model.config
        if ids.shape[1] > config.max_text_positions:
            raise InvalidInputError(f"the text is {ids.shape[1]} tokens; {self.ref!r} reads at most "
                                    f"{config.max_text_positions}")
        # One decoder step per `reduction_factor` frames; the steps must stay within the model's
        # speech positions, whatever the ratio asked for.
        ratio = min(self.max_length_ratio, (config.max_speech_positions - 1) * config.reduction_factor / ids.shape[1])
        seed_global(request.options.seed, index)  # the decoder's prenet dropout is always on
        with torch.inference_mode():
            waveform = self.model.generate_speech(ids, speaker.unsqueeze(0), vocoder=self.vocoder,
                                                  threshold=self.stop_threshold, maxlenratio=ratio)
        samples = waveform.float().cpu().numpy()
        media_type = AUDIO_FORMATS[self.audio_format][2]
        return GeneratedOutput(data=encode_audio(samples, self.sample_rate, self.audio_format), media_type=media_type,
                               meta={"model": self.ref, "method": request.plan.method, "prompt": text,
                                     "seed": request.options.seed, "sample_rate": self.sample_rate,
                                     "seconds": round(len(samples) / self.sample_rate, 3), "speaker_source": source})

    # -- speaker vectors ------------------------------------------------------------------------

    def _speaker(self, request: GenerationRequest, fetch: BlobFetcher) -> tuple[Any, str]:
        """The speaker vector for a request and where it came from (meta `speaker_source`)."""
        import torch

        dim = self.model.config.speaker_embedding_dim
        if request.plan.method == "prompt_only":
            if self.default_speaker is None:
                return torch.zeros(dim, device=self.device), "default:zeros"
            return torch.tensor(self.default_speaker, dtype=torch.float32, device=self.device), "default:profile"
        conditioning = request.context.conditioning
        if self.speaker_encoder == RESEMBLYZER:
            vector = conditioning.voice_embedding
            if vector is None:
                raise InvalidInputError(f"user {request.context.user!r} has no voice embedding to speak with: "
                                        f"add voice samples first")
            if len(vector) != dim:
                raise InvalidInputError(f"the voice embedding has {len(vector)} values; {self.ref!r} takes {dim}")
            return torch.tensor(vector, dtype=torch.float32, device=self.device), "resemblyzer:voice_embedding"
        shas = tuple(sorted(set(conditioning.voice_samples.values())))[: self.max_voice_samples]
        if not shas:
            raise InvalidInputError(f"user {request.context.user!r} has no voice recordings to take a speaker "
                                    f"x-vector from: add voice samples first")
        if shas not in self._xvectors:
            if len(self._xvectors) >= 256:  # bounded: forget the oldest user
                del self._xvectors[next(iter(self._xvectors))]
            self._xvectors[shas] = self._xvector(shas, fetch)
        return self._xvectors[shas], f"{self.speaker_encoder}:{len(shas)} recordings"

    def _xvector(self, shas: tuple[str, ...], fetch: BlobFetcher) -> torch.Tensor:
        """The unit-length mean speechbrain x-vector of the recordings (16 kHz mono each)."""
        import torch

        encoder = self._speechbrain()
        vectors = []
        for sha in shas:
            samples = decode_clip(fetch(sha), 16_000, self.max_voice_seconds, f"voice recording {sha[:12]}")
            with torch.inference_mode():
                vector = encoder.encode_batch(torch.from_numpy(samples).unsqueeze(0))  # (1, 1, 512)
            vectors.append(torch.nn.functional.normalize(vector.reshape(-1).float(), dim=0))
        mean = torch.stack(vectors).mean(dim=0)
        if mean.numel() != self.model.config.speaker_embedding_dim:
            raise InvalidInputError(f"{self.speaker_encoder!r} gives {mean.numel()}-d vectors; {self.ref!r} takes "
                                    f"{self.model.config.speaker_embedding_dim}")
        return torch.nn.functional.normalize(mean, dim=0).to(self.device)

    def _speechbrain(self) -> Any:
        """speechbrain's x-vector `EncoderClassifier` for `speaker_encoder`, loaded once."""
        if self._xvector_model is None:
            try:
                from speechbrain.inference.classifiers import EncoderClassifier
            except ImportError as exc:
                raise MissingDependencyError(f"speaker_encoder {self.speaker_encoder!r} needs the speechbrain package "
                                   f"(pip install speechbrain, which brings torchaudio), or use "
                                   f"speaker_encoder 'resemblyzer' with a 256-d model") from exc
            name = Path(self.speaker_encoder or SPEECHBRAIN_XVECT).name
            savedir = Path(self.speaker_cache_dir or Path(tempfile.gettempdir()) / "unipgen-speechbrain") / name
            self._xvector_model = EncoderClassifier.from_hparams(
                source=self.speaker_encoder, savedir=str(savedir), run_opts={"device": self.device})
        return self._xvector_model


__all__ = ["SpeechT5Backend", "build_tiny_speecht5", "tiny_speecht5_dir"]
