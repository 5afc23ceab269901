"""How every backend seeds its outputs: one function decides the seed of output i of a request.

Output `index` of a request with `options.seed = seed` draws from `row_seed(seed, index)`, a
hash of both, never from `seed + index`: so outputs of seed s and s + 1 share no draws, and an
output is the same bytes whatever else shares its batch or pipeline call. Backends take a
`torch.Generator` from `output_generator`; models that sample from torch's global generator
(`generate(do_sample=True)` in transformers) are seeded with `seed_global` right before the call.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def row_seed(seed: int, index: int) -> int:
    """The generator seed of output `index` of a request seeded `seed` (a 63-bit hash of both)."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def output_generator(seed: int, index: int, device: str = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded for output `index` of a request seeded `seed`."""
    import torch

    return torch.Generator(device).manual_seed(row_seed(seed, index))


def seed_global(seed: int, index: int) -> None:
    """Seed torch's global generator for output `index`, for models that draw from it."""
    import torch

    torch.manual_seed(row_seed(seed, index))


__all__ = ["output_generator", "row_seed", "seed_global"]
