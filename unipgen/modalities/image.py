"""Images with diffusers: text-to-image, personalized by IP-Adapter, LoRA or textual inversion.

`DiffusersImageBackend` loads one Stable Diffusion pipeline (a Hub id, a local folder, or
"tiny-random": a tiny random-weight pipeline built offline from configs, for tests and demos)
and serves batches of requests. Each personalization is opt-in per request and undone after it
(`personalization`, shared with the video backend): IP-Adapter weights are unloaded, LoRAs
disabled (kept loaded in a small LRU cache), textual inversion tokens removed, so a plain
request after a personalized one gives the same bytes as on a fresh pipeline.

The `ip_adapter` option names IP-Adapter weights as "repo:subfolder:weight_name" with an
optional ":image_encoder_folder" (diffusers' `load_ip_adapter` arguments), e.g.
"h94/IP-Adapter:models:ip-adapter_sd15.safetensors"; the subfolder may be empty. The
`face_adapter` option names IP-Adapter FaceID weights the same way, with no image encoder:
FaceID takes the user's face embedding (`conditioning.face_embeddings`, averaged), not an
image, e.g. "h94/IP-Adapter-FaceID::ip-adapter-faceid_sd15.bin". The tiny pipeline ships its own
random IP-Adapter and FaceID weights (`image_tiny`), used when the options are left out.

`generate` is `PersonalizedDiffusion`'s recipe (job → personalize, call, undo → package); this
module adds the pipeline, the call (one batched call per job, one generator per image) and PNG
packaging. Output i of a request seeded s draws from `row_seed(s, i)` (`seeding`), as every
backend's outputs do: the same image whatever else is in the call (up to rounding: batched
with others, a few values may differ by one level on some CPUs, whose kernels change with the batch).
"""

from __future__ import annotations

import io
from typing import Any

from unipgen.modalities.image_tiny import (
    TINY_SD,
    build_tiny_sd,
    tiny_face_adapter_dir,
    tiny_ip_adapter_weights,
    tiny_sd_dir,
)
from unipgen.modalities.personalization import LORA_WEIGHT_NAME, DiffusionJob, PersonalizedDiffusion
from unipgen.modalities.seeding import output_generator
from unipgen.schema.generation import GeneratedOutput, GenerationRequest


class DiffusersImageBackend(PersonalizedDiffusion):
    """Stable Diffusion text-to-image with IP-Adapter (subject or face), LoRA and textual inversion."""

    modality = "image"
    methods = frozenset({"prompt_only", "ip_adapter", "lora", "textual_inversion"})

    def __init__(self, ref: str = TINY_SD, device: str = "cpu", dtype: str = "float32", steps: int = 2,
                 guidance_scale: float = 5.0, width: int | None = None, height: int | None = None,
                 ip_adapter: str | None = None, face_adapter: str | None = None) -> None:
        super().__init__(ref, device, dtype, steps, guidance_scale, width, height, ip_adapter, face_adapter)

    def load_pipeline(self, source: str) -> Any:
        """The text-to-image pipeline: SD, SD 2.x (sd-turbo) or SDXL, as model_index.json says."""
        import torch
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=getattr(torch, self.dtype))
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    def call(self, job: DiffusionJob, requests: list[GenerationRequest], kwargs: dict[str, Any]) -> list[Any]:
        """One pipeline call: one prompt and one generator per image, seeded by `row_seed(seed, index)`."""
        prompts, negatives, generators = [], [], []
        for request in requests:
            for index in range(request.options.num_outputs):
                prompts.append(request.plan.prompt)
                negatives.append(request.plan.negative_prompt)
                generators.append(output_generator(request.options.seed, index, self.device))
        return self.pipeline(prompt=prompts, negative_prompt=negatives, num_inference_steps=job.steps,
                             guidance_scale=job.guidance_scale, width=job.width, height=job.height,
                             generator=generators, output_type="pil", **kwargs).images

    def package(self, job: DiffusionJob, requests: list[GenerationRequest], results: list[Any],
                ) -> list[list[GeneratedOutput]]:
        """PNG bytes with how each image was made."""
        outputs, images = [], iter(results)
        for request in requests:
            produced = []
            for index in range(request.options.num_outputs):
                image = next(images)
                meta = {"model": self.ref, "method": job.applied_method, "prompt": request.plan.prompt,
                        "negative_prompt": request.plan.negative_prompt, "seed": request.options.seed,
                        "index": index, "steps": job.steps, "guidance_scale": job.guidance_scale,
                        "width": image.width, "height": image.height, "adapters": list(request.plan.adapters),
                        "subject": request.plan.subject, **job.conditioning_meta(request)}
                if job.by_face:
                    meta["face_embeddings"] = len(request.context.conditioning.face_embeddings)
                produced.append(GeneratedOutput(data=_png(image), media_type="image/png", meta=meta))
            outputs.append(produced)
        return outputs


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["LORA_WEIGHT_NAME", "TINY_SD", "DiffusersImageBackend", "build_tiny_sd", "tiny_face_adapter_dir",
           "tiny_ip_adapter_weights", "tiny_sd_dir"]
