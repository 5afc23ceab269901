"""Jobs and the executors that run them: generation, training, fits and the protection of photos,
in this process or on Ray.

Callers pick an executor by name (`make_executor`, configuration) and submit jobs to it; library
code generates or trains with one call (`InlineGenerator`, `train`). Every output is made by a
job's run (`run_claimed`: prepare → the executor's work → finish), whoever runs it. The names
below load on first use, so importing this package pulls in no model library (nor Ray).

Modules: `jobs` (the run every executor shares), `generation` (a generation's prepare and
outputs), `training`, `protection` (photos protected from fine-tuning), `best_of`, `inline` and
`ray_executor` (where the work runs), `executors` (the choice by name), `ray_cluster`, `chat` (a
chat turn), `describe` (an image described in a user's style).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Public name → the module (of this package) that defines it.
_EXPORTS = {
    # Run jobs: an executor by name, or a given one.
    "Executor": "jobs",
    "make_executor": "executors",
    "EXECUTORS": "executors",
    "InlineExecutor": "inline",
    "RayExecutor": "ray_executor",
    # One call, for library code (the demo, the harnesses).
    "InlineGenerator": "inline",
    "GeneratedArtifact": "generation",
    "train": "training",
    "TrainedArtifact": "training",
    # Protected copies of a user's photos (Anti-DreamBooth): a job's spec, what a download serves.
    "protect_spec": "protection",
    "shared_photo": "protection",
    # A persona-grounded chat turn, streamed (interactive: not a queued job).
    "Chat": "chat",
    "ChatTurn": "chat",
    # An image described (caption, or the answer to a question) in a user's style (interactive).
    "Describer": "describe",
    # A job's run step by step, for executors and benchmarks.
    "QueueExecutor": "jobs",
    "Lease": "jobs",
    "JobCancelled": "jobs",
    "run_claimed": "jobs",
    "prepare": "jobs",
    "prepare_many": "jobs",
    "finish": "jobs",
    "finish_many": "jobs",
    "record_failure": "jobs",
    "PreparedGeneration": "generation",
    "prepare_generation": "generation",
}

__all__ = ["EXECUTORS", "Chat", "ChatTurn", "Describer", "Executor", "GeneratedArtifact", "InlineExecutor", "InlineGenerator", "JobCancelled", "Lease",
           "PreparedGeneration", "QueueExecutor", "RayExecutor", "TrainedArtifact", "finish", "finish_many",
           "make_executor", "prepare", "prepare_generation", "prepare_many", "protect_spec", "record_failure",
           "run_claimed", "shared_photo", "train"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from unipgen.orchestrator.chat import Chat, ChatTurn
    from unipgen.orchestrator.describe import Describer
    from unipgen.orchestrator.executors import EXECUTORS, make_executor
    from unipgen.orchestrator.generation import (
        GeneratedArtifact,
        PreparedGeneration,
        prepare_generation,
    )
    from unipgen.orchestrator.inline import InlineExecutor, InlineGenerator
    from unipgen.orchestrator.jobs import (
        Executor,
        JobCancelled,
        Lease,
        QueueExecutor,
        finish,
        finish_many,
        prepare,
        prepare_many,
        record_failure,
        run_claimed,
    )
    from unipgen.orchestrator.protection import protect_spec, shared_photo
    from unipgen.orchestrator.ray_executor import RayExecutor
    from unipgen.orchestrator.training import TrainedArtifact, train
