"""DreamBooth-LoRA step time: `train_dreambooth_lora` vs the same loop written directly on diffusers + peft.

Both sides train a rank-`rank` LoRA on the tiny SD UNet's attention projections (to_q, to_k, to_v,
to_out.0) with prior preservation, from the same seed, subject images, class images, AdamW and
learning rate, at the same resolution, for the same number of steps. The direct loop follows
diffusers' examples/dreambooth/train_dreambooth_lora.py: `unet.add_adapter(LoraConfig(...))`, the
DDPM scheduler's `add_noise`, a frozen text encoder, the UNet's noise prediction, MSE on the subject
half plus `prior_weight` x MSE on the class half, `AdamW.step`. Like unipgen, it encodes the prompts
once before the loop (the example's `--pre_compute_text_embeddings`) and the images once (one
latent sample each), and it draws each step's noise and timesteps from a generator seeded by
(seed, step), so that the two loops see the same numbers and their losses can be compared step by
step.

What differs from the example, on both sides alike: no gradient clipping (the example clips to
norm 1.0), no VAE pass per step (the example encodes every batch again), no accelerate, no data
loader (every step trains on all images).

The two loops alternate step by step: unipgen's `should_stop` hook, called before each of its
steps, first runs the direct loop's step of the same index. unipgen's step time runs from one hook
call to the next, so its loop's own bookkeeping (losses, progress, checkpoint checks) is included.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from unipgen.modalities.image import TINY_SD, tiny_sd_dir
from unipgen.modalities.image_training import load_pipeline, train_dreambooth_lora

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
CLASS_NOUN = "dog"
TOKEN = "sks"


# -- inputs --------------------------------------------------------------------------------------


def shape_png(resolution: int, color: tuple[int, int, int], shape: str) -> bytes:
    """A `resolution`-square PNG of one coloured shape on white."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (resolution, resolution), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (resolution // 5, resolution // 5, resolution * 4 // 5, resolution * 4 // 5)
    if shape == "disc":
        draw.ellipse(box, fill=color)
    else:
        draw.rectangle(box, fill=color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def training_images(resolution: int) -> tuple[list[bytes], list[bytes]]:
    """(two subject images, two class images), already at `resolution` so neither side resizes."""
    subjects = [shape_png(resolution, (220, 30, 30), "square"), shape_png(resolution, (30, 30, 220), "disc")]
    classes = [shape_png(resolution, (90, 90, 90), "disc"), shape_png(resolution, (140, 110, 60), "square")]
    return subjects, classes


# -- the direct loop -----------------------------------------------------------------------------


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator seeded by (seed, step) as unipgen seeds its steps (sha256 of "seed:step")."""
    digest = hashlib.sha256(f"{seed}:{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


@dataclass
class DirectModels:
    """The components the example loads, each from its subfolder of the model folder."""

    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any

    @classmethod
    def load(cls, model_dir: Path) -> DirectModels:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        models = cls(tokenizer=AutoTokenizer.from_pretrained(model_dir, subfolder="tokenizer"),
                     text_encoder=CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder"),
                     vae=AutoencoderKL.from_pretrained(model_dir, subfolder="vae"),
                     unet=UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet"),
                     noise_scheduler=DDPMScheduler.from_pretrained(model_dir, subfolder="scheduler"))
        for frozen in (models.text_encoder, models.vae, models.unet):
            frozen.requires_grad_(False)
        return models


def pixel_batch(pngs: Sequence[bytes], resolution: int) -> torch.Tensor:
    """(n, 3, res, res) in [-1, 1]; the bench's images are already `resolution` square."""
    from PIL import Image

    tensors = []
    for data in pngs:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        if image.size != (resolution, resolution):
            raise ValueError(f"bench images must be {resolution}x{resolution}, got {image.size}")
        tensors.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    return torch.stack(tensors)


@torch.no_grad()
def encode_images(vae: Any, pngs: Sequence[bytes], resolution: int, seed: int) -> torch.Tensor:
    """Scaled latents, one seeded draw from the VAE's posterior."""
    posterior = vae.encode(pixel_batch(pngs, resolution)).latent_dist
    return posterior.sample(generator=torch.Generator().manual_seed(seed)) * vae.config.scaling_factor


@torch.no_grad()
def encode_prompt(models: DirectModels, prompt: str, count: int) -> torch.Tensor:
    """The frozen text encoder's hidden states for `prompt`, padded to max length, `count` times."""
    ids = models.tokenizer(prompt, padding="max_length", max_length=models.tokenizer.model_max_length,
                           truncation=True, return_tensors="pt").input_ids
    return models.text_encoder(ids)[0].repeat(count, 1, 1)


class DirectLoop:
    """DreamBooth-LoRA with prior preservation written on diffusers + peft, one `step()` per call.

    Entering adds the LoRA and encodes images and prompts; leaving deletes the LoRA. Stepping on
    demand lets the bench alternate its steps with unipgen's, step by step.
    """

    def __init__(self, models: DirectModels, images: Sequence[bytes], class_images: Sequence[bytes], *, rank: int,
                 learning_rate: float, seed: int, resolution: int, prior_weight: float = 1.0) -> None:
        self.models, self.images, self.class_images = models, images, class_images
        self.rank, self.learning_rate, self.seed, self.resolution = rank, learning_rate, seed, resolution
        self.prior_weight = prior_weight
        self.losses: list[float] = []

    def __enter__(self) -> Self:
        from peft import LoraConfig

        models, unet = self.models, self.models.unet
        self.latents = torch.cat([encode_images(models.vae, self.images, self.resolution, self.seed),
                                  encode_images(models.vae, self.class_images, self.resolution, self.seed + 1)])
        self.states = torch.cat([encode_prompt(models, f"a photo of {TOKEN} {CLASS_NOUN}", len(self.images)),
                                 encode_prompt(models, f"a photo of {CLASS_NOUN}", len(self.class_images))])
        torch.manual_seed(self.seed)  # the LoRA's initial weights
        unet.add_adapter(LoraConfig(r=self.rank, lora_alpha=self.rank, init_lora_weights="gaussian",
                                    target_modules=LORA_TARGETS))
        self.optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=self.learning_rate)
        unet.train()
        return self

    def __exit__(self, *exc: object) -> None:
        unet = self.models.unet
        unet.eval()
        unet.delete_adapters("default")
        unet.requires_grad_(False)

    def step(self) -> float:
        """One optimisation step; returns its loss."""
        import torch.nn.functional as F

        unet, scheduler, latents = self.models.unet, self.models.noise_scheduler, self.latents
        generator = step_generator(self.seed, len(self.losses))
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = noise if scheduler.config.prediction_type == "epsilon" else \
            scheduler.get_velocity(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, self.states, return_dict=False)[0]
        # reduced per sample first, as the example's SNR-weighted branch does: equal to its plain
        # F.mse_loss up to float rounding (~1e-7), and bit for bit what unipgen computes
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        subjects = len(self.images)
        loss = per_sample[:subjects].mean() + self.prior_weight * per_sample[subjects:].mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        return self.losses[-1]


