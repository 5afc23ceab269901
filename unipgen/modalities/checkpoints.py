"""Checkpoints shared by the trainers, so a training run cut short resumes where it stopped.

A retried training job (a crashed worker, a lost lease) should not start again at step 0. Every
trainer here runs its steps through one `TrainingLoop`: it asks `should_stop` before each step,
writes a `Checkpoint` atomically every `checkpoint_every` steps and once more when stopped, and
the next call with the same `checkpoint_dir` goes on from it. A checkpoint holds the trained
tensors, the optimizer state, the losses so far, the step and torch's RNG state, so the resumed
run gives the same losses and bytes as a run never interrupted. It also holds a `fingerprint` of
the run's inputs: a checkpoint of another run is refused rather than silently mixed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class Checkpoint:
    """What a resumed run needs: trained tensors, optimizer state, step, losses and RNG state."""

    step: int
    weights: dict[str, Any]
    optimizer: dict[str, Any]
    losses: list[float]
    rng: Any
    fingerprint: str

    def restore(self, optimizer: Any) -> tuple[int, list[float]]:
        """Put the optimizer and torch's RNG back as they were; (step to go on from, losses so far)."""
        import torch

        optimizer.load_state_dict(self.optimizer)
        torch.set_rng_state(self.rng)
        return self.step, list(self.losses)


def fingerprint(**settings: Any) -> str:
    """A digest of what a run depends on: a checkpoint only resumes the same run."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def digests(items: Any) -> list[str]:
    """sha256 of each of `items` (bytes, or text as UTF-8): a fingerprint's view of training data."""
    return [hashlib.sha256(item if isinstance(item, bytes) else str(item).encode()).hexdigest() for item in items]


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> bool:
    """Write the checkpoint atomically (a crash mid-write leaves the previous one). `directory`
    is made inside an existing folder (a job's scratch folder); when that folder is gone (the
    job was deleted, its user forgotten) nothing is written and False is returned: no retry
    can resume it, and writing would bring back data derived from a forgotten user."""
    import os

    import torch

    try:
        directory.mkdir(exist_ok=True)
        scratch = directory / (CHECKPOINT_FILE + ".tmp")
        torch.save(checkpoint.__dict__, scratch)
        os.replace(scratch, directory / CHECKPOINT_FILE)
    except (OSError, RuntimeError):  # torch.save says RuntimeError when the folder is gone
        if directory.parent.is_dir():
            raise
        return False  # the parent went away, before or while writing (a mkdir then even says it exists)
    return True


def load_checkpoint(directory: Path | None, fingerprint: str) -> Checkpoint | None:
    """The last checkpoint in `directory`, or None; one from a different run is refused."""
    import torch

    if directory is None or not (directory / CHECKPOINT_FILE).is_file():
        return None
    checkpoint = Checkpoint(**torch.load(directory / CHECKPOINT_FILE, weights_only=False))
    if checkpoint.fingerprint != fingerprint:
        raise InvalidInputError(f"checkpoint in {directory} belongs to a different training run")
    return checkpoint


# ---------------------------------------------------------------- LoRA adapters (PEFT)


def lora_checkpoint(module: Any, adapter_name: str, optimizer: Any, step: int, losses: list[float],
                    fingerprint: str) -> Checkpoint:
    """A checkpoint of the trainable LoRA weights of `adapter_name` in `module` (a PeftModel, or a
    diffusers model with an added adapter)."""
    import torch
    from peft.utils import get_peft_model_state_dict

    weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(module, adapter_name=adapter_name).items()}
    return Checkpoint(step, weights, optimizer.state_dict(), list(losses), torch.get_rng_state(), fingerprint)


def resume_lora(module: Any, adapter_name: str, optimizer: Any, directory: Path | None,
                fingerprint: str) -> tuple[int, list[float]]:
    """Load the LoRA checkpoint in `directory` into `module` and `optimizer`: (start step, losses);
    (0, []) when there is none."""
    from peft.utils import set_peft_model_state_dict

    checkpoint = load_checkpoint(directory, fingerprint)
    if checkpoint is None:
        return 0, []
    set_peft_model_state_dict(module, checkpoint.weights, adapter_name=adapter_name)
    return checkpoint.restore(optimizer)


# ---------------------------------------------------------------- the step loop


def _progress_bar(total: int, initial: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar when `enabled`, else None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc)


@dataclass
class TrainingLoop:
    """The step loop every trainer shares: stop, progress, checkpoints and losses."""

    steps: int
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 10
    should_stop: Callable[[], bool] | None = None
    progress: bool = False
    desc: str = "training"

    def run(self, start: int, losses: list[float], step_fn: Callable[[int], float],
            snapshot: Callable[[int, list[float]], Checkpoint]) -> int:
        """Run steps `start`..`steps-1`; returns the number of steps done (less when stopped)."""
        bar = _progress_bar(self.steps, start, self.progress, self.desc)
        step = start
        try:
            while step < self.steps:
                if self.should_stop is not None and self.should_stop():
                    break
                losses.append(step_fn(step))
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                if self._due(step):
                    save_checkpoint(self.checkpoint_dir, snapshot(step, losses))  # type: ignore[arg-type]
        finally:
            if bar is not None:
                bar.close()
        # A stopped run keeps its progress: the next call resumes here, not at the last periodic save.
        if self.checkpoint_dir is not None and step > start and not self._due(step):
            save_checkpoint(self.checkpoint_dir, snapshot(step, losses))
        return step

    def _due(self, step: int) -> bool:
        """Whether a periodic checkpoint falls after `step` steps."""
        return self.checkpoint_dir is not None and step % max(1, self.checkpoint_every) == 0


__all__ = ["CHECKPOINT_FILE", "Checkpoint", "TrainingLoop", "digests", "fingerprint", "load_checkpoint",
           "lora_checkpoint", "resume_lora", "save_checkpoint"]
