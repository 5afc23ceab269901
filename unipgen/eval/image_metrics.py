"""Image metrics: subject fidelity (CLIP-I, DINO-I), prompt fidelity (CLIP-T), distribution
distances (FID, KID over embeddings), perceptual distance (LPIPS) and pixel fidelity (SSIM,
MS-SSIM, PSNR).

Images are PIL images, encoded bytes (PNG, JPEG...) or numpy arrays (H×W or H×W×C; uint8 in
0..255 or floats in 0..1). Embedding metrics take an `encoder`: an object with `encode(images)`
(and `encode_text(texts)` for CLIP-T) returning L2-normalised rows, a profile name whose
``image`` encoder is used, or None for the ``cpu`` profile (real CLIP; the ``tiny`` profile's
random CLIP gives meaningless numbers and is for tests). Nothing here downloads on its own:
Hub ids resolve through the local Hugging Face cache.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.tiny import TINY_RANDOM, is_random

if TYPE_CHECKING:
    from PIL import Image

    from unipgen.core.encoders.base import Encoder

#: Wang, Simoncelli & Bovik 2003: weights of the 5 scales of MS-SSIM, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
#: The DINO ViT of DreamBooth's DINO score (ViT-S/16, self-supervised; CLS token).
DINO_REF = "facebook/dino-vits16"
TINY = TINY_RANDOM
_TINY_VERSION = "1"

# ---------------------------------------------------------------- encoders and inputs


@functools.lru_cache(maxsize=8)
def _profile_encoder(profile: str, role: str) -> Encoder:
    from unipgen.core.encoders import load_encoder
    from unipgen.schema.profiles import load_profile

    specs = load_profile(profile).encoders
    if role not in specs:
        raise InvalidInputError(f"profile {profile!r} configures no {role!r} encoder")
    return load_encoder(specs[role])


def resolve_encoder(encoder: Any, role: str = "image") -> Any:
    """An encoder object as is; a profile name → that profile's `role` encoder; None → the cpu profile's."""
    if encoder is None or isinstance(encoder, str):
        return _profile_encoder(encoder or "cpu", role)
    if not hasattr(encoder, "encode"):
        raise InvalidInputError(f"encoder {encoder!r} has no encode() method")
    return encoder


def to_pil(item: Any, number: int = 0) -> Image.Image:
    """A PIL RGB image from PIL, bytes, a file path or an array (uint8, or floats in [0, 1])."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if isinstance(item, np.ndarray):
        array = _as_float(item, number)
        array = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
        array = np.repeat(array[..., None], 3, axis=2) if array.ndim == 2 else array
        return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)).convert("RGB")
    try:
        source = io.BytesIO(item) if isinstance(item, bytes | bytearray) else Path(item)
        with Image.open(source) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, TypeError) as exc:
        raise UnsupportedMediaError(f"image #{number} is not a readable image: {exc}") from None


