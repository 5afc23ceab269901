"""A tiny random AnimateDiff motion adapter for the tiny Stable Diffusion pipeline (tests, demos).

`tiny_motion_adapter_dir` holds a diffusers `MotionAdapter` whose blocks match the tiny UNet of
`image_tiny` (two blocks of 32 and 64 channels, one layer each), so that
`AnimateDiffPipeline.from_pretrained(tiny_sd_dir(), motion_adapter=...)` turns that UNet into a
`UNetMotionModel`. Its weights are random: the videos mean nothing, but every code path (motion
modules over frames, IP-Adapter, LoRA, decoding, encoding) is the real one. Built once per seed,
atomically, on first use (about a second).
"""

from __future__ import annotations

from pathlib import Path

from unipgen.tiny import cached_tiny_model

_VERSION = "1"
#: The most frames the tiny adapter takes (its motion modules' positional table).
TINY_MAX_FRAMES = 32


def tiny_motion_adapter_dir(seed: int = 0) -> Path:
    """The folder of the tiny random MotionAdapter for `tiny_sd_dir(seed)`, built on first use."""
    return cached_tiny_model("motion-adapter", _VERSION, seed, "config.json", build_tiny_motion_adapter)


def build_tiny_motion_adapter(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random MotionAdapter (the config diffusers' AnimateDiff tests use) to `directory`."""
    import torch
    from diffusers import MotionAdapter

    torch.manual_seed(seed + 3)
    adapter = MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                            motion_norm_num_groups=32, motion_max_seq_length=TINY_MAX_FRAMES)
    adapter.save_pretrained(directory)  # type: ignore[attr-defined]  # mypy reads diffusers' dummy class
    return directory


__all__ = ["TINY_MAX_FRAMES", "build_tiny_motion_adapter", "tiny_motion_adapter_dir"]
