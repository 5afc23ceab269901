"""Protecting photos from fine-tuning: an Anti-DreamBooth-style perturbation (misalign or ASPL).

Anti-DreamBooth (Van Le et al., ICCV 2023) adds a small, bounded perturbation to a person's
photos before they are published, chosen so that a DreamBooth model fine-tuned on them learns
the subject badly. ASPL (Alternating Surrogate and Perturbation Learning) finds it against a
*surrogate* DreamBooth model that is trained alongside: each round

1. a copy of the surrogate is fine-tuned for a few steps on the clean photos (it learns the
   subject as an attacker's model would),
2. the perturbation takes a few signed-gradient (PGD) steps that *raise* that copy's
   DreamBooth loss on the perturbed photos, kept within ±epsilon of the original pixels,
3. the surrogate itself is fine-tuned for a few steps on the perturbed photos (it follows what
   an attacker training on the published photos would do).

`misalign` (the default) keeps ASPL's surrogate, trained on the perturbed photos as an attacker
would, but aims the perturbation at what the attacker's fine-tune *learns*: each step lowers the
cosine between the surrogate's DreamBooth gradient on the perturbed photos and its gradient on the
clean ones (a second derivative through the UNet), so that the steps a fine-tune takes on the
published photos do not take it toward the real ones (gradient matching, as in data-poisoning
attacks, aimed against the clean gradient). ASPL raises the loss on the perturbed photos, which
on the tiny model moved a LoRA's fit of the real photos either way (`unipgen bench protect`:
docs/benchmarks.md has both).

Here the surrogate is a DreamBooth-LoRA of the profile's UNet (the attack unipgen's own trainer
makes, `image_training.train_dreambooth_lora`), not the paper's full fine-tune of UNet and text
encoder: cheaper, and the same family of attack. The perturbation lives on the photo at its own
size and goes through the trainer's preprocessing (shortest side resized to the model's
resolution, centre crop) inside the gradient, so a photo is protected as it is shared, not a
resized copy. Pixels are 8-bit levels: epsilon 4 bounds every channel's change to 4 levels,
which keeps the PSNR against the original at 36.1 dB or more (20·log10(255/4)), also after the
result is rounded to 8 bits and written as PNG (lossless: a JPEG would blur the perturbation).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, get_args

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.modalities.image_training import (
    default_resolution,
    denoise_loss,
    embed_prompt,
    load_pipeline,
    lora_config,
    lora_parameters,
    noise_scheduler,
)
from unipgen.modalities.seeding import output_generator
from unipgen.settings import ProtectMethod

if TYPE_CHECKING:
    import torch

_ADAPTER = "aspl-surrogate"
#: The perturbation searches `ProtectionBudget.method` names.
METHODS = get_args(ProtectMethod)


@dataclass(frozen=True)
class ProtectionBudget:
    """How much a photo may change and how hard ASPL searches (the paper's values in brackets).

    `epsilon` and `step_size` are in 8-bit levels (0-255). The paper's budget, 0.05 on pixels in
    [-1, 1], is 6.4 levels (PSNR about 32 dB); 4 keeps it at 36 dB or more.
    """

    epsilon: float = 4.0          # L-infinity bound per channel [6.4]
    step_size: float = 1.0        # PGD step [0.64]
    rounds: int = 10              # ASPL rounds [50]
    pgd_steps: int = 6            # perturbation steps per round [6]
    surrogate_steps: int = 3      # surrogate fine-tuning steps per phase [3]
    draws: int = 1                # noise and timestep draws per photo in each perturbation step [1]
    warmup_steps: int = 0         # surrogate fine-tuning on the clean photos before the rounds [0; FSMG: a full run]
    learning_rate: float = 1e-4   # the surrogate LoRA's (unipgen's DreamBooth-LoRA default; the paper's full fine-tune 5e-7)
    rank: int = 4                 # the surrogate LoRA's rank
    method: str = "misalign"      # or "aspl" [the paper's]: see the module docstring

    def check(self) -> None:
        """Refuse a budget that cannot run or would not protect."""
        if not 0 < self.epsilon <= 32 or not 0 < self.step_size <= self.epsilon:
            raise InvalidInputError(f"protection epsilon must be in (0, 32] levels and step_size in (0, epsilon]; "
                                    f"got epsilon {self.epsilon}, step_size {self.step_size}")
        if min(self.rounds, self.pgd_steps, self.draws) < 1 or min(self.surrogate_steps, self.warmup_steps) < 0 \
                or self.rank < 1:
            raise InvalidInputError("protection rounds, pgd_steps and draws must be at least 1, surrogate_steps at "
                                    "least 0")
        if self.method not in METHODS:
            raise InvalidInputError(f"protection method must be one of {', '.join(sorted(METHODS))}, not {self.method!r}")
        if self.learning_rate <= 0:
            raise InvalidInputError(f"protection learning_rate must be positive, not {self.learning_rate}")


@dataclass(frozen=True)
class ProtectedImage:
    """One protected photo: a PNG of the same size as the original, and how far it is from it."""

    data: bytes
    psnr: float          # dB against the original's pixels (inf when nothing changed)
    max_change: int      # the largest change of one channel, in levels


@dataclass(frozen=True)
class ProtectionResult:
    images: list[ProtectedImage]
    losses: list[float]  # per round: misalign's gradient cosine, or ASPL's loss on the protected photos (the last step's)
    rounds_done: int
    meta: dict[str, Any] = field(default_factory=dict)


def protect_images(ref: str, images: Sequence[bytes], class_noun: str, *,
                   budget: ProtectionBudget | None = None, seed: int = 0, token: str = "sks",
                   resolution: int | None = None, device: str = "cpu",
                   should_stop: Callable[[], bool] | None = None, pipeline: Any = None) -> ProtectionResult:
    """Protect `images` (photos of one subject of class `class_noun`) against DreamBooth on `ref`.

    `should_stop` is asked before each round (a job's cancellation): a stopped run returns the
    rounds done. `pipeline` works on an already loaded StableDiffusionPipeline (float32) instead
    of loading `ref`; its UNet is left as it was.
    """
    import torch

    budget = budget or ProtectionBudget()
    budget.check()
    if not images:
        raise InvalidInputError("protection needs at least one photo")
    originals = [_rgb(data, position) for position, data in enumerate(images)]
    pipe = pipeline if pipeline is not None else load_pipeline(ref)
    pipe.to(device)
    resolution = resolution or default_resolution(pipe)
    torch.manual_seed(seed)  # the surrogate LoRA's initial weights
    pipe.unet.add_adapter(lora_config(budget.rank), adapter_name=_ADAPTER)
    try:
        search = _Search(pipe, originals, f"a photo of {token} {class_noun}", resolution, budget, seed, device)
        rounds_done = search.run(should_stop)
    finally:
        pipe.unet.delete_adapters(_ADAPTER)
        pipe.unet.requires_grad_(False)
        pipe.unet.eval()
    protected = [_png(original, search.spread(delta, original)) for original, delta in zip(originals, search.deltas)]
    meta = {"method": budget.method, "base": ref, "prompt": search.prompt, "resolution": resolution, "seed": seed,
            "budget": asdict(budget), "rounds_done": rounds_done}
    return ProtectionResult(protected, search.losses, rounds_done, meta)


class _Search:
    """The ASPL state: one perturbation per photo, on the model's pixel grid over the part of the
    photo the trainer sees (its centre square), and the surrogate LoRA on the pipeline's UNet."""

    def __init__(self, pipe: Any, originals: list[torch.Tensor], prompt: str, resolution: int,
                 budget: ProtectionBudget, seed: int, device: str) -> None:
        import torch

        self.pipe, self.prompt, self.resolution, self.budget, self.seed = pipe, prompt, resolution, budget, seed
        self.originals = [image.to(device) for image in originals]  # (3, H, W) in [0, 1]
        self.deltas = [torch.zeros((3, resolution, resolution), device=device) for _ in self.originals]
        self.scheduler = noise_scheduler(pipe)
        self.states = embed_prompt(pipe, prompt, len(originals))
        self.params = lora_parameters(pipe.unet, _ADAPTER)
        self.optimizer = torch.optim.AdamW(self.params, lr=budget.learning_rate)
        with torch.no_grad():
            self.clean = self.encode(self.originals, 0)
        self.losses: list[float] = []
        self.draws = 0  # each loss evaluation draws its noise from (seed, draws): reruns are identical

    def run(self, should_stop: Callable[[], bool] | None) -> int:
        import torch

        self.pipe.unet.train()
        self.fit(self.clean, self.optimizer, self.budget.warmup_steps)  # the surrogate starts as the attacker's would
        for done in range(self.budget.rounds):
            if should_stop is not None and should_stop():
                return done
            if self.budget.method == "misalign":
                self.losses.append(self.misalign())
                self.fit(self.encode(self.perturbed(), 0).detach(), self.optimizer)
                continue
            before = [param.detach().clone() for param in self.params]
            self.fit(self.clean, torch.optim.AdamW(self.params, lr=self.budget.learning_rate))  # the surrogate copy
            self.losses.append(self.attack())
            with torch.no_grad():  # back to the surrogate, which then learns the perturbed photos
                for param, value in zip(self.params, before):
                    param.copy_(value)
            self.fit(self.encode(self.perturbed(), 1 + done).detach(), self.optimizer)
        return self.budget.rounds

    def perturbed(self) -> list[torch.Tensor]:
        return [(image + self.spread(delta, image)).clamp(0.0, 1.0) for image, delta in zip(self.originals, self.deltas)]

    @staticmethod
    def spread(delta: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The grid's perturbation over the photo: each cell a block of pixels (nearest) across
        the centre square the trainer crops, zero outside it. Blocks survive the trainer's
        downscale whole, where a pixel-level pattern would be averaged away."""
        import torch.nn.functional as F

        height, width = image.shape[1:]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        cells = F.interpolate(delta[None], size=(side, side), mode="nearest")[0]
        return F.pad(cells, (left, width - side - left, top, height - side - top))

    def encode(self, images: list[torch.Tensor], draw: int) -> torch.Tensor:
        """Scaled VAE latents of the photos as the trainer prepares them (differentiable)."""
        import torch

        batch = torch.stack([_prepare(image, self.resolution) for image in images])
        dist = self.pipe.vae.encode(batch).latent_dist
        generator = output_generator(self.seed, 10_000_000 + draw)
        noise = torch.randn(dist.mean.shape, generator=generator).to(batch.device)
        return (dist.mean + dist.std * noise) * self.pipe.vae.config.scaling_factor

    def loss(self, latents: torch.Tensor, draws: int = 1) -> torch.Tensor:
        """The DreamBooth loss on `latents`, averaged over `draws` noise and timestep draws each."""
        self.draws += 1
        return denoise_loss(self.pipe, self.scheduler, latents.repeat(draws, 1, 1, 1), self.states.repeat(draws, 1, 1),
                            output_generator(self.seed, self.draws)).mean()

    def fit(self, latents: torch.Tensor, optimizer: torch.optim.Optimizer, steps: int | None = None) -> None:
        """`steps` (default `surrogate_steps`) DreamBooth-LoRA steps on `latents`."""
        for _ in range(self.budget.surrogate_steps if steps is None else steps):
            loss = self.loss(latents)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def attack(self) -> float:
        """`pgd_steps` signed-gradient steps that raise the surrogate's loss; returns the last loss."""
        import torch

        self.pipe.unet.requires_grad_(False)
        value = 0.0
        try:
            for index in range(self.budget.pgd_steps):
                for delta in self.deltas:
                    delta.requires_grad_(True)
                loss = self.loss(self.encode(self.perturbed(), 1_000_000 + index), self.budget.draws)
                grads = torch.autograd.grad(loss, self.deltas)
                value = float(loss.detach())
                self.step(grads, 1.0)
        finally:
            for param in self.params:
                param.requires_grad_(True)
        return value

    def misalign(self) -> float:
        """`pgd_steps` signed-gradient steps that turn the surrogate's training gradient on the
        perturbed photos against its gradient on the clean ones (their cosine, returned, falls):
        a fine-tune that follows them moves away from the real photos. The clean gradient is
        taken once a round, over 4 x `draws` draws of noise and timestep; each step draws
        `draws`. Both sets of latents take the VAE's same sampling noise (draw 0)."""
        import torch
        from torch.nn.attention import SDPBackend, sdpa_kernel

        target = torch.autograd.grad(self.loss(self.clean, 4 * self.budget.draws), self.params)
        target_norm = torch.sqrt(_dot(target, target))
        value = 0.0
        for _ in range(self.budget.pgd_steps):
            for delta in self.deltas:
                delta.requires_grad_(True)
            with sdpa_kernel(SDPBackend.MATH):  # the only attention kernel with a second derivative on every device
                grads = torch.autograd.grad(self.loss(self.encode(self.perturbed(), 0), self.budget.draws),
                                            self.params, create_graph=True)
                cosine = _dot(grads, target) / (torch.sqrt(_dot(grads, grads)) * target_norm + 1e-12)
                moves = torch.autograd.grad(cosine, self.deltas)
            value = float(cosine.detach())
            self.step(moves, -1.0)
        return value

    def step(self, grads: Sequence[torch.Tensor], direction: float) -> None:
        """One signed-gradient step of `step_size` up (`direction` 1) or down (-1) the objective
        whose gradients are `grads`, each perturbation kept within ±epsilon."""
        import torch

        epsilon, step = self.budget.epsilon / 255.0, self.budget.step_size / 255.0
        with torch.no_grad():
            self.deltas = [(delta + direction * step * grad.sign()).clamp(-epsilon, epsilon).detach()
                           for delta, grad in zip(self.deltas, grads)]


def _dot(first: Sequence[torch.Tensor], second: Sequence[torch.Tensor]) -> torch.Tensor:
    """The dot product of two gradients given as lists of parameter tensors."""
    import torch

    return sum(((one * other).sum() for one, other in zip(first, second)), torch.zeros(()))


def _prepare(image: torch.Tensor, resolution: int) -> torch.Tensor:
    """`image_training.pixels` in torch (so gradients pass): the shortest side resized to
    `resolution` (bicubic, antialiased as PIL does), the centre cropped, scaled to [-1, 1]."""
    import torch.nn.functional as F

    height, width = image.shape[1:]
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    resized = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return resized[:, top:top + resolution, left:left + resolution] * 2.0 - 1.0


def _rgb(data: bytes, position: int) -> torch.Tensor:
    """A photo as a (3, H, W) float tensor in [0, 1], upright (EXIF orientation applied)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UnsupportedMediaError(f"photo {position} to protect is not an image: {exc}") from exc
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _png(original: torch.Tensor, delta: torch.Tensor) -> ProtectedImage:
    """The protected photo as PNG bytes, with its PSNR and largest change against the original."""
    import numpy as np
    from PIL import Image

    before = (original.detach().cpu().numpy() * 255.0).round().astype(np.int16)
    after = ((original + delta).clamp(0.0, 1.0).detach().cpu().numpy() * 255.0).round().astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(after.transpose(1, 2, 0).astype(np.uint8)).save(buffer, format="PNG")
    return ProtectedImage(buffer.getvalue(), psnr(before, after), int(np.abs(after - before).max()))


def psnr(first: Any, second: Any) -> float:
    """Peak signal-to-noise ratio of two 8-bit images (arrays of the same shape), in dB."""
    import numpy as np

    mse = float(np.mean((np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


__all__ = ["ProtectedImage", "ProtectionBudget", "ProtectionResult", "protect_images", "psnr"]
