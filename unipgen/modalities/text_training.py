"""Training a user's text LoRA: load a trainable copy of the base model, fit it with a
resumable loop, save the adapter as deterministic zip bytes (what `TransformersTextBackend`
serves). The DPO recipe (`text_preference`) shares the loading, the update and the saving.
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError
from unipgen.modalities.checkpoints import (
    Checkpoint,
    TrainingLoop,
    digests,
    fingerprint,
    lora_checkpoint,
    resume_lora,
)
from unipgen.modalities.text import adapter_folder, resolve_ref


def save_text_adapter(peft_model: Any, adapter_name: str = "default") -> bytes:
    """Zip bytes of one adapter of `peft_model` (its PEFT `save_pretrained` folder), to store as a blob.

    The zip is deterministic (sorted names, fixed timestamps): the same weights give the same sha256.
    """
    with tempfile.TemporaryDirectory() as tmp:
        # Only LoRA weights: the embeddings are not trained (and "auto" would look for a Hub config).
        peft_model.save_pretrained(tmp, selected_adapters=[adapter_name], save_embedding_layers=False)
        folder = adapter_folder(Path(tmp))
        if folder is None:
            raise InvalidInputError(f"adapter {adapter_name!r}: PEFT wrote no adapter_config.json")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
        return buffer.getvalue()


@dataclass(frozen=True)
class TrainedTextAdapter:
    """A per-user text LoRA: zip bytes to store as a blob, and the loss of each training step.

    `resumed_from`: the step a checkpoint let this run go on from (0: it started afresh).
    """

    data: bytes
    losses: list[float]
    resumed_from: int = 0


def load_trainable(ref: str, gguf_file: str | None, rank: int, target_modules: str | list[str],
                   seed: int) -> tuple[Any, Any]:
    """(tokenizer, base model in float32 wrapped with a fresh LoRA in train mode) for training.

    The LoRA starts as the identity (PEFT zero-initialises B), so step 0 is the base model.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, gguf = resolve_ref(ref, gguf_file)
    extra = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **extra)
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target_modules, task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT calls a transformers property deprecated in 5.x
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base, config)
    model.train()
    return tokenizer, model


def run_trainable(model: Any, optimizer: Any, loop: TrainingLoop, digest: str,
                  step_fn: Callable[[int], float]) -> tuple[list[float], int]:
    """Run `step_fn` over `loop` on a PEFT model's "default" LoRA, going on from a checkpoint in
    `loop.checkpoint_dir` when there is one: (losses of all steps, the step it resumed from)."""
    start, losses = resume_lora(model, "default", optimizer, loop.checkpoint_dir, digest)

    def snapshot(step: int, done: list[float]) -> Checkpoint:
        return lora_checkpoint(model, "default", optimizer, step, done, digest)

    loop.run(start, losses, step_fn, snapshot)
    model.eval()
    return losses, start


def fit_trainable(model: Any, loss_fn: Callable[[int], Any], learning_rate: float, loop: TrainingLoop,
                  digest: str) -> tuple[list[float], int]:
    """`run_trainable` with AdamW on the model's trainable (LoRA) weights, each step one gradient
    step on the loss tensor `loss_fn(step)`: the update every LoRA recipe here shares."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)

    def step_fn(step: int) -> float:
        loss = loss_fn(step)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return float(loss.detach())

    return run_trainable(model, optimizer, loop, digest, step_fn)


def train_text_lora(ref: str, documents: Sequence[str], steps: int = 20, rank: int = 8, learning_rate: float = 1e-3,
                    seed: int = 0, max_length: int = 256, target_modules: str | list[str] = "all-linear",
                    gguf_file: str | None = None, should_stop: Callable[[], bool] | None = None,
                    checkpoint_dir: Path | None = None, checkpoint_every: int = 10) -> TrainedTextAdapter:
    """Fit a LoRA on `ref` to the user's `documents` (causal-LM loss, one document per step, cycling).

    A few steps on CPU are enough to shift style and vocabulary; the base model is loaded apart
    from any serving backend, so training never touches the weights being served. `should_stop`
    is asked before each step; True ends training with what was learned so far. With
    `checkpoint_dir`, a checkpoint is written every `checkpoint_every` steps (and when stopped),
    and a later call with the same inputs goes on from it, bit for bit.
    """

    texts = [doc for doc in documents if doc.strip()]
    if not texts:
        raise InvalidInputError("train_text_lora needs at least one non-empty document")
    digest = fingerprint(kind="text-lora", ref=ref, gguf_file=gguf_file, texts=digests(texts), rank=rank,
                         lr=learning_rate, seed=seed, max_length=max_length, target_modules=target_modules)
    tokenizer, model = load_trainable(ref, gguf_file, rank, target_modules, seed)
    # The answer ends with EOS, so the adapter also learns where to stop.
    batches = [tokenizer(text + (tokenizer.eos_token or ""), return_tensors="pt", truncation=True,
                         max_length=max_length)["input_ids"] for text in texts]

    def loss_fn(step: int) -> Any:
        ids = batches[step % len(batches)]
        return model(input_ids=ids, labels=ids).loss

    loop = TrainingLoop(steps, checkpoint_dir, checkpoint_every, should_stop, desc="text-lora")
    losses, start = fit_trainable(model, loss_fn, learning_rate, loop, digest)
    return TrainedTextAdapter(data=save_text_adapter(model, "default"), losses=losses, resumed_from=start)


__all__ = ["TrainedTextAdapter", "fit_trainable", "load_trainable", "run_trainable", "save_text_adapter",
           "train_text_lora"]
