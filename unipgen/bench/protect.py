"""`unipgen bench protect`: does protecting a subject's photos (Anti-DreamBooth-style: misalign
or ASPL) keep a DreamBooth-LoRA trained on them from learning the subject?

For each DreamBench subject (its first `photos` photos), on the profile's image model:

1. the photos are protected with the settings' budget (`UNIPGEN_PROTECT_*`, as a protection job
   does, `UNIPGEN_PROTECT_METHOD` choosing the search), and their PSNR against the originals is measured;
2. a *control* gets random noise of the same epsilon: a random sign per channel on the model's
   pixel grid, spread over the photo (so it survives the trainer's resize, as the protection
   does) — a larger change than the protection's (lower PSNR), to tell the protection's effect
   from that of any noise;
3. a DreamBooth-LoRA (unipgen's trainer, prior preservation with the same class images for all)
   is trained from the same seed on the clean photos, on the control and on the protected photos;
4. each LoRA's denoising loss (DreamBooth's training loss) is measured on the *clean* photos
   under the instance prompt, over the same fixed draws of noise and timestep, as is the base
   model's.

`gap` = loss(protected-trained) − loss(clean-trained): above 0, the protection kept the LoRA from
fitting the real photos; `control_gap` the same for the noise; `undone` = gap / (base − clean):
the share of what the LoRA learned about the real photos that the protection took away.

On the tiny profile the model attacked is not the random one but the same tiny architecture
pre-trained briefly on the photos of the DreamBench subjects not evaluated (`protect_model`): a
random VAE's latents are mostly its own sampling noise, and no perturbation of the pixels
changes what a LoRA learns from them. The surrogate that ASPL trains learns at the attacker's
rate (the paper trains both alike). `loss_low_t` is the same loss over the draws with timestep
below 250, where the image, not the noise, decides the loss (a secondary figure).

The same harness runs on real weights with `--profile cpu` or `gpu` (the profile's image model,
as it is, and device); the attacker's steps and learning rate then default to a real
DreamBooth-LoRA's (400, 1e-4) instead of the tiny model's (200, 1e-3).

    unipgen bench protect [--data DREAMBENCH] [--profile tiny] [--subjects 4] [--quick] --json
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.eval.environment import machine, shared_data_dir

#: The attacker's (steps, learning rate): on the tiny (pre-trained) model, and on real weights.
TINY_ATTACK = (200, 1e-3)
#: Timesteps below this make `loss_low_t`.
LOW_T = 250
REAL_ATTACK = (400, 1e-4)


def run(data_dir: str | Path | None = None, profile: str = "tiny", quick: bool = False, subjects: int | None = None,
        photos: int = 4, attack_steps: int | None = None, attack_lr: float | None = None, draws: int = 32,
        seed: int = 0, pretrain: bool = True) -> dict[str, Any]:
    """Clean vs noise vs protected photos, per subject; quick: 1 subject, 2 photos, 1 round, a 2-step attack
    (and a 2-step pre-training). `pretrain` (tiny profile only): attack the pre-trained tiny model."""
    import torch

    from unipgen.bench.protect_model import PRETRAIN_STEPS, pretrained_tiny_sd
    from unipgen.errors import InvalidInputError
    from unipgen.eval.dreambench import pick_subjects, reference_images
    from unipgen.memory.loaders import dreambench_classes
    from unipgen.modalities.image_protect import ProtectionBudget
    from unipgen.modalities.image_training import load_pipeline
    from unipgen.schema.profiles import load_profile
    from unipgen.settings import Settings

    torch.set_num_threads(1)
    root = Path(data_dir) if data_dir else shared_data_dir() / "dreambench"
    classes = dreambench_classes(root)
    chosen = pick_subjects(root, classes, subjects or (1 if quick else 4))
    backend = load_profile(profile).backends["image"]
    ref, device = backend.ref or "tiny-random", str(backend.options.get("device", "cpu"))
    tiny = ref == "tiny-random"
    steps, lr = TINY_ATTACK if tiny else REAL_ATTACK
    steps, lr = attack_steps or (2 if quick else steps), attack_lr or lr
    settings = Settings()  # the budget a protection job uses, its surrogate learning like the attacker
    budget = ProtectionBudget(epsilon=settings.protect_epsilon, step_size=settings.protect_step_size,
                              rounds=1 if quick else settings.protect_rounds, pgd_steps=settings.protect_pgd_steps,
                              surrogate_steps=settings.protect_surrogate_steps, learning_rate=lr,
                              method=settings.protect_method)
    model: dict[str, Any] = {"ref": ref, "pretrained": None}
    if tiny and pretrain:
        present = pick_subjects(root, classes, None)  # held out: the default 4 (the same model for any --subjects)
        held = set(chosen) | set(pick_subjects(root, classes, max(4, len(chosen))))
        others = [name for name in present if name not in held] or [name for name in present if name not in chosen]
        corpus = [(photo, classes[name]) for name in others for photo in reference_images(root / name)]
        if not corpus:
            raise InvalidInputError(f"{root}: no subject left beside those evaluated to pre-train the tiny model on")
        pre_steps = (2, 2) if quick else PRETRAIN_STEPS
        begun = time.perf_counter()
        ref = str(pretrained_tiny_sd(corpus, pre_steps, seed))
        model["pretrained"] = {"subjects": others, "photos": len(corpus), "vae_steps": pre_steps[0],
                               "unet_steps": pre_steps[1], "seconds": round(time.perf_counter() - begun, 1)}
    pipe = load_pipeline(ref).to(device)
    bench = _Bench(pipe, ref, device, budget, steps, lr, 2 if quick else draws, seed)
    per_subject = {name: bench.subject(reference_images(root / name)[: 2 if quick else photos], classes[name])
                   for name in chosen}
    return {"benchmark": "protect", "date": datetime.now(UTC).date().isoformat(), "profile": profile,
            "model": "tiny-pretrained" if model["pretrained"] else model["ref"], "pretraining": model["pretrained"],
            "device": device, "quick": quick, "budget": asdict(budget),
            "attack": {"method": "dreambooth-lora", "steps": steps, "learning_rate": lr, "rank": 4,
                       "prior_preservation": True, "seed": seed},
            "draws": bench.draws, "subjects": per_subject, "summary": _summary(per_subject),
            "machine": machine("torch", "diffusers")}


class _Bench:
    """One pipeline, protection budget and attack, measured subject by subject."""

    def __init__(self, pipe: Any, ref: str, device: str, budget: Any, steps: int, lr: float, draws: int,
                 seed: int) -> None:
        from unipgen.modalities.image_training import default_resolution

        self.pipe, self.ref, self.device, self.budget = pipe, ref, device, budget
        self.steps, self.lr, self.draws, self.seed = steps, lr, draws, seed
        self.resolution = default_resolution(pipe)

    def subject(self, photos: list[bytes], noun: str) -> dict[str, Any]:
        from unipgen.modalities.image_protect import protect_images
        from unipgen.modalities.image_training import draw_class_images

        begun = time.perf_counter()
        protected = protect_images(self.ref, photos, noun, budget=self.budget, seed=self.seed, device=self.device,
                                   pipeline=self.pipe)
        seconds = time.perf_counter() - begun
        control = [_noise(photo, self.budget.epsilon, self.resolution, self.seed + n) for n, photo in enumerate(photos)]
        classes = draw_class_images(self.pipe, f"a photo of {noun}", 4, self.resolution, self.seed)
        loss, low = {}, {}
        loss["base"], low["base"] = self.loss(None, photos, noun)
        for arm, images in (("clean", photos), ("control", [c[0] for c in control]),
                            ("protected", [p.data for p in protected.images])):
            loss[arm], low[arm] = self.loss(self.train(images, noun, classes), photos, noun)
        gain = loss["base"] - loss["clean"]
        psnrs = [p.psnr for p in protected.images]
        return {"class": noun, "photos": len(photos), "protect_seconds": round(seconds, 1),
                "psnr": {"min": round(min(psnrs), 2), "mean": round(float(np.mean(psnrs)), 2)},
                "max_change": max(p.max_change for p in protected.images),
                "control_psnr": round(float(np.mean([c[1] for c in control])), 2),
                "search_values": [round(value, 4) for value in protected.losses],  # per round: cosine (misalign) or loss (ASPL)
                "loss": {arm: round(value, 6) for arm, value in loss.items()},
                "loss_low_t": {arm: None if value is None else round(value, 6) for arm, value in low.items()},
                "gap_low_t": _difference(low["protected"], low["clean"]),
                "control_gap_low_t": _difference(low["control"], low["clean"]),
                "gap": round(loss["protected"] - loss["clean"], 6),
                "control_gap": round(loss["control"] - loss["clean"], 6),
                "undone": round((loss["protected"] - loss["clean"]) / gain, 4) if gain > 0 else None}

    def train(self, images: list[bytes], noun: str, classes: list[bytes]) -> bytes:
        from unipgen.modalities.image_training import train_dreambooth_lora

        return train_dreambooth_lora(self.ref, images, noun, steps=self.steps, learning_rate=self.lr, seed=self.seed,
                                     class_images=classes, pipeline=self.pipe).data

    def loss(self, lora: bytes | None, photos: list[bytes], noun: str) -> tuple[float, float | None]:
        """Mean denoising loss of the model (with `lora` loaded) on `photos` over fixed draws, and
        over those of the draws with a timestep below `LOW_T`."""
        import torch

        from unipgen.modalities.image_training import denoise_loss, embed_prompt, encode_latents, noise_scheduler
        from unipgen.modalities.seeding import output_generator

        with tempfile.TemporaryDirectory() as folder:
            if lora is not None:
                (Path(folder) / "pytorch_lora_weights.safetensors").write_bytes(lora)
                self.pipe.load_lora_weights(folder, adapter_name="attack")
            try:
                latents = encode_latents(self.pipe, photos, self.resolution, self.seed)
                states = embed_prompt(self.pipe, f"a photo of sks {noun}", len(photos))
                scheduler = noise_scheduler(self.pipe)
                values, low = [], []
                with torch.no_grad():
                    for draw in range(self.draws):
                        replay = output_generator(self.seed + 7919, draw)  # the draw's timesteps, as denoise_loss draws them
                        torch.randn(latents.shape, generator=replay)
                        steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(photos),), generator=replay)
                        per_sample = denoise_loss(self.pipe, scheduler, latents, states,
                                                  output_generator(self.seed + 7919, draw)).cpu()
                        values.append(float(per_sample.mean()))
                        low.extend(per_sample[steps < LOW_T].tolist())
            finally:
                if lora is not None:
                    self.pipe.unload_lora_weights()
        return float(np.mean(values)), float(np.mean(low)) if low else None


def _noise(photo: bytes, epsilon: float, resolution: int, seed: int) -> tuple[bytes, float]:
    """The control: a random ±epsilon per channel on a resolution x resolution grid spread over
    the photo (nearest), as PNG, and its PSNR."""
    from PIL import Image

    from unipgen.modalities.image_protect import psnr

    image = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"), dtype=np.int16)
    signs = np.random.default_rng(seed).choice([-1, 1], size=(resolution, resolution, 3)) * int(round(epsilon))
    rows = np.minimum(np.arange(image.shape[0]) * resolution // image.shape[0], resolution - 1)
    cols = np.minimum(np.arange(image.shape[1]) * resolution // image.shape[1], resolution - 1)
    noisy = np.clip(image + signs[rows][:, cols], 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="PNG")
    return buffer.getvalue(), psnr(image, noisy)


def _difference(first: float | None, second: float | None) -> float | None:
    """first − second, rounded; None where either is (no draw below `LOW_T`)."""
    return None if first is None or second is None else round(first - second, 6)


def _summary(per_subject: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = list(per_subject.values())
    undone = [row["undone"] for row in rows if row["undone"] is not None]
    low = [row["gap_low_t"] for row in rows if row["gap_low_t"] is not None]
    return {"subjects": len(rows),
            "protected_higher": sum(row["gap"] > 0 for row in rows),
            "protected_above_control": sum(row["gap"] > row["control_gap"] for row in rows),
            "mean_gap": round(float(np.mean([row["gap"] for row in rows])), 6),
            "mean_control_gap": round(float(np.mean([row["control_gap"] for row in rows])), 6),
            "protected_higher_low_t": sum(row["gap_low_t"] is not None and row["gap_low_t"] > 0 for row in rows),
            "mean_gap_low_t": round(float(np.mean(low)), 6) if low else None,
            "mean_undone": round(float(np.mean(undone)), 4) if undone else None,
            "min_psnr": min(row["psnr"]["min"] for row in rows),
            "passed": all(row["gap"] > 0 and row["psnr"]["min"] >= 35.0 for row in rows)}


__all__ = ["LOW_T", "REAL_ATTACK", "TINY_ATTACK", "run"]
