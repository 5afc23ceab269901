"""Image metrics against reference implementations (scikit-image, torchmetrics) and hand cases."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.eval import image_metrics as im


def _images(count: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def _smooth(size: int, seed: int) -> np.ndarray:
    """A photo-like float image in [0, 1]: smooth gradients plus mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], axis=2) * 0.4 + 0.5
    return np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)


@pytest.fixture(scope="module")
def clip():
    return im.resolve_encoder("tiny")


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------- embedding scores


def test_clip_i_is_the_mean_pairwise_cosine(clip) -> None:
    generated, references = _images(2, seed=1), _images(3, seed=2)
    a = clip.encode([Image.fromarray(x) for x in generated]).astype(np.float64)
    b = clip.encode([Image.fromarray(x) for x in references]).astype(np.float64)
    by_hand = np.mean([[u @ v / np.linalg.norm(u) / np.linalg.norm(v) for v in b] for u in a])
    assert im.clip_i(generated, references, clip) == pytest.approx(by_hand, abs=1e-6)
    # bytes, PIL and arrays are the same image
    assert im.clip_i([_png(generated[0])], [Image.fromarray(generated[0])], clip) == pytest.approx(1.0, abs=1e-6)


def test_clip_t_pairs_each_image_with_its_prompt(clip) -> None:
    images, prompts = _images(2, seed=3), ["a photo of a dog", "a red cube in the snow"]
    a, t = clip.encode([Image.fromarray(x) for x in images]), clip.encode_text(prompts)
    by_hand = np.mean([float(a[i] @ t[i]) for i in range(2)])
    assert im.clip_t(images, prompts, clip) == pytest.approx(by_hand, abs=1e-5)
    one = float(np.mean(a @ clip.encode_text(["a photo of a dog"])[0]))
    assert im.clip_t(images, "a photo of a dog", clip) == pytest.approx(one, abs=1e-5)
    with pytest.raises(InvalidInputError, match="2 images but 1 prompts"):
        im.clip_t(images, ["a dog"], clip)


def test_dino_i_uses_unit_cls_embeddings() -> None:
    encoder = im.DinoEncoder(im.TINY)
    images = _images(3, seed=4)
    vectors = encoder.encode(images)
    assert vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert im.dino_i(images[:1], images[:1], encoder) == pytest.approx(1.0, abs=1e-6)
    expected = float(np.mean(vectors[:1] @ vectors[1:].T))
    assert im.dino_i(images[:1], images[1:], im.TINY) == pytest.approx(expected, abs=1e-5)


def test_embedding_metrics_reject_bad_input(clip) -> None:
    with pytest.raises(InvalidInputError, match="no images"):
        im.clip_i([], _images(1), clip)
    with pytest.raises(UnsupportedMediaError, match="image #1"):
        im.clip_i([_images(1)[0], b"not an image"], _images(1), clip)
    with pytest.raises(InvalidInputError, match="shape"):
        im.clip_i([np.zeros((4, 4, 7), np.uint8)], _images(1), clip)
    with pytest.raises(InvalidInputError, match="sizes differ"):
        im.mean_pairwise_cosine(np.ones((2, 3)), np.ones((2, 4)))


# ---------------------------------------------------------------- FID, KID


def test_frechet_distance_by_hand_and_against_torchmetrics() -> None:
    # 1-D: (μa − μb)² + (σa − σb)² = (1 − 7)² + (√2 − √8)² = 36 + 2
    assert im.frechet_distance([[0.0], [2.0]], [[5.0], [9.0]]) == pytest.approx(38.0, abs=1e-9)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(64, 8)), rng.normal(0.3, 1.5, size=(48, 8))
    assert im.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    torch = pytest.importorskip("torch")
    fid = pytest.importorskip("torchmetrics.image.fid")
    ref = fid._compute_fid(*(torch.tensor(v) for v in (a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                                      np.cov(b, rowvar=False))))
    assert im.frechet_distance(a, b) == pytest.approx(float(ref), rel=1e-6)
    with pytest.raises(InvalidInputError, match="n >= 2"):
        im.frechet_distance(a[:1], b)


def test_kid_against_torchmetrics_and_its_behaviour() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 6)), rng.normal(0.5, 1.0, size=(40, 6))
    torch = pytest.importorskip("torch")
    kid = pytest.importorskip("torchmetrics.image.kid")
    ref = float(kid.poly_mmd(torch.tensor(a), torch.tensor(b)))
    mean, std = im.kernel_inception_distance(a, b, subsets=1, subset_size=40)
    assert mean == pytest.approx(ref, rel=1e-9) and std == 0.0
    same, _ = im.kernel_inception_distance(a[:20], a[20:], subsets=10, subset_size=15)
    apart, _ = im.kernel_inception_distance(a, b, subsets=10, subset_size=15)
    assert abs(same) < 0.1 < apart


def test_image_fid_and_kid_run_on_encoder_embeddings(clip) -> None:
    generated, references = _images(4, seed=5), _images(4, seed=6)
    assert im.image_fid(generated, generated, clip) == pytest.approx(0.0, abs=1e-6)
    assert im.image_fid(generated, references, clip) > 0
    mean, _ = im.image_kid(generated, references, clip, subsets=3, subset_size=4)
    assert math.isfinite(mean)


# ---------------------------------------------------------------- SSIM, MS-SSIM, PSNR


