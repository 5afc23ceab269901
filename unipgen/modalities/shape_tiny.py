"""Tiny random Shap-E pipelines (text-to-3D and image-to-3D), built offline from configs.

The configs follow diffusers' own fast tests (tests/pipelines/shap_e), minus the
`PriorTransformer(upcast_softmax=...)` argument current diffusers no longer takes: a 1-layer prior
over 32 latent tokens of width 32, a 2-layer CLIP text or vision encoder of width 32 (the
tokenizer is `unipgen.tiny`'s, the image processor a local `CLIPImageProcessor`), and a renderer
whose NeRF/STF MLP is 8 wide. Nothing is downloaded.

Two things the random weights would get wrong are set by hand, so that meshes come out:
* the marching-cubes lookup table: the real checkpoints ship it as the renderer's `mesh_decoder`
  buffers (`cases`, `masks`); random weights leave it zero, which gives no triangles. It is
  derived here (`marching_cubes_table`) in Shap-E's edge numbering;
* the field's smoothness and level: the renderer's first MLP layer is projected from the latent;
  damping its high-frequency position features keeps the random signed distance field smooth
  (a few blobs, not a sponge), and the SDF bias is set so that about a quarter of the volume is
  inside for typical latents.

Both pipelines share the renderer (same seed, same weights). Each folder is built once per seed,
atomically, on first use (about a second).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from unipgen.tiny import cached_tiny_model

TINY_SHAP_E = "tiny-random"
_VERSION = "1"
_WIDTH = 32     # CLIP width = prior embedding width
_TOKENS = 32    # latent tokens: 4 renderer layers x 8 rows
_RENDER = 8     # renderer MLP width
_OCTAVES = 2    # position-encoding octaves (of 15) the tiny field keeps
_INSIDE = 0.25  # share of the volume inside the surface for typical latents

#: Shap-E's 12 cube edges as (corner, corner); corner c = x + 2y + 4z (renderer.py's numbering).
_EDGES = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7))
#: The cube's 6 faces, corners in cyclic order.
_FACES = ((0, 2, 6, 4), (1, 3, 7, 5), (0, 1, 5, 4), (2, 3, 7, 6), (0, 1, 3, 2), (4, 5, 7, 6))


def tiny_shap_e_dir(seed: int = 0) -> Path:
    """The folder of the tiny random text-to-3D `ShapEPipeline` for `seed`, built on first use."""
    return cached_tiny_model("shap-e", _VERSION, seed, "model_index.json", partial(build_tiny_shap_e, image=False))


def tiny_shap_e_img2img_dir(seed: int = 0) -> Path:
    """The folder of the tiny random image-to-3D `ShapEImg2ImgPipeline` for `seed`, built on first use."""
    return cached_tiny_model("shap-e-img2img", _VERSION, seed, "model_index.json",
                             partial(build_tiny_shap_e, image=True))


def build_tiny_shap_e(directory: Path, seed: int = 0, image: bool = False) -> Path:
    """Save a tiny random Shap-E pipeline (text-to-3D, or image-to-3D with `image`) to `directory`."""
    import torch
    from diffusers import (
        HeunDiscreteScheduler,
        PriorTransformer,
        ShapEImg2ImgPipeline,
        ShapEPipeline,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModel,
    )

    from unipgen.tiny import build_tiny_tokenizer

    torch.manual_seed(seed)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=16, embedding_dim=_WIDTH,
                             num_embeddings=_TOKENS, embedding_proj_dim=_WIDTH, time_embed_dim=4 * _WIDTH,
                             num_layers=1, clip_embed_dim=2 * _WIDTH, additional_embeddings=0,
                             time_embed_act_fn="gelu", norm_in_type="layer",
                             embedding_proj_norm_type="layer" if image else None,
                             encoder_hid_proj_type=None, added_emb_type=None)
    renderer = tiny_renderer(seed)
    # The real checkpoints' scheduler (openai/shap-e): Karras sigmas, predicting the sample.
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                                      use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)
    torch.manual_seed(seed + 1)
    if image:
        # 32 px in 4 px patches: 64 image tokens (the real one: 256 from CLIP ViT-L/14 at 224 px)
        image_encoder = CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=4, hidden_size=_WIDTH,
                                                         intermediate_size=37, num_hidden_layers=2,
                                                         num_attention_heads=4))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        pipe: Any = ShapEImg2ImgPipeline(prior=prior, image_encoder=image_encoder, image_processor=processor,
                                         scheduler=scheduler, shap_e_renderer=renderer)
    else:
        tokenizer = build_tiny_tokenizer()
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=_WIDTH, projection_dim=_WIDTH, intermediate_size=37,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77, pad_token_id=0,
            bos_token_id=1, eos_token_id=2))
        pipe = ShapEPipeline(prior=prior, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                             shap_e_renderer=renderer)
    pipe.save_pretrained(directory)
    return directory


def tiny_renderer(seed: int = 0) -> Any:
    """The tiny `ShapERenderer`: random weights, a real marching-cubes table, a smooth random field."""
    import torch
    from diffusers.pipelines.shap_e import ShapERenderer

    torch.manual_seed(seed + 2)
    renderer = ShapERenderer(param_shapes=((_RENDER, 93), (_RENDER, _RENDER), (_RENDER, _RENDER), (_RENDER, _RENDER)),
                             d_latent=_WIDTH, d_hidden=_RENDER, n_output=12, background=(255.0, 255.0, 255.0))
    cases, masks = marching_cubes_table()
    with torch.no_grad():
        renderer.mesh_decoder.cases.copy_(cases)
        renderer.mesh_decoder.masks.copy_(masks)
        # Layer 0's rows are LayerNorm(latent projection) + bias over the 93 position features:
        # [x, y, z, sin(2^k x...) for k < 15, cos(2^k x...) for k < 15]. Keep x and low octaves.
        first = renderer.params_proj.projections["nerstf__mlp__0__weight"]
        keep = torch.zeros(93)
        keep[:3] = 1.0
        for offset in (3, 48):
            keep[offset:offset + 3 * _OCTAVES] = 1.0
        first.norm.weight.mul_(keep)
        first.norm.bias.mul_(keep)
        first.proj.bias.view(_RENDER, 93).mul_(keep)
        renderer.mlp.mlp[-1].bias[0] -= _sdf_level(renderer, seed)
    return renderer


def _sdf_level(renderer: Any, seed: int) -> float:
    """The SDF pre-activation above which `_INSIDE` of a coarse grid lies, over a few random latents."""
    import torch
    from diffusers.pipelines.shap_e.renderer import volume_query_points

    generator = torch.Generator().manual_seed(seed + 3)
    points = volume_query_points(renderer.volume, 16)[None]
    values = []
    for _ in range(4):
        latent = torch.randn(1, _TOKENS, _WIDTH, generator=generator).clamp(-1, 1)
        for name, param in renderer.params_proj(latent).items():
            renderer.mlp.get_parameter(name.removeprefix("nerstf.")).copy_(param.squeeze(0))
        out = renderer.mlp(position=points, direction=None, ts=None, nerf_level="fine", rendering_mode="stf")
        values.append(torch.atanh(out.signed_distance.clamp(-0.999999, 0.999999)).flatten())
    return float(torch.quantile(torch.cat(values), 1.0 - _INSIDE))


def marching_cubes_table() -> tuple[Any, Any]:
    """Shap-E's marching-cubes lookup: `cases` [256, 5, 3] edge indices, `masks` [256, 5] used triangles.

    Case bit c is set when corner c is inside (field > 0). On each cube face the surface crosses
    the edges whose corners differ; on a face with four crossings (diagonal corners alike) the
    corners of the minority sign are cut off, as in the classic table. The face segments close
    into loops, each fanned into triangles wound counter-clockwise seen from outside (normals
    point out). At most 4 triangles per cube.
    """
    import numpy as np
    import torch

    index = {frozenset(edge): number for number, edge in enumerate(_EDGES)}
    corner = [np.array([c & 1, (c >> 1) & 1, (c >> 2) & 1], dtype=float) for c in range(8)]
    cases = torch.zeros(256, 5, 3, dtype=torch.long)
    masks = torch.zeros(256, 5, dtype=torch.bool)
    for case in range(256):
        inside = [(case >> c) & 1 for c in range(8)]
        cut = 1 if sum(inside) <= 4 else 0  # the sign whose corners an ambiguous face separates
        links: dict[int, list[int]] = {}
        for face in _FACES:
            sides = [index[frozenset((face[i], face[(i + 1) % 4]))] for i in range(4)]
            crossed = [sides[i] for i in range(4) if inside[face[i]] != inside[face[(i + 1) % 4]]]
            pairs = [crossed] if len(crossed) == 2 else [
                (sides[i - 1], sides[i]) for i in range(4) if len(crossed) == 4 and inside[face[i]] == cut]
            for a, b in pairs:
                links.setdefault(a, []).append(b)
                links.setdefault(b, []).append(a)
        triangles: list[list[int]] = []
        seen: set[int] = set()
        for start in sorted(links):
            if start in seen:
                continue
            loop, previous = [start], None
            while True:  # walk the loop: each crossed edge has exactly two neighbours
                current = loop[-1]
                following = next(n for n in links[current] if n != previous)
                if following == start:
                    break
                loop.append(following)
                previous = current
            seen.update(loop)
            points = [(corner[_EDGES[e][0]] + corner[_EDGES[e][1]]) / 2 for e in loop]
            area = sum((np.cross(points[i], points[(i + 1) % len(points)]) for i in range(len(points))), np.zeros(3))
            outward = sum((corner[c] * (1 - 2 * inside[c]) for e in loop for c in _EDGES[e]), np.zeros(3))
            if area @ outward < 0:
                loop.reverse()
            triangles += [[loop[0], loop[i], loop[i + 1]] for i in range(1, len(loop) - 1)]
        for number, triangle in enumerate(triangles):
            cases[case, number] = torch.tensor(triangle)
            masks[case, number] = True
    return cases, masks


__all__ = ["TINY_SHAP_E", "build_tiny_shap_e", "marching_cubes_table", "tiny_renderer", "tiny_shap_e_dir",
           "tiny_shap_e_img2img_dir"]