def embed_images(images: Sequence[Any], encoder: Any = None) -> np.ndarray:
    """(len(images), dim) embeddings of `images` by `encoder` (see the module docstring)."""
    if len(images) == 0:
        raise InvalidInputError("no images given")
    return np.asarray(resolve_encoder(encoder).encode([to_pil(x, n) for n, x in enumerate(images)]), np.float64)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def mean_pairwise_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine over all (row of a, row of b) pairs, in [-1, 1]."""
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return float(np.clip((unit_rows(a) @ unit_rows(b).T).mean(), -1.0, 1.0))


def _matrix(features: Any, name: str, min_rows: int = 1) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2 or len(matrix) < min_rows or matrix.shape[1] == 0:
        raise InvalidInputError(f"{name}: expected a (n >= {min_rows}, dim) matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise InvalidInputError(f"{name} has NaN or infinite values")
    return matrix


# ---------------------------------------------------------------- CLIP-I, CLIP-T, DINO-I


def clip_i(generated: Sequence[Any], references: Sequence[Any], encoder: Any = None) -> float:
    """CLIP-I (DreamBooth): mean cosine of CLIP embeddings over all (generated, reference) pairs.

    In [-1, 1]; higher = the generated images look more like the reference subject. DreamBooth
    (Ruiz et al. 2023) reports 0.885 between real photos of one subject, 0.803 for its outputs.
    """
    return mean_pairwise_cosine(embed_images(generated, encoder), embed_images(references, encoder))


def clip_t(images: Sequence[Any], prompts: str | Sequence[str], encoder: Any = None) -> float:
    """CLIP-T: mean cosine of each image and its prompt (one prompt for all, or one per image).

    In [-1, 1] (CLIPScore of Hessel et al. is 100·max(cos, 0)); higher = closer to the prompt.
    DreamBooth reports 0.305 for its Stable Diffusion outputs.
    """
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise InvalidInputError(f"{len(images)} images but {len(prompts)} prompts")
    model = resolve_encoder(encoder)
    if not hasattr(model, "encode_text"):
        raise InvalidInputError("CLIP-T needs an encoder with encode_text() (a CLIP encoder)")
    image_vectors = unit_rows(embed_images(images, model))
    text_vectors = unit_rows(np.asarray(model.encode_text(prompts), dtype=np.float64))
    return float(np.clip((image_vectors * text_vectors).sum(axis=1).mean(), -1.0, 1.0))


class DinoEncoder:
    """A ViT through transformers AutoModel: images → L2-normalised CLS embeddings (DINO-I).

    `ref`: a Hub id (default `facebook/dino-vits16`), a local folder, or "tiny-random" for a
    random 2-layer ViT built from a config (tests only; its numbers mean nothing).
    """

    space = "dino"
    metric = "ip"

    def __init__(self, ref: str = DINO_REF, device: str = "cpu") -> None:
        self.ref = ref
        self.random_weights = is_random(ref)
        self.device = device
        self._parts: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        if self._parts is None:
            import transformers

            path: str | Path = tiny_dino_dir() if self.ref == TINY else self.ref
            model = transformers.AutoModel.from_pretrained(path).to(self.device).eval()
            # The PIL processor (transformers 5) needs no torchvision.
            processor = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
            self._parts = (model, processor.from_pretrained(path))
        return self._parts

    def encode(self, images: Sequence[Any]) -> np.ndarray:
        import torch

        model, processor = self._load()
        pixels = processor(images=[to_pil(x, n) for n, x in enumerate(images)], return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            cls = model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0]
        return unit_rows(cls.double().cpu().numpy()).astype(np.float32)


def tiny_dino_dir(seed: int = 0) -> Path:
    """The folder of the tiny random ViT for DINO-I tests, built on first use (atomically)."""
    import os
    import tempfile

    directory = Path(tempfile.gettempdir()) / "unipgen-tiny" / f"dino-v{_TINY_VERSION}-seed{seed}"
    if not (directory / "config.json").is_file():
        import torch
        import transformers

        building = directory.with_name(f"{directory.name}.{os.getpid()}.tmp")
        torch.manual_seed(seed)
        config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=37,
                                        add_pooling_layer=False)  # type: ignore[call-arg]  # kept as an extra key
        transformers.ViTModel(config, add_pooling_layer=False).eval().save_pretrained(building)
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(building)
        try:
            building.rename(directory)
        except OSError:  # another process finished first
            import shutil

            shutil.rmtree(building, ignore_errors=True)
    return directory


@functools.lru_cache(maxsize=4)
def _dino(ref: str) -> DinoEncoder:
    return DinoEncoder(ref)


def dino_i(generated: Sequence[Any], references: Sequence[Any], encoder: Any = DINO_REF) -> float:
    """DINO-I (DreamBooth): mean cosine of DINO CLS embeddings over all (generated, reference) pairs.

    In [-1, 1]; DreamBooth prefers it to CLIP-I because self-supervised DINO features keep the
    details that tell one instance from similar objects. `encoder`: a DinoEncoder or a ref for one.
    """
    model = _dino(encoder) if isinstance(encoder, str) else encoder
    return mean_pairwise_cosine(embed_images(generated, model), embed_images(references, model))


# ---------------------------------------------------------------- FID and KID


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance of Gaussians fitted to two embedding sets (rows = samples): ≥ 0, 0 = same.

    ‖μa − μb‖² + tr(Σa + Σb − 2(ΣaΣb)^½), the formula of FID (Heusel et al. 2017) and of FAD.
    Each set needs ≥ 2 rows; with fewer rows than dimensions the covariances are singular and
    the value is biased upward (use many samples, or compare values at equal sample sizes).
    """
    from scipy import linalg

    a, b = _matrix(features_a, "features_a", 2), _matrix(features_b, "features_b", 2)
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if not np.all(np.isfinite(covmean)):  # singular product: regularise as pytorch-fid does
        offset = np.eye(len(sigma_a)) * 1e-6
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean.real))
    return max(distance, 0.0)  # tiny negatives are rounding