def test_ssim_and_psnr_match_scikit_image() -> None:
    metrics = pytest.importorskip("skimage.metrics")
    x, y = _smooth(48, 0), _smooth(48, 1)
    expected = metrics.structural_similarity(x, y, data_range=1.0, channel_axis=2, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False)
    assert im.ssim(x, y) == pytest.approx(expected, abs=1e-10)
    gray_a, gray_b = _images(2, size=32, seed=7)
    expected = metrics.structural_similarity(gray_a[..., 0], gray_b[..., 0], data_range=255, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False)
    assert im.ssim(gray_a[..., 0], gray_b[..., 0]) == pytest.approx(expected, abs=1e-10)
    assert im.psnr(x, y) == pytest.approx(metrics.peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-10)
    assert im.psnr(_png(gray_a), gray_a) == math.inf
    assert im.ssim(x, x) == pytest.approx(1.0)


def test_ms_ssim_per_wang_2003() -> None:
    torch = pytest.importorskip("torch")
    ssim_module = pytest.importorskip("torchmetrics.functional.image.ssim")
    metrics = pytest.importorskip("skimage.metrics")
    x, y = _smooth(176, 2), _smooth(176, 3)
    # Reference, per channel: torchmetrics' contrast-structure at the 4 finer scales, scikit-image's SSIM
    # at the coarsest (torchmetrics' own MS-SSIM averages its last SSIM map without cropping the border).
    scores = []
    for channel in range(3):
        p, q = (torch.tensor(v[..., channel])[None, None] for v in (x, y))
        score = 1.0
        for weight in im.MS_SSIM_WEIGHTS[:-1]:
            _, cs = ssim_module._ssim_update(p, q, data_range=1.0, return_contrast_sensitivity=True)
            score *= float(cs) ** weight
            p, q = torch.nn.functional.avg_pool2d(p, 2), torch.nn.functional.avg_pool2d(q, 2)
        last = metrics.structural_similarity(p[0, 0].numpy(), q[0, 0].numpy(), data_range=1.0, gaussian_weights=True,
                                             sigma=1.5, use_sample_covariance=False)
        scores.append(score * last ** im.MS_SSIM_WEIGHTS[-1])
    assert im.ms_ssim(x, y) == pytest.approx(np.mean(scores), abs=1e-9)
    assert im.ms_ssim(x[..., :1], y[..., :1], weights=(1.0,)) == pytest.approx(im.ssim(x[..., 0], y[..., 0]))
    assert im.ms_ssim(x, x) == pytest.approx(1.0)
    with pytest.raises(InvalidInputError, match="larger than 160"):
        im.ms_ssim(x[:100], y[:100])


def test_pixel_metrics_reject_mismatched_or_bad_images() -> None:
    a, b = _images(2, size=32)
    with pytest.raises(InvalidInputError, match="shapes differ"):
        im.ssim(a, b[:30])
    with pytest.raises(InvalidInputError, match="window"):
        im.ssim(a[:8, :8], b[:8, :8])
    with pytest.raises(InvalidInputError, match="uint8 or finite float"):
        im.psnr(a.astype(np.int64), b)
    with pytest.raises(UnsupportedMediaError):
        im.psnr(b"\x00\x01", b)


# ---------------------------------------------------------------- LPIPS


def test_lpips_matches_torchmetrics_forward_on_the_same_backbone() -> None:
    torch = pytest.importorskip("torch")
    reference = pytest.importorskip("torchmetrics.functional.image.lpips")
    model = im.LpipsModel(im.TINY)
    net, lins = model._load()

    class Taps(torch.nn.Module):  # the same AlexNet, returning the 5 tapped ReLU outputs
        def forward(self, x):
            outs = []
            for index, layer in enumerate(net):
                x = layer(x)
                if index in im._ALEX_TAPS:
                    outs.append(x)
            return outs

    ref = reference._LPIPS.__new__(reference._LPIPS)
    torch.nn.Module.__init__(ref)
    ref.scaling_layer, ref.net, ref.L, ref.spatial, ref.resize = reference.ScalingLayer(), Taps(), 5, False, None
    ref.lins = torch.nn.ModuleList(reference.NetLinLayer(w.shape[1], use_dropout=True) for w in lins)
    for layer, weight in zip(ref.lins, lins, strict=True):
        layer.model[1].weight.data = weight
    ref.eval()
    x, y = _smooth(64, 4), _smooth(64, 5)
    tensors = [torch.tensor(v, dtype=torch.float32).permute(2, 0, 1)[None] for v in (x, y)]
    with torch.inference_mode():
        expected = float(ref(*tensors, normalize=True))
    assert model.distance(x, y) == pytest.approx(expected, rel=1e-4)
    assert model.distance(x, x) == pytest.approx(0.0, abs=1e-7)
    assert im.lpips([x, x], [y, x], model) == pytest.approx(expected / 2, rel=1e-4)
    with pytest.raises(InvalidInputError, match="equally long"):
        im.lpips([x], [], model)
    with pytest.raises(InvalidInputError, match="32×32"):
        model.distance(x[:16, :16], y[:16, :16])


def test_lpips_loads_a_torchvision_alexnet_checkpoint(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tiny = im.LpipsModel(im.TINY, seed=3)
    net, _ = tiny._load()
    # torchvision's alexnet state dict: features.<index>.* plus the classifier, which LPIPS ignores.
    state = {f"features.{key}": value for key, value in net.state_dict().items()}
    state["classifier.1.weight"] = torch.zeros(2, 2)
    torch.save(state, tmp_path / "alexnet.pth")
    x, y = _smooth(48, 6), _smooth(48, 7)
    loaded = im.LpipsModel(str(tmp_path / "alexnet.pth"))
    assert loaded.distance(x, y) == pytest.approx(tiny.distance(x, y), rel=1e-6)
    assert loaded.distance(x, y) != pytest.approx(im.LpipsModel(im.TINY, seed=4).distance(x, y), rel=1e-3)
