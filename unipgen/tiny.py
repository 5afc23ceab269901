"""Shared pieces of the tiny random models: where they are cached, how they are built atomically,
a locally trained tokenizer, the tiny CLIP and CLAP.

Tiny models (CLIP for the encoders, Stable Diffusion for the image backend) are built from
configs with random weights for tests and offline demos; their tokenizer is trained here, so
nothing is downloaded. The outputs carry no meaning; the code paths (tokenise, encode, project,
normalise, save, load) are the real ones. This sits at the package top, beside settings and
errors, because both `unipgen.core` (the image encoder) and `unipgen.modalities` (the video
backend's frame encoder) use it and neither may import the other.

Every tiny model lives in its own folder under `tiny_cache_dir`, built once per seed on first use
by `build_atomically`, so that concurrent builders (test workers, Ray workers) never see half.

What a number computed with such a model is, is said here once (issue 19): a component (an
encoder, a backend, a metric's model) whose reference is `TINY_RANDOM` has `random_weights` set,
and a score it computes is a `MECHANICAL` check, never a quality figure (`score_kind`). Reports
and outputs' meta carry the kind beside the score (`meta["score_kinds"]`) and show it with
`shown_score`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

#: The model reference of every tiny random-weight model (CLIP, CLAP, LM, SD, BLIP...).
TINY_RANDOM = "tiny-random"
#: What a score is: a figure measured by trained models, or a mechanical check (random weights).
ScoreKind = Literal["measure", "mechanical check"]
MEASURE: ScoreKind = "measure"
MECHANICAL: ScoreKind = "mechanical check"
#: What a mechanical check is, in the words every report uses.
MECHANICAL_NOTE = ("computed with random-weight models: it checks that the code path runs, and says nothing "
                   "about quality")

# Words the tiny tokenizer learns from: prompts and nouns of the kind unipgen sees.
_CORPUS = ["a", "photo", "of", "a", "dog", "cat", "backpack", "vase", "clock", "toy", "sneaker", "candle", "bowl", "bear", "plushie", "robot", "duck", "teapot", "in", "the", "jungle", "snow", "beach", "city", "street", "on", "top", "of", "a", "wooden", "floor", "with", "a", "blue", "house", "in", "the", "background", "red", "green", "blue", "yellow", "purple", "shiny", "wet", "cube", "a", "cartoon", "painting", "watercolor", "sketch", "style", "of", "van", "gogh", "action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama", "fantasy", "horror", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western", "noir", "portrait", "landscape", "sunset", "mountain", "river", "forest"]


def is_random(ref: object) -> bool:
    """Whether a model reference names a tiny random-weight model built from a config."""
    return ref == TINY_RANDOM


def has_random_weights(component: object) -> bool:
    """Whether a model component (encoder, backend, metric model) runs on random weights: its
    `random_weights` attribute, set from its reference; a component without one has trained
    weights (dlib, Resemblyzer, Kokoro and the packaged MiniLM have no random variant)."""
    return bool(getattr(component, "random_weights", False))


def score_kind(*components: object) -> ScoreKind:
    """The kind of a score that `components` computed (or produced the outputs of): a mechanical
    check when any of them has random weights."""
    return MECHANICAL if any(has_random_weights(c) for c in components) else MEASURE


def shown_score(value: object, kind: str | None) -> str:
    """A score as reports show it: 3 decimals, and "(mechanical check: random weights)" after a
    mechanical one, so that it never reads as a quality figure."""
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return f"{text} ({MECHANICAL}: random weights)" if kind == MECHANICAL else text


def tiny_cache_dir(name: str) -> Path:
    """The folder of the cached tiny model `name` (e.g. "clip-v1-seed0"), beside all the others."""
    return Path(tempfile.gettempdir()) / "unipgen-tiny" / name


def cached_tiny_model(name: str, version: int | str, seed: int, marker: str,
                      save: Callable[[Path, int], object]) -> Path:
    """The folder of the tiny model `name` (at recipe `version`) for `seed`, built on first use:
    `save(scratch, seed)` fills a scratch folder that `build_atomically` renames into place, so a
    folder holding the file `marker` is whole. A new `version` names a new folder (a rebuild)."""
    directory = tiny_cache_dir(f"{name}-v{version}-seed{seed}")
    if not (directory / marker).is_file():
        build_atomically(directory, lambda scratch: save(scratch, seed))
    return directory


def build_atomically(directory: Path, build: Callable[[Path], object]) -> Path:
    """Run `build` on a scratch folder beside `directory`, then rename it to `directory`.

    A rename is atomic, so concurrent builders never see half a folder; the loser of a race
    drops its own copy (it is as good as the winner's).
    """
    import os
    import shutil

    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    try:
        build(scratch)
    except BaseException:  # a failed build leaves nothing behind
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    try:
        os.rename(scratch, directory)
    except OSError:  # another process won the race
        shutil.rmtree(scratch, ignore_errors=True)
    return directory


def build_tiny_tokenizer(max_length: int = 77):  # noqa: ANN201
    """A BPE tokenizer (pad/bos/eos/unk = 0/1/2/3) trained on the word list above; deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<bos>", "<eos>", "<unk>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.BPEDecoder()
    backend.train_from_iterator([" ".join(_CORPUS)] * 4, trainers.BpeTrainer(vocab_size=300, special_tokens=special))
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 1), ("<eos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", model_max_length=max_length)


TINY_CLIP = TINY_RANDOM
_VERSION = "1"


def tiny_clip_dir(seed: int = 0) -> Path:
    """The folder of the tiny CLIP for `seed`, built on first use (a few seconds)."""
    return cached_tiny_model("clip", _VERSION, seed, "config.json", build_tiny_clip)


def build_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """Save a tiny CLIP (model, tokenizer, image processor) to `directory`."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = build_tiny_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "pad_token_id": 0, "bos_token_id": 1,
            "eos_token_id": 2}
    vision = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
              "num_hidden_layers": 2, "num_attention_heads": 4}
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


TINY_CLAP = TINY_RANDOM
_CLAP_VERSION = "1"


def tiny_clap_dir(seed: int = 0) -> Path:
    """The folder of the tiny random CLAP (16 kHz, 2 s windows) for `seed`, built on first use."""
    return cached_tiny_model("clap", _CLAP_VERSION, seed, "config.json", _save_tiny_clap)


def build_tiny_clap(directory: Path, seed: int = 0) -> Path:
    """Save a tiny CLAP (model, tokenizer, feature extractor) to `directory`, atomically."""
    return build_atomically(directory, lambda scratch: _save_tiny_clap(scratch, seed))


def _save_tiny_clap(scratch: Path, seed: int) -> None:
    import torch
    import transformers

    tokenizer = build_tiny_tokenizer()
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 80, "type_vocab_size": 1, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2, "projection_dim": 16}
    # HTSAT: the last stage's width (patch_embeds_hidden_size · 2^(stages-1)) must equal hidden_size.
    audio = {"hidden_size": 16, "patch_embeds_hidden_size": 8, "depths": [1, 1], "num_attention_heads": [2, 2],
             "window_size": 4, "spec_size": 64, "num_mel_bins": 16, "patch_size": 4, "patch_stride": [4, 4],
             "enable_fusion": False, "projection_dim": 16}
    torch.manual_seed(seed)
    model = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=16))
    model.eval().save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    transformers.ClapFeatureExtractor(feature_size=16, sampling_rate=16_000, hop_length=160, max_length_s=2,
                                      fft_window_size=400, frequency_max=8_000).save_pretrained(scratch)
