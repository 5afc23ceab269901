"""The tiny model with learned weights that `bench protect` attacks on the tiny profile.

The tiny profile's Stable Diffusion has random weights, and its random VAE makes the protection
benchmark meaningless: the posterior is as wide as a fresh VAE's (std 1.06) against latent means
of std 0.24, so a training latent is mostly the VAE's own sampling noise, drawn from the same
seed for clean and protected photos alike; a 4-level change of the pixels moves the rest by next
to nothing (measured: loss gaps within ±1e-4 whatever the budget). Here the same tiny
architecture is pre-trained briefly on photos of DreamBench subjects the benchmark does not
evaluate, as a real model is pre-trained on other images than the victim's:

1. the VAE (reconstruction MSE + 1e-6 KL, as Stable Diffusion's; its posterior starts narrow,
   log-variance -6, as a trained VAE's is), then its latents scaled to unit std (the rule that
   gave SD its 0.18215);
2. the whole UNet on the denoising loss under "a photo of <class>".

The folder is built once per (photos, steps, seed) and cached beside the other tiny models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: (VAE steps, UNet steps) of the pre-training, each with batch 8 at lr 2e-3 / 1e-3.
PRETRAIN_STEPS = (150, 200)
_VERSION = "1"
_BATCH = 8


def pretrained_tiny_sd(photos: list[tuple[bytes, str]], steps: tuple[int, int] = PRETRAIN_STEPS,
                       seed: int = 0) -> Path:
    """The folder of the tiny SD pre-trained on `photos` ((image, class noun) pairs)."""
    from unipgen.modalities.checkpoints import digests, fingerprint
    from unipgen.tiny import build_atomically, tiny_cache_dir

    shas = digests(data for data, _ in photos)
    key = fingerprint(version=_VERSION, photos=sorted(sha + noun for sha, (_, noun) in zip(shas, photos)), steps=steps,
                      seed=seed)
    directory = tiny_cache_dir(f"sd-pretrained-{key[:16]}")
    if not (directory / "model_index.json").is_file():
        build_atomically(directory, lambda scratch: _build(scratch, photos, steps, seed))
    return directory


def _build(directory: Path, photos: list[tuple[bytes, str]], steps: tuple[int, int], seed: int) -> None:
    import torch

    from unipgen.modalities.image import TINY_SD
    from unipgen.modalities.image_training import default_resolution, load_pipeline, pixels

    pipe = load_pipeline(TINY_SD)
    resolution = default_resolution(pipe)
    images = torch.stack([pixels(data, resolution) for data, _ in photos])
    images = torch.cat([images, images.flip(-1)])  # mirrored copies: twice the photos
    nouns = [noun for _, noun in photos] * 2
    generator = torch.Generator().manual_seed(seed)
    _fit_vae(pipe.vae, images, steps[0], generator)
    _fit_unet(pipe, images, nouns, steps[1], generator, seed)
    pipe.save_pretrained(directory)


def _fit_vae(vae: Any, images: Any, steps: int, generator: Any) -> None:
    import torch

    with torch.no_grad():  # a narrow posterior from the start: the log-variance half of the moments
        half = vae.quant_conv.weight.shape[0] // 2
        vae.quant_conv.weight[half:] = 0.0
        vae.quant_conv.bias[half:] = -6.0
    vae.train()
    vae.requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    for _ in range(steps):
        batch = images[torch.randint(0, len(images), (_BATCH,), generator=generator)]
        dist = vae.encode(batch).latent_dist
        latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=generator)
        loss = ((vae.decode(latents).sample - batch) ** 2).mean() + 1e-6 * dist.kl().mean() / dist.mean[0].numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():
        vae.register_to_config(scaling_factor=float(1.0 / vae.encode(images).latent_dist.mean.std()))


def _fit_unet(pipe: Any, images: Any, nouns: list[str], steps: int, generator: Any, seed: int) -> None:
    import torch

    from unipgen.modalities.image_training import denoise_loss, embed_prompt, noise_scheduler
    from unipgen.modalities.seeding import output_generator

    vae, unet = pipe.vae, pipe.unet
    prompts = {noun: embed_prompt(pipe, f"a photo of {noun}", 1) for noun in set(nouns)}
    states = torch.cat([prompts[noun] for noun in nouns])
    scheduler = noise_scheduler(pipe)
    unet.train()
    unet.requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    for step in range(steps):
        chosen = torch.randint(0, len(images), (_BATCH,), generator=generator)
        with torch.no_grad():
            latents = vae.encode(images[chosen]).latent_dist.sample(generator=generator) * vae.config.scaling_factor
        loss = denoise_loss(pipe, scheduler, latents, states[chosen], output_generator(seed + 1, step)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    unet.eval()
    unet.requires_grad_(False)


__all__ = ["PRETRAIN_STEPS", "pretrained_tiny_sd"]
