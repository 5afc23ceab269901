"""Training per-user image adapters: DreamBooth-LoRA on the UNet and textual inversion.

Both trainers follow diffusers' example scripts (train_dreambooth_lora.py,
textual_inversion.py), cut down to what a CPU service needs: latents and prompt embeddings
are computed once, each step draws its noise and timesteps from a generator seeded by
(seed, step) so that a run cut short and resumed from a checkpoint gives exactly the same
losses and bytes as a run never interrupted.

The outputs load where `DiffusersImageBackend` loads them, and in plain diffusers:
a LoRA is the `pytorch_lora_weights.safetensors` that `save_lora_weights` writes, an
embedding is a safetensors file `{token: vector}` for `load_textual_inversion`.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.modalities.checkpoints import (
    Checkpoint,
    TrainingLoop,
    digests,
    fingerprint,
    load_checkpoint,
    lora_checkpoint,
    resume_lora,
)
from unipgen.modalities.image import LORA_WEIGHT_NAME, TINY_SD, tiny_sd_dir
from unipgen.modalities.seeding import output_generator

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig

_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
_ADAPTER_NAME = "dreambooth"
_CLASS_IMAGES_FILE = "class_images.json"  # generated class images, kept so a resume need not redraw them


@dataclass(frozen=True)
class TrainedImageAdapter:
    """A trained image adapter: bytes to store as a blob, per-step losses, and how it was made."""

    data: bytes
    losses: list[float]
    steps_done: int
    prompt: str  # the prompt that calls up what was learned
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- shared pieces


def load_pipeline(ref: str) -> Any:
    """A float32 StableDiffusionPipeline for `ref` ("tiny-random" builds the tiny one offline)."""
    import torch
    from diffusers import StableDiffusionPipeline

    source = str(tiny_sd_dir()) if ref == TINY_SD else ref
    pipe = StableDiffusionPipeline.from_pretrained(source, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default_resolution(pipe: Any) -> int:
    """The UNet's native image size in pixels (latent size × VAE downscale)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def pixels(data: bytes, resolution: int) -> torch.Tensor:
    """One image as a (3, res, res) tensor in [-1, 1]: shortest side resized, then centre-cropped."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UnsupportedMediaError(f"training image is not an image: {exc}") from exc
    scale = resolution / min(image.size)
    image = image.resize((max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale))),
                         Image.Resampling.BICUBIC)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def encode_latents(pipe: Any, images: Sequence[bytes], resolution: int, seed: int) -> torch.Tensor:
    """Scaled VAE latents of `images`, sampled once with a seeded generator (the VAE is frozen)."""
    import torch

    batch = torch.stack([pixels(data, resolution) for data in images]).to(pipe.vae.device)
    with torch.no_grad():
        dist = pipe.vae.encode(batch).latent_dist
        return dist.sample(generator=torch.Generator().manual_seed(seed)) * pipe.vae.config.scaling_factor


def embed_prompt(pipe: Any, prompt: str, count: int) -> torch.Tensor:
    """Text-encoder hidden states of `prompt`, repeated `count` times (no grad: encoder frozen)."""
    import torch

    with torch.no_grad():
        return pipe.text_encoder(_token_ids(pipe, prompt).to(pipe.text_encoder.device))[0].repeat(count, 1, 1)


def _token_ids(pipe: Any, prompt: str) -> torch.Tensor:
    """Token ids of `prompt`, padded to the tokenizer's max length as the pipeline does."""
    tokenizer = pipe.tokenizer
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def noise_scheduler(pipe: Any) -> Any:
    """A DDPM scheduler with the pipeline's noise schedule: training adds noise, it never samples."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def denoise_loss(pipe: Any, scheduler: Any, latents: torch.Tensor, states: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
    """Per-sample MSE of the UNet's prediction (noise or velocity) on noised `latents`."""
    import torch

    noise = torch.randn(latents.shape, generator=generator).to(latents.device)  # drawn on the CPU: same on any device
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=generator).to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    prediction = pipe.unet(noisy, timesteps, states).sample
    return ((prediction.float() - target.float()) ** 2).mean(dim=(1, 2, 3))


