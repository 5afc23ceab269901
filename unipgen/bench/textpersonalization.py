"""`unipgen bench textpersonalization`: does a user's history make a real LM answer like that user?

The protocol is `unipgen.eval.lamp` (which `unipgen eval lamp-style` runs with a report): a
LaMP-2-style tagging task on MovieLens tags by default, or a LaMP-layout task, answered by score
``nonpersonal`` / ``rag`` / ``lora``, and each mixed with the user's own answers (``usermodel``,
``rag_usermodel``, ``lora_usermodel``), with SmolLM2-135M-Instruct (profile "offline"), beside
the ``majority`` and ``user_majority`` baselines. ``quick`` uses the tiny random LM and a
handful of questions (a harness check: its answers mean nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unipgen.eval.lamp import QUICK, Settings, evaluate

THREADS = 1  # 2 threads on these 2 shared cores run about 10x slower


def run(quick: bool = False, data_dir: Path | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Every figure of one run; `data_dir`: a MovieLens folder (tags.csv) or a LaMP-layout task."""
    import torch

    torch.set_num_threads(THREADS)
    settings = settings or (QUICK if quick else Settings())
    return evaluate(Path(data_dir) if data_dir else None, settings, quick)
