"""The step loop every trainer shares: periodic checkpoints, one more when stopped, none past a
crash, and a checkpoint of another run refused (the trainers' own tests check resume bit for bit)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from unipgen.errors import InvalidInputError
from unipgen.modalities.checkpoints import Checkpoint, TrainingLoop, fingerprint, load_checkpoint, save_checkpoint

torch.set_num_threads(1)
RUN = fingerprint(kind="test", seed=0)


def snapshot(step: int, losses: list[float]) -> Checkpoint:
    return Checkpoint(step, {}, {}, list(losses), torch.get_rng_state(), RUN)


def test_checkpoints_every_n_steps_and_when_stopped(tmp_path: Path) -> None:
    saved: list[int] = []
    saved_losses: list[float] = []
    loop = TrainingLoop(10, tmp_path, 3, should_stop=lambda: len(saved_losses) >= 5)

    def counting(step: int, losses: list[float]) -> Checkpoint:
        saved.append(step)
        return snapshot(step, losses)

    assert loop.run(0, saved_losses, float, counting) == 5
    assert saved == [3, 5]  # the periodic one, then the stop's
    checkpoint = load_checkpoint(tmp_path, RUN)
    assert checkpoint is not None and checkpoint.step == 5 and checkpoint.losses == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    with pytest.raises(InvalidInputError, match="different training run"):
        load_checkpoint(tmp_path, fingerprint(kind="test", seed=1))


def test_a_crash_keeps_the_last_periodic_checkpoint(tmp_path: Path) -> None:
    def step_fn(step: int) -> float:
        if step == 5:  # five steps done: the last periodic checkpoint is at 4
            raise RuntimeError("lost the GPU")
        return float(step)

    with pytest.raises(RuntimeError):
        TrainingLoop(10, tmp_path, 2).run(0, [], step_fn, snapshot)
    checkpoint = load_checkpoint(tmp_path, RUN)
    assert checkpoint is not None and checkpoint.step == 4


def test_no_folder_no_checkpoint(tmp_path: Path) -> None:
    assert TrainingLoop(3).run(0, [], float, snapshot) == 3
    assert load_checkpoint(None, RUN) is None and load_checkpoint(tmp_path, RUN) is None


def test_a_checkpoint_never_brings_back_a_removed_job_folder(tmp_path: Path) -> None:
    """A job's scratch folder removed under a running job (the job deleted, its user forgotten):
    the run goes on to its next step, and no checkpoint recreates the folder."""
    job_folder = tmp_path / "job"
    job_folder.mkdir()
    inside = job_folder / "inputs-digest"
    assert save_checkpoint(inside, snapshot(1, [0.0])) and load_checkpoint(inside, RUN) is not None
    shutil.rmtree(job_folder)
    assert TrainingLoop(4, inside, 1).run(0, [], float, snapshot) == 4
    assert not save_checkpoint(inside, snapshot(2, [0.0, 1.0]))
    assert not job_folder.exists()