def kernel_inception_distance(features_a: Any, features_b: Any, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD² with the kernel (x·y/d + 1)³, as (mean, std) over subsets.

    About 0 when both sets come from one distribution (it can be slightly negative: unbiased),
    larger = further apart. Each subset draws min(subset_size, n_a, n_b) rows of each set
    without replacement (seeded); unlike FID it is unbiased at small sample sizes.
    """
    a, b = _matrix(features_a, "features_a", 2), _matrix(features_b, "features_b", 2)
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise InvalidInputError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)]
        values.append(_poly_mmd2(x, y))
    return float(np.mean(values)), float(np.std(values))


def _poly_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m, dim = x.shape
    k_xx, k_yy, k_xy = ((p @ q.T / dim + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def image_fid(generated: Sequence[Any], references: Sequence[Any], encoder: Any = None) -> float:
    """FID over the configured encoder's embeddings (CLIP by default: "FID_CLIP", not Inception FID)."""
    return frechet_distance(embed_images(generated, encoder), embed_images(references, encoder))


def image_kid(generated: Sequence[Any], references: Sequence[Any], encoder: Any = None,
              subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID (mean, std) over the configured encoder's embeddings; see `kernel_inception_distance`."""
    return kernel_inception_distance(embed_images(generated, encoder), embed_images(references, encoder),
                                     subsets, subset_size, seed)


# ---------------------------------------------------------------- SSIM, MS-SSIM, PSNR


def _as_float(item: Any, number: int) -> np.ndarray:
    """Pixels as float64 in [0, 1] (uint8 / 255; floats as they are), H×W or H×W×C."""
    if not isinstance(item, np.ndarray):
        return np.asarray(to_pil(item, number), dtype=np.float64) / 255.0
    if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (1, 3, 4)) or min(item.shape[:2]) < 1:
        raise InvalidInputError(f"image #{number}: expected an H×W or H×W×C array, got shape {item.shape}")
    if item.dtype == np.uint8:
        return item.astype(np.float64) / 255.0
    if not np.issubdtype(item.dtype, np.floating) or not np.all(np.isfinite(item)):
        raise InvalidInputError(f"image #{number}: expected uint8 or finite float pixels, got {item.dtype}")
    return item.astype(np.float64)


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_float(a, 0), _as_float(b, 1)
    if x.shape != y.shape:
        raise InvalidInputError(f"image shapes differ: {x.shape} vs {y.shape}")
    return (x[..., None], y[..., None]) if x.ndim == 2 else (x, y)


def psnr(a: Any, b: Any, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10·log10(range² / MSE); inf for identical images.

    Pixels are compared in [0, 1] (uint8 and decoded images are divided by 255). Higher =
    closer (a 256-px photo against its JPEG quality-30 copy: about 30 dB).
    """
    x, y = _pair(a, b)
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def _ssim_maps(x: np.ndarray, y: np.ndarray, data_range: float, sigma: float = 1.5) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure) of one channel over the windows inside the image."""
    from scipy.ndimage import gaussian_filter

    pad = int(3.5 * sigma + 0.5)  # the 11×11 Gaussian window of Wang et al. 2004 for sigma 1.5
    if min(x.shape) <= 2 * pad:
        raise InvalidInputError(f"images of {x.shape[1]}×{x.shape[0]} are smaller than the {2 * pad + 1}-pixel window")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    blur = functools.partial(gaussian_filter, sigma=sigma, truncate=3.5, mode="reflect")
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    inside = (slice(pad, -pad), slice(pad, -pad))
    return float(ssim_map[inside].mean()), float(cs[inside].mean())


def ssim(a: Any, b: Any, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004; 11×11 Gaussian window, σ 1.5), mean over channels.

    In [-1, 1], 1 = identical; compares local means, contrasts and structure rather than raw
    pixel error. Matches scikit-image's structural_similarity(gaussian_weights=True,
    use_sample_covariance=False). Images need at least 11×11 pixels.
    """
    x, y = _pair(a, b)
    return float(np.mean([_ssim_maps(x[..., c], y[..., c], data_range)[0] for c in range(x.shape[2])]))


def ms_ssim(a: Any, b: Any, data_range: float = 1.0, weights: Sequence[float] = MS_SSIM_WEIGHTS) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), in [0, 1], 1 = identical.

    ∏ cs_j^w_j over the finer scales × SSIM_M^w_M at the coarsest, halving the image (2×2 mean)
    between scales; negative terms count as 0. Five scales need images larger than 160 pixels
    per side. Mean over colour channels.
    """
    x, y = _pair(a, b)
    if min(x.shape[:2]) // 2 ** (len(weights) - 1) <= 10:
        raise InvalidInputError(f"{len(weights)} scales need images larger than {10 * 2 ** (len(weights) - 1)} px")
    scores = []
    for channel in range(x.shape[2]):
        p, q, value = x[..., channel], y[..., channel], 1.0
        for scale, weight in enumerate(weights):
            sim, cs = _ssim_maps(p, q, data_range)
            value *= max(sim if scale == len(weights) - 1 else cs, 0.0) ** weight
            p, q = _halve(p), _halve(q)
        scores.append(value)
    return float(np.mean(scores))


def _halve(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


# ---------------------------------------------------------------- LPIPS

#: AlexNet layers whose ReLU outputs LPIPS compares (torchvision `alexnet().features` indices).
_ALEX_TAPS = (1, 4, 7, 9, 11)


class LpipsModel:
    """LPIPS (Zhang et al. 2018, "alex" v0.1): a learned perceptual distance between two images.

    Both images go through AlexNet; at 5 layers the channel-normalised features are subtracted,
    squared, weighted per channel by the linear layers and averaged over space; the 5 layers
    sum. ≥ 0, 0 = identical, higher = perceptually further apart.

    `ref`: the torchvision AlexNet checkpoint file (`alexnet-owt-7be5be79.pth`, from
    download.pytorch.org: real LPIPS needs these ImageNet weights; nothing is downloaded here),
    or "tiny-random" (random AlexNet, seeded: meaningless numbers, for tests). `lin_weights`:
    the LPIPS linear layers (`lpips/weights/v0.1/alex.pth` of the lpips package); by default
    the identical copy torchmetrics ships, when it is installed.
    """

    def __init__(self, ref: str, lin_weights: str | None = None, device: str = "cpu", seed: int = 0) -> None:
        self.ref, self.lin_weights, self.device, self.seed = ref, lin_weights, device, seed
        self.random_weights = is_random(ref)
        self._parts: tuple[Any, list[Any]] | None = None

    def _load(self) -> tuple[Any, list[Any]]:
        if self._parts is None:
            import torch
            from torch import nn

            torch.manual_seed(self.seed)
            conv = nn.Conv2d
            net = nn.Sequential(conv(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2), conv(64, 192, 5, padding=2),
                                nn.ReLU(), nn.MaxPool2d(3, 2), conv(192, 384, 3, padding=1), nn.ReLU(),
                                conv(384, 256, 3, padding=1), nn.ReLU(), conv(256, 256, 3, padding=1), nn.ReLU())
            if self.ref != TINY:
                state = torch.load(self.ref, map_location="cpu", weights_only=True)
                net.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("features.")})
            lin_path = self.lin_weights or _packaged_lin_weights()
            if lin_path is None and self.ref != TINY:
                raise InvalidInputError("LPIPS needs lin_weights (lpips/weights/v0.1/alex.pth) or torchmetrics")
            if lin_path is None:  # tiny without the packaged file: uniform weights
                lins = [torch.full((1, c, 1, 1), 1.0 / c) for c in (64, 192, 384, 256, 256)]
            else:
                state = torch.load(lin_path, map_location="cpu", weights_only=True)
                lins = [state[f"lin{k}.model.1.weight"] for k in range(5)]
            self._parts = (net.to(self.device).eval(), [w.to(self.device) for w in lins])
        return self._parts

    def distance(self, a: Any, b: Any) -> float:
        """LPIPS between two images of one size (at least 32×32 pixels)."""
        import torch

        net, lins = self._load()
        x, y = _pair(a, b)
        if x.shape[2] != 3 or min(x.shape[:2]) < 32:
            raise InvalidInputError(f"LPIPS needs RGB images of at least 32×32 pixels, got shape {x.shape}")
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        batch = torch.tensor(np.stack([x, y]), dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1  # [-1, 1]
        hidden = ((batch - shift) / scale).to(self.device)
        total = 0.0
        with torch.inference_mode():
            taps = iter(lins)
            for index, layer in enumerate(net):
                hidden = layer(hidden)
                if index in _ALEX_TAPS:
                    unit = hidden / torch.sqrt((hidden**2).sum(dim=1, keepdim=True) + 1e-8)
                    diff = (unit[0:1] - unit[1:2]) ** 2
                    total += float((diff * next(taps)).sum(dim=1).mean())
        return total


def _packaged_lin_weights() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("torchmetrics")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "functional" / "image" / "lpips_models" / "alex.pth"
        if path.is_file():
            return str(path)
    return None


def lpips(images_a: Sequence[Any], images_b: Sequence[Any], model: LpipsModel) -> float:
    """Mean LPIPS over aligned pairs (images_a[i], images_b[i]); see `LpipsModel`."""
    if len(images_a) != len(images_b) or not images_a:
        raise InvalidInputError(f"need two equally long, non-empty image lists, got {len(images_a)} and {len(images_b)}")
    return float(np.mean([model.distance(a, b) for a, b in zip(images_a, images_b, strict=True)]))


__all__ = ["DINO_REF", "MS_SSIM_WEIGHTS", "DinoEncoder", "LpipsModel", "clip_i", "clip_t", "dino_i", "embed_images", "unit_rows",
           "frechet_distance", "image_fid", "image_kid", "kernel_inception_distance", "lpips",
           "mean_pairwise_cosine", "ms_ssim", "psnr", "resolve_encoder", "ssim", "to_pil"]