# -- both, step by step --------------------------------------------------------------------------


@dataclass
class Round:
    """One training run per side: per-step seconds and losses."""

    ours_s: list[float]  # unipgen's steps 0..n-2 (its last step is not timeable)
    direct_s: list[float]  # the direct loop's steps 0..n-1
    ours_losses: list[float]
    direct_losses: list[float]


def interleaved_round(pipe: Any, direct: DirectLoop, *, steps: int, rank: int, learning_rate: float, seed: int,
                      resolution: int) -> Round:
    """`train_dreambooth_lora` for `steps` steps, the direct loop's step k run just before unipgen's step k.

    unipgen calls its `should_stop` hook before each step; the hook runs (and times) the direct step,
    then stamps its own exit. unipgen's step k lasts from the hook's exit before it to the next hook's
    entry, so its loop bookkeeping is counted. Its last step has no hook after it and is not timed.
    """
    direct_s: list[float] = []
    hooks: list[tuple[float, float]] = []  # (entry, exit) of each hook call

    def hook() -> bool:
        entry = time.perf_counter()
        direct.step()
        direct_s.append(time.perf_counter() - entry)
        hooks.append((entry, time.perf_counter()))
        return False

    result = train_dreambooth_lora(TINY_SD, direct.images, CLASS_NOUN, steps=steps, rank=rank,
                                   learning_rate=learning_rate, seed=seed, resolution=resolution,
                                   class_images=direct.class_images, token=TOKEN, should_stop=hook, pipeline=pipe)
    ours_s = [entry - exit_ for (_, exit_), (entry, _) in itertools.pairwise(hooks)]
    return Round(ours_s, direct_s, result.losses, direct.losses)


