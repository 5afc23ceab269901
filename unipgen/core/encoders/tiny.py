"""Tiny random-weight models built locally from configs, for tests and offline demos.

No weights or tokenizers are downloaded: the tokenizer is trained here on a small word list,
the model is initialised from a fixed seed. The outputs carry no meaning; the code paths
(tokenise, encode, project, normalise, save, load) are the real ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from unipgen.tiny import build_tiny_tokenizer

TINY_CLIP = "tiny-random"
_VERSION = "1"


def tiny_clip_dir(seed: int = 0) -> Path:
    """The folder of the tiny CLIP for `seed`, built on first use (a few seconds)."""
    directory = Path(tempfile.gettempdir()) / "unipgen-tiny" / f"clip-v{_VERSION}-seed{seed}"
    if not (directory / "config.json").is_file():
        build_tiny_clip(directory, seed)
    return directory


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
