"""A small GGUF language model converted once into a transformers folder, so it loads in a second.

transformers reads a GGUF file by parsing its metadata with the `gguf` package and de-quantizing
every tensor: about 20 s of CPU for SmolLM2-135M (a 100 MB Q4_1 file), at every load: each
`unipgen demo`, worker or chat that serves the offline profile. What it builds is a plain float32
model, so `gguf_folder` saves it once (float32 safetensors, tokenizer, config) in a folder named
by the file's SHA-256 and the transformers version, beside the tiny models, and later loads read
that folder: the same weights, bit for bit, in about 0.3 s. The conversion checks itself before
the folder is kept: the saved folder, loaded back, must hold the same tensors and tokenize a
probe text the same way, else it raises and keeps nothing.

A float32 copy is about 5 times the size of a 4-bit GGUF (SmolLM2-135M: 540 MB), so only files up
to `GGUF_FOLDER_MAX_BYTES` are converted; a larger one loads from the GGUF file every time.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from unipgen.errors import UnipgenError
from unipgen.tiny import build_atomically

#: The largest GGUF file that is converted (its float32 folder is about 5x its size).
GGUF_FOLDER_MAX_BYTES = 512 << 20
#: Tokenized by the GGUF's tokenizer and the saved one when a folder is built: they must agree.
_PROBE = "Hello there! What is the capital of France? Ünïcode ✓ 東京, <|im_start|>user\n42"


def gguf_cache_dir() -> Path:
    """Where converted GGUF models are kept (beside the tiny models, in the temp folder)."""
    return Path(tempfile.gettempdir()) / "unipgen-gguf"


def gguf_folder(folder: str | Path, name: str, cache: Path | None = None) -> Path | None:
    """The transformers folder of the GGUF file `folder`/`name`, converted under `cache`
    (default `gguf_cache_dir`) on first use; None for a file over `GGUF_FOLDER_MAX_BYTES`."""
    import transformers

    source = Path(folder) / name
    if source.stat().st_size > GGUF_FOLDER_MAX_BYTES:
        return None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    directory = (cache or gguf_cache_dir()) / f"{source.stem}-{digest}-transformers-{transformers.__version__}"
    if not (directory / "model.safetensors").is_file():
        build_atomically(directory, lambda scratch: convert_gguf(source, scratch))
    return directory


def convert_gguf(source: Path, target: Path) -> None:
    """Load the GGUF file `source` as transformers does, save it into `target` as a plain float32
    model with its tokenizer, and check that `target` loads back the same (else UnipgenError)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                      dtype=torch.float32)
    model.hf_quantizer = None  # the weights are de-quantized already: save them as they are
    del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    saved = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    if not _same_tensors(model.state_dict(), saved.state_dict()):
        raise UnipgenError(f"{source.name}: the converted model's weights differ from the GGUF's")
    if AutoTokenizer.from_pretrained(target)(_PROBE)["input_ids"] != tokenizer(_PROBE)["input_ids"]:
        raise UnipgenError(f"{source.name}: the converted tokenizer differs from the GGUF's")


def _same_tensors(first: dict[str, Any], second: dict[str, Any]) -> bool:
    import torch

    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


__all__ = ["GGUF_FOLDER_MAX_BYTES", "convert_gguf", "gguf_cache_dir", "gguf_folder"]
