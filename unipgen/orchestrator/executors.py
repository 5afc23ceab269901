"""The executor a caller gets by name (configuration: `Settings.executor`): ``inline`` or ``ray``.
The Ray executor's module is imported only when it is asked for."""

from __future__ import annotations

from typing import Any

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError
from unipgen.orchestrator.inline import InlineExecutor
from unipgen.orchestrator.jobs import Executor

#: The executors `make_executor` knows.
EXECUTORS = ("inline", "ray")


def make_executor(model: UserModel, settings: Any, name: str | None = None, *, progress: bool = False) -> Executor:
    """The executor `name` (default: `settings.executor`) over `model`'s store: ``inline`` or
    ``ray`` (a local cluster, or `settings.ray_address`)."""
    name = name or settings.executor
    queue = {"lease_s": settings.lease_s, "heartbeat_s": settings.heartbeat_s,
             "checkpoint_every": settings.checkpoint_every}
    if name == "inline":
        return InlineExecutor(model, progress=progress, **queue)
    if name == "ray":
        from unipgen.orchestrator.ray_executor import RayExecutor

        return RayExecutor(model, home=settings.home, address=settings.ray_address, **queue)
    raise InvalidInputError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "make_executor"]