def bench_training_step(steps: int = 10, rounds: int = 3, warmup: int = 2, rank: int = 4,
                        learning_rate: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """unipgen's DreamBooth-LoRA step vs the direct loop's, alternating step by step.

    Each round trains `warmup + steps + 1` steps per side: the first `warmup` are not timed, nor is
    the last (unipgen has no hook after it). Times are medians over all rounds' timed steps;
    the ratio is the median over unipgen's timed steps of step k / the mean of the direct steps k and
    k+1 that bracket it (a slow patch of a shared machine hits both sides alike, and neither side
    always goes first). Losses are compared over every step of every round.
    """
    pipe = load_pipeline(TINY_SD)
    models = DirectModels.load(tiny_sd_dir())
    resolution = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    images, class_images = training_images(resolution)
    runs = []
    for _ in range(rounds):
        with DirectLoop(models, images, class_images, rank=rank, learning_rate=learning_rate, seed=seed,
                        resolution=resolution) as direct:
            runs.append(interleaved_round(pipe, direct, steps=warmup + steps + 1, rank=rank,
                                          learning_rate=learning_rate, seed=seed, resolution=resolution))
    ours_s = [t for run in runs for t in run.ours_s[warmup:]]
    direct_s = [t for run in runs for t in run.direct_s[warmup:-1]]
    brackets = [(a + b) / 2 for run in runs for a, b in itertools.pairwise(run.direct_s[warmup:])]
    ratio = statistics.median(a / b for a, b in zip(ours_s, brackets, strict=True))
    ours_losses = [x for run in runs for x in run.ours_losses]
    direct_losses = [x for run in runs for x in run.direct_losses]
    max_rel = max(abs(a - b) / abs(b) for a, b in zip(ours_losses, direct_losses, strict=True))
    ours_ms, direct_ms = statistics.median(ours_s), statistics.median(direct_s)
    return {"train_step_ms_unipgen": round(ours_ms * 1000, 2), "train_step_ms_direct": round(direct_ms * 1000, 2),
            "train_overhead_ratio": round(ratio, 3),
            "train_overhead_ratio_of_medians": round(ours_ms / direct_ms, 3),
            "train_losses_identical": ours_losses == direct_losses,
            "train_loss_max_rel_diff": float(f"{max_rel:.3g}"),
            "train_losses_unipgen": [round(x, 6) for x in runs[0].ours_losses],
            "train_settings": {
                "model": "tiny-random SD (UNet 32/64)", "resolution": resolution, "subject_images": len(images),
                "class_images": len(class_images), "prior_preservation": True, "prior_weight": 1.0,
                "lora_rank": rank, "lora_targets": LORA_TARGETS, "optimizer": "AdamW", "learning_rate": learning_rate,
                "seed": seed, "rounds": rounds, "warmup_steps": warmup, "timed_steps_per_round": steps,
                "batch": "all subject + class images every step",
                "timing": "steps alternate: direct k, unipgen k, direct k+1, ...; ratio = median over k of "
                          "unipgen k / mean(direct k, direct k+1)",
                "direct": "diffusers + peft, after examples/dreambooth/train_dreambooth_lora.py, prompts and "
                          "latents encoded once, no gradient clipping"}}
