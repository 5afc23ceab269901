"""Tiny random Stable Diffusion weights, built offline from configs, for tests and demos.

`tiny_sd_dir` holds the pipeline with its own random IP-Adapter (and a tiny CLIP image encoder);
`tiny_face_adapter_dir` holds random IP-Adapter FaceID weights for that pipeline, in a sibling
folder so that adding them changed neither the pipeline's folder nor its cache key. Each folder
is built once per seed, atomically, on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.tiny import build_tiny_tokenizer, cached_tiny_model

if TYPE_CHECKING:
    import torch

TINY_SD = "tiny-random"
_VERSION = "1"
#: Where the tiny pipeline's own random IP-Adapter lies in `tiny_sd_dir`: subfolder and weight file.
TINY_IP_ADAPTER_FOLDER = "ip_adapter"
TINY_IP_ADAPTER_WEIGHT_NAME = "ip-adapter_tiny.safetensors"
#: The id embedding size of the tiny FaceID adapter: dlib's face descriptor (`encoders.face`).
TINY_FACE_ID_DIM = 128
#: The tiny FaceID weight file in `tiny_face_adapter_dir`.
TINY_FACE_WEIGHT_NAME = "ip-adapter-faceid_tiny.safetensors"


def tiny_sd_dir(seed: int = 0) -> Path:
    """The folder of the tiny Stable Diffusion pipeline for `seed`, built on first use."""
    return cached_tiny_model("sd", _VERSION, seed, "model_index.json", build_tiny_sd)


def tiny_face_adapter_dir(seed: int = 0) -> Path:
    """The folder of random FaceID weights (`TINY_FACE_WEIGHT_NAME`) for `tiny_sd_dir(seed)`."""
    return cached_tiny_model("faceid", _VERSION, seed, TINY_FACE_WEIGHT_NAME, _save_tiny_face_adapter)


def build_tiny_sd(directory: Path, seed: int = 0) -> Path:
    """Save a tiny random StableDiffusionPipeline plus a tiny random IP-Adapter to `directory`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer()  # the tiny CLIP's, trained offline on a small word list
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    # The feature extractor prepares IP-Adapter reference images for the tiny image encoder.
    features = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=features,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.save_pretrained(directory)  # type: ignore[attr-defined]  # mypy reads diffusers' dummy class
    _save_tiny_ip_adapter(directory / TINY_IP_ADAPTER_FOLDER, unet, seed)
    return directory


def _save_tiny_ip_adapter(directory: Path, unet: Any, seed: int) -> None:
    """A tiny CLIP image encoder and random IP-Adapter weights in `load_ip_adapter`'s layout."""
    import torch
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed + 1)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=32))
    encoder.save_pretrained(directory / "image_encoder")
    weights = tiny_ip_adapter_weights(unet, encoder.config.projection_dim, seed)
    save_file(weights, str(directory / TINY_IP_ADAPTER_WEIGHT_NAME))


def tiny_ip_adapter_weights(unet: Any, image_embed_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random IP-Adapter (plain, 4 image tokens) weights for `unet`, keyed as the safetensors file.

    "image_proj.*" is diffusers' `ImageProjection` in the original naming (proj, norm);
    "ip_adapter.{k}.to_k_ip/to_v_ip" are numbered 1, 3, 5... over the UNet's cross-attention
    processors in `unet.attn_processors` order, which is how `load_ip_adapter` reads them.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    weights = {
        "image_proj.proj.weight": torch.randn(4 * cross, image_embed_dim, generator=generator) / image_embed_dim**0.5,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    weights.update(_ip_key_values(unet, generator))
    return weights


def _ip_key_values(unet: Any, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """"ip_adapter.{k}.to_k_ip/to_v_ip.weight" for each cross-attention, k = 1, 3, 5..."""
    import torch

    weights, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention: no image tokens
        attention = unet.get_submodule(name.removesuffix(".processor"))
        # Start from the text projections so the image tokens weigh as much as text ones.
        for proj in ("to_k", "to_v"):
            base = getattr(attention, proj).weight.detach()
            noise = torch.randn(base.shape, generator=generator) * base.std()
            weights[f"ip_adapter.{key_id}.{proj}_ip.weight"] = (base + noise).contiguous()
        key_id += 2
    return weights


def _save_tiny_face_adapter(directory: Path, seed: int) -> None:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir(seed), subfolder="unet")
    save_file(tiny_face_adapter_weights(unet, TINY_FACE_ID_DIM, seed), str(directory / TINY_FACE_WEIGHT_NAME))


def tiny_face_adapter_weights(unet: Any, id_embed_dim: int = TINY_FACE_ID_DIM, seed: int = 0,
                              lora_rank: int = 4) -> dict[str, torch.Tensor]:
    """Random IP-Adapter FaceID weights for `unet`, laid out as h94's ip-adapter-faceid_sd15.

    "image_proj.*" is a FaceID projection (diffusers' `IPAdapterFaceIDImageProjection`, detected
    by its "norm.weight" with no "proj.weight"): proj.0 (id_embed_dim → 2·id_embed_dim), GELU,
    proj.2 (→ 4 tokens × cross_attention_dim), norm. "ip_adapter.*" has the to_k_ip/to_v_ip of
    the plain IP-Adapter plus the FaceID LoRA ("{k}.to_q/k/v/out_lora.down/up", k = 0, 1, 2...
    over every attention processor), which `load_ip_adapter` loads as a PEFT adapter "faceid_0".
    """
    import torch

    generator = torch.Generator().manual_seed(seed + 2)
    cross, hidden = unet.config.cross_attention_dim, 2 * id_embed_dim
    weights = {
        "image_proj.proj.0.weight": torch.randn(hidden, id_embed_dim, generator=generator) / id_embed_dim**0.5,
        "image_proj.proj.0.bias": torch.zeros(hidden),
        "image_proj.proj.2.weight": torch.randn(4 * cross, hidden, generator=generator) / hidden**0.5,
        "image_proj.proj.2.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    weights.update(_ip_key_values(unet, generator))
    for key_id, name in enumerate(unet.attn_processors):
        attention = unet.get_submodule(name.removesuffix(".processor"))
        for proj in ("to_q", "to_k", "to_v", "to_out"):
            linear = attention.to_out[0] if proj == "to_out" else getattr(attention, proj)
            down = torch.randn(lora_rank, linear.in_features, generator=generator) / linear.in_features**0.5
            up = torch.randn(linear.out_features, lora_rank, generator=generator) * 0.1 / lora_rank**0.5
            weights[f"ip_adapter.{key_id}.{proj}_lora.down.weight"] = down.contiguous()
            weights[f"ip_adapter.{key_id}.{proj}_lora.up.weight"] = up.contiguous()
    return weights


__all__ = ["TINY_FACE_ID_DIM", "TINY_FACE_WEIGHT_NAME", "TINY_IP_ADAPTER_FOLDER", "TINY_IP_ADAPTER_WEIGHT_NAME", "TINY_SD",
           "build_tiny_sd", "tiny_face_adapter_dir", "tiny_face_adapter_weights", "tiny_ip_adapter_weights", "tiny_sd_dir"]
