"""The stage loop every benchmark's `run` shares: each stage in turn, with its progress on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

Stage = tuple[str, Callable[[], dict[str, Any]]]


def run_stages(stages: Sequence[Stage], *, show_seconds: bool = False) -> dict[str, Any]:
    """Run `stages` (name, figures) in order and merge their figures. A full run takes minutes, so
    each stage's name goes to stderr as it starts, and with `show_seconds` how long it took."""
    results: dict[str, Any] = {}
    for number, (name, stage) in enumerate(stages, 1):
        print(f"[{number}/{len(stages)}] {name}...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results |= stage()
        if show_seconds:
            print(f"      {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return results