# ---------------------------------------------------------------- DreamBooth-LoRA


def train_dreambooth_lora(ref: str, images: Sequence[bytes], class_noun: str, *, steps: int = 50, rank: int = 4,
                          learning_rate: float = 1e-4, seed: int = 0, resolution: int | None = None,
                          prior_preservation: bool = True, prior_weight: float = 1.0, num_class_images: int = 4,
                          class_images: Sequence[bytes] | None = None, token: str = "sks",
                          checkpoint_dir: Path | None = None, checkpoint_every: int = 10,
                          should_stop: Callable[[], bool] | None = None, progress: bool = False,
                          class_image_steps: int = 20, pipeline: Any = None) -> TrainedImageAdapter:
    """Fit a LoRA on the UNet's attention so "a photo of {token} {class_noun}" draws the user's subject.

    With prior preservation, images of the plain class (generated by the base pipeline, seeded,
    unless `class_images` are given) are trained on too, under "a photo of {class_noun}", so the
    class itself does not drift. `pipeline` trains on an already loaded StableDiffusionPipeline
    instead of loading `ref`; its UNet is left as it was (the adapter is deleted afterwards).
    """
    import torch

    if not images:
        raise InvalidInputError("train_dreambooth_lora needs at least one reference image")
    pipe = pipeline if pipeline is not None else load_pipeline(ref)
    resolution = resolution or default_resolution(pipe)
    instance_prompt, class_prompt = f"a photo of {token} {class_noun}", f"a photo of {class_noun}"
    digest = fingerprint(kind="dreambooth-lora", ref=ref, images=digests(images), class_noun=class_noun,
                               rank=rank, lr=learning_rate, seed=seed, resolution=resolution, token=token,
                               prior=prior_preservation, prior_weight=prior_weight, num_class=num_class_images,
                               class_images=digests(class_images or []), class_steps=class_image_steps)
    classes: list[bytes] = []
    if prior_preservation:
        classes = list(class_images) if class_images else draw_class_images(
            pipe, class_prompt, num_class_images, resolution, seed, class_image_steps, checkpoint_dir)
    torch.manual_seed(seed)  # the LoRA's initial weights
    pipe.unet.add_adapter(lora_config(rank), adapter_name=_ADAPTER_NAME)
    try:
        return _fit_lora(pipe, images, classes, instance_prompt, class_prompt, steps=steps,
                         learning_rate=learning_rate, seed=seed, resolution=resolution, prior_weight=prior_weight,
                         fingerprint=digest,
                         loop=TrainingLoop(steps, checkpoint_dir, checkpoint_every, should_stop, progress,
                                           "dreambooth-lora"),
                         meta={"method": "lora", "base": ref, "token": token, "class_noun": class_noun, "rank": rank,
                               "resolution": resolution, "prior_preservation": prior_preservation,
                               "num_class_images": len(classes), "class_prompt": class_prompt, "seed": seed})
    finally:
        pipe.unet.delete_adapters(_ADAPTER_NAME)  # leave a caller's pipeline as it was


def lora_config(rank: int) -> LoraConfig:
    """The LoRA of diffusers' DreamBooth script: attention projections, Gaussian-initialised A."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=_LORA_TARGETS)


def draw_class_images(pipe: Any, prompt: str, count: int, resolution: int, seed: int, steps: int = 20,
                      checkpoint_dir: Path | None = None) -> list[bytes]:
    """`count` PNGs of the plain class drawn by the base pipeline (reused from a checkpoint folder)."""
    import base64

    import torch

    saved = checkpoint_dir / _CLASS_IMAGES_FILE if checkpoint_dir is not None else None
    if saved is not None and saved.is_file():
        return [base64.b64decode(text) for text in json.loads(saved.read_text())]
    generators = [torch.Generator().manual_seed(seed + index) for index in range(count)]
    with torch.no_grad():
        drawn = pipe(prompt=[prompt] * count, num_inference_steps=steps, height=resolution, width=resolution,
                     generator=generators, output_type="pil").images
    pngs = []
    for image in drawn:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps([base64.b64encode(data).decode() for data in pngs]))
    return pngs


def lora_parameters(unet: Any, adapter: str = _ADAPTER_NAME) -> list[torch.nn.Parameter]:
    """The trainable parameters of the UNet's LoRA `adapter` (everything else stays frozen)."""
    unet.requires_grad_(False)
    params = [param for name, param in unet.named_parameters() if "lora_" in name and adapter in name]
    for param in params:
        param.requires_grad_(True)
    return params


