"""`unipgen bench textpersonalization`: does a user's history make a real LM answer like that user?

A thin wrapper over `unipgen.eval.lamp` (which `unipgen eval lamp-style` runs from an installed
package): a LaMP-2-style tagging task on MovieLens tags by default, or a LaMP-layout task, answered
``nonpersonal`` / ``rag`` / ``lora`` with SmolLM2-135M-Instruct (profile "offline"), plus the
``majority`` and ``user_majority`` baselines. ``quick`` uses the tiny random LM and a handful of
questions (a harness check: its answers mean nothing). See `unipgen.eval.lamp` for the protocol.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys
from pathlib import Path
from typing import Any

import torch

from unipgen.eval import lamp
from unipgen.eval.lamp import QUICK, Settings, evaluate

THREADS = 1  # 2 threads on these 2 shared cores run about 10x slower


def run(quick: bool = False, data_dir: Path | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Every figure of one run; `data_dir`: a MovieLens folder (tags.csv) or a LaMP-layout task."""
    torch.set_num_threads(THREADS)
    settings = settings or (QUICK if quick else Settings())
    return evaluate(Path(data_dir) if data_dir else None, settings, quick)


def __getattr__(name: str) -> Any:
    """The protocol's other names (tasks, prompts, scorers) as `unipgen.eval.lamp` defines them."""
    return getattr(lamp, name)


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
