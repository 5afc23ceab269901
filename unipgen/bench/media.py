"""`unipgen bench media`: seconds per video and per 3D object on the tiny profile, each beside the
same diffusers pipeline called directly in the same process.

- video: `AnimateDiffVideoBackend.generate` (one MP4 with its temporal-consistency score) vs
  `AnimateDiffPipeline(...)` on the same pipeline object, prompt, frames, steps, size and seed;
  the difference is the backend's own work: request handling, MP4 encoding and one CLIP pass over
  the frames.
- 3D: `ShapEBackend.generate` (one GLB and its PNG preview) vs `ShapEPipeline(...)` to a latent
  plus the renderer's marching cubes at the same grid (what any caller must do to get a mesh;
  the pipeline's own `output_type="mesh"` fixes the grid at 128, so it is not comparable); the
  difference is orientation, GLB export and the preview render.

Times are medians of interleaved runs after a warm-up (`unipgen.bench.generation.paired_medians`), with
one torch thread. The models are tiny and random, so these are the backends' fixed costs; with
real weights the pipeline's seconds grow and the overhead's share shrinks.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import torch

from unipgen.bench.generation import LIBRARIES, paired_medians
from unipgen.eval.environment import machine
from unipgen.modalities.seeding import row_seed
from unipgen.schema.context import Modality, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest

PROMPT = "a photo of a dog in the snow"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def run(quick: bool = False) -> dict[str, Any]:
    """Video and 3D figures; `quick` takes fewer runs."""
    torch.set_num_threads(1)
    runs = 3 if quick else 7
    results: dict[str, Any] = {"machine": machine(*LIBRARIES), "quick": quick}
    for number, (name, stage) in enumerate((("video", bench_video), ("3d", bench_shape)), 1):
        print(f"[{number}/2] {name}...", file=sys.stderr, flush=True)
        results |= stage(runs)
    return results


def _request(modality: Modality, seed: int = 0) -> GenerationRequest:
    context = UserContext(tenant="t", user="u", modality=modality, instruction=PROMPT, profile={}, built_at=NOW)
    plan = PersonalizationPlan(modality=modality, method="prompt_only", prompt=PROMPT, reasons=["bench"],
                               budget_tokens=77, used_tokens=8)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed))


def _no_blobs(sha: str) -> bytes:
    raise AssertionError(f"a prompt-only request fetched blob {sha}")


def bench_video(runs: int, size: int = 64, frames: int = 8) -> dict[str, Any]:
    from unipgen.modalities.video import AnimateDiffVideoBackend

    backend = AnimateDiffVideoBackend(width=size, height=size, num_frames=frames)
    backend.setup()
    request = _request("video")

    def direct() -> Any:
        generator = torch.Generator().manual_seed(row_seed(0, 0))
        return backend.pipeline(prompt=[PROMPT], negative_prompt=[""], num_frames=frames,
                                num_inference_steps=backend.steps, guidance_scale=backend.guidance_scale,
                                width=size, height=size, generator=generator, output_type="pil").frames[0]

    ours_s, base_s, ratio, pairs = paired_medians(lambda: backend.generate([request], _no_blobs)[0][0], direct, runs)
    assert len({out.data for out, _ in pairs}) == 1, "the backend gave different bytes for the same request"
    return {"video_frames": frames, "video_size": size, "video_steps": backend.steps,
            "video_s_per_output": round(ours_s, 4), "video_direct_s": round(base_s, 4),
            "video_overhead_s": round(ours_s - base_s, 4), "video_overhead_ratio": round(ratio, 3),
            "video_temporal_consistency": pairs[0][0].meta["temporal_consistency"],
            "video_temporal_consistency_kind": pairs[0][0].meta["score_kinds"]["temporal_consistency"]}


def bench_shape(runs: int) -> dict[str, Any]:
    from unipgen.modalities.shape import ShapEBackend

    backend = ShapEBackend()
    pipe = backend.pipeline
    request = _request("3d")

    def direct() -> Any:
        generator = torch.Generator().manual_seed(row_seed(0, 0))
        latents = pipe(PROMPT, num_inference_steps=backend.steps, guidance_scale=backend.guidance_scale,
                       generator=generator, output_type="latent").images
        with torch.inference_mode():
            return pipe.shap_e_renderer.decode_to_mesh(latents[:1], "cpu", grid_size=backend.grid_size)

    ours_s, base_s, ratio, pairs = paired_medians(lambda: backend.generate([request], _no_blobs)[0], direct, runs)
    mesh, preview = pairs[0][0]
    return {"shape_steps": backend.steps, "shape_grid_size": backend.grid_size, "shape_faces": mesh.meta["faces"],
            "shape_s_per_output": round(ours_s, 4), "shape_direct_s": round(base_s, 4),
            "shape_overhead_s": round(ours_s - base_s, 4), "shape_overhead_ratio": round(ratio, 3),
            "shape_glb_bytes": len(mesh.data), "shape_preview_bytes": len(preview.data)}