def _fit_lora(pipe: Any, images: Sequence[bytes], classes: list[bytes], instance_prompt: str, class_prompt: str, *,
              steps: int, learning_rate: float, seed: int, resolution: int, prior_weight: float, fingerprint: str,
              loop: TrainingLoop, meta: dict[str, Any]) -> TrainedImageAdapter:
    """The DreamBooth-LoRA step loop, resumed from `loop.checkpoint_dir` when it holds a checkpoint."""
    import torch

    unet = pipe.unet
    params = lora_parameters(unet)
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    latents = encode_latents(pipe, images, resolution, seed)
    states = embed_prompt(pipe, instance_prompt, len(images))
    if classes:
        latents = torch.cat([latents, encode_latents(pipe, classes, resolution, seed + 1)])
        states = torch.cat([states, embed_prompt(pipe, class_prompt, len(classes))])
    scheduler = noise_scheduler(pipe)
    start, losses = resume_lora(unet, _ADAPTER_NAME, optimizer, loop.checkpoint_dir, fingerprint)
    count = len(images)

    def step_fn(step: int) -> float:  # each step's noise depends on (seed, step) only: resumes draw the same
        per_sample = denoise_loss(pipe, scheduler, latents, states, output_generator(seed, step))
        loss = per_sample[:count].mean()
        if classes:  # the prior term: keep drawing the plain class as the base model did
            loss = loss + prior_weight * per_sample[count:].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def snapshot(step: int, done: list[float]) -> Checkpoint:
        return lora_checkpoint(unet, _ADAPTER_NAME, optimizer, step, done, fingerprint)

    unet.train()
    try:
        done = loop.run(start, losses, step_fn, snapshot)
    finally:
        unet.eval()
        unet.requires_grad_(False)
    meta = {**meta, "steps": steps, "steps_done": done, "resumed_from": start}
    return TrainedImageAdapter(data=_lora_bytes(unet), losses=losses, steps_done=done, prompt=instance_prompt,
                               meta=meta)


def _lora_bytes(unet: Any) -> bytes:
    """The adapter as `pytorch_lora_weights.safetensors`, written by `save_lora_weights`."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=_ADAPTER_NAME))
    with tempfile.TemporaryDirectory() as directory:
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers)
        return (Path(directory) / LORA_WEIGHT_NAME).read_bytes()


# ---------------------------------------------------------------- textual inversion


def train_textual_inversion(ref: str, images: Sequence[bytes], *, token: str = "<sks>", initializer: str = "object",
                            steps: int = 50, learning_rate: float = 5e-3, seed: int = 0, resolution: int | None = None,
                            checkpoint_dir: Path | None = None, checkpoint_every: int = 10,
                            should_stop: Callable[[], bool] | None = None, progress: bool = False,
                            pipeline: Any = None) -> TrainedImageAdapter:
    """Learn one new token's embedding so "a photo of {token}" draws the user's subject.

    Only that embedding row is trained (the other rows are restored after every step); the UNet,
    VAE and the rest of the text encoder are frozen. `pipeline` trains on an already loaded
    StableDiffusionPipeline instead of loading `ref`: the learned token is left added to it.
    """
    if not images:
        raise InvalidInputError("train_textual_inversion needs at least one reference image")
    pipe = pipeline if pipeline is not None else load_pipeline(ref)
    resolution = resolution or default_resolution(pipe)
    digest = fingerprint(kind="textual-inversion", ref=ref, images=digests(images), token=token,
                               initializer=initializer, lr=learning_rate, seed=seed, resolution=resolution)
    token_id = _add_token(pipe, token, initializer)
    loop = TrainingLoop(steps, checkpoint_dir, checkpoint_every, should_stop, progress, "textual-inversion")
    return _fit_token(pipe, images, token, token_id, learning_rate=learning_rate, seed=seed, resolution=resolution,
                      fingerprint=digest, loop=loop,
                      meta={"method": "textual_inversion", "base": ref, "token": token, "initializer": initializer,
                            "resolution": resolution, "seed": seed, "steps": steps})


def _add_token(pipe: Any, token: str, initializer: str) -> int:
    """Add `token` to the tokenizer and text encoder, its row starting as `initializer`'s embedding."""
    import torch

    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    if tokenizer.add_tokens([token]) != 1:
        raise InvalidInputError(f"token {token!r} is already in the tokenizer: pick a new one")
    # The initializer may be several sub-words in a small vocabulary: start from their mean.
    init_ids = tokenizer(initializer, add_special_tokens=False).input_ids
    if not init_ids:
        raise InvalidInputError(f"initializer {initializer!r} has no tokens")
    encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # row set below
    token_id = tokenizer.convert_tokens_to_ids(token)
    weight = encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_ids].mean(dim=0)
    return int(token_id)


def _fit_token(pipe: Any, images: Sequence[bytes], token: str, token_id: int, *, learning_rate: float, seed: int,
               resolution: int, fingerprint: str, loop: TrainingLoop, meta: dict[str, Any]) -> TrainedImageAdapter:
    """The textual-inversion step loop: gradients reach only the new token's embedding row."""
    import torch
    from safetensors.torch import save

    encoder, prompt = pipe.text_encoder, f"a photo of {token}"
    encoder.requires_grad_(False)
    table = encoder.get_input_embeddings().weight
    table.requires_grad_(True)
    frozen = table.detach().clone()  # restored after each step: only the new row may move
    keep = torch.ones(table.shape[0], dtype=torch.bool)
    keep[token_id] = False
    optimizer = torch.optim.AdamW([table], lr=learning_rate, weight_decay=0.0)
    latents = encode_latents(pipe, images, resolution, seed)
    ids = _token_ids(pipe, prompt).repeat(len(images), 1)
    scheduler = noise_scheduler(pipe)
    start = 0
    losses: list[float] = []
    checkpoint = load_checkpoint(loop.checkpoint_dir, fingerprint)
    if checkpoint is not None:
        with torch.no_grad():
            table[token_id] = checkpoint.weights["embedding"]
        start, losses = checkpoint.restore(optimizer)

    def step_fn(step: int) -> float:
        states = encoder(ids)[0]
        loss = denoise_loss(pipe, scheduler, latents, states, output_generator(seed, step)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            table[keep] = frozen[keep]
        return float(loss.detach())

    def snapshot(step: int, done: list[float]) -> Checkpoint:
        weights = {"embedding": table[token_id].detach().clone()}
        return Checkpoint(step, weights, optimizer.state_dict(), list(done), torch.get_rng_state(), fingerprint)

    try:
        done = loop.run(start, losses, step_fn, snapshot)
    finally:
        table.requires_grad_(False)
    data = save({token: table[token_id].detach().clone().contiguous()})
    return TrainedImageAdapter(data=data, losses=losses, steps_done=done, prompt=prompt,
                               meta={**meta, "steps_done": done, "resumed_from": start})


__all__ = ["TrainedImageAdapter", "default_resolution", "denoise_loss", "draw_class_images", "embed_prompt", "encode_latents", "load_pipeline",
           "lora_config", "lora_parameters", "noise_scheduler", "pixels", "train_dreambooth_lora", "train_textual_inversion"]
