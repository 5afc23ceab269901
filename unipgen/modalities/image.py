"""Images with diffusers: text-to-image, personalized by IP-Adapter, LoRA or textual inversion.

`DiffusersImageBackend` loads one Stable Diffusion pipeline (a Hub id, a local folder, or
"tiny-random": a tiny random-weight pipeline built offline from configs, for tests and demos)
and serves batches of requests. Each personalization is opt-in per request and undone after it:
IP-Adapter weights are unloaded, LoRAs disabled (kept loaded in a small LRU cache), textual
inversion tokens removed, so a plain request after a personalized one gives the same bytes as
on a fresh pipeline.

The `ip_adapter` option names IP-Adapter weights as "repo:subfolder:weight_name" with an
optional ":image_encoder_folder" (diffusers' `load_ip_adapter` arguments), e.g.
"h94/IP-Adapter:models:ip-adapter_sd15.safetensors". The tiny pipeline ships its own random
IP-Adapter, used when the option is left out.
"""

from __future__ import annotations

import io
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.schema.context import AdapterRef, UserContext
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest

if TYPE_CHECKING:
    import torch

TINY_SD = "tiny-random"
_VERSION = "1"
#: LoRA weight file name as written by `StableDiffusionPipeline.save_lora_weights`.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_LORA_CACHE = 8  # LoRAs kept loaded (disabled when unused); more are deleted, oldest first


# ---------------------------------------------------------------- the tiny pipeline, offline


def tiny_sd_dir(seed: int = 0) -> Path:
    """The folder of the tiny Stable Diffusion pipeline for `seed`, built on first use."""
    directory = Path(tempfile.gettempdir()) / "unipgen-tiny" / f"sd-v{_VERSION}-seed{seed}"
    if not (directory / "model_index.json").is_file():
        _build_atomically(directory, seed)
    return directory


def _build_atomically(directory: Path, seed: int) -> None:
    """Build into a scratch folder and rename it, so that concurrent builders never see half."""
    import os
    import shutil

    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    build_tiny_sd(scratch, seed)
    try:
        os.rename(scratch, directory)
    except OSError:  # another process won the race: its copy is as good as ours
        shutil.rmtree(scratch, ignore_errors=True)


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

    # The tokenizer the tiny CLIP uses, trained offline on a small word list.
    from unipgen.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
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
    pipe.save_pretrained(directory)
    _save_tiny_ip_adapter(directory / "ip_adapter", unet, seed)
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
    save_file(weights, str(directory / "ip-adapter_tiny.safetensors"))


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
    key_id = 1
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


# ---------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _IpAdapterSpec:
    """Where IP-Adapter weights live: `load_ip_adapter`'s arguments."""

    source: str
    subfolder: str
    weight_name: str
    image_encoder_folder: str = "image_encoder"

    @classmethod
    def parse(cls, text: str) -> _IpAdapterSpec:
        """Read "repo:subfolder:weight_name[:image_encoder_folder]"."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or not all(parts):
            raise InvalidInputError(
                f"ip_adapter {text!r}: expected 'repo:subfolder:weight_name[:image_encoder_folder]'")
        return cls(*parts)


@dataclass(frozen=True)
class _Job:
    """How one request is run: the group key of requests that can share a pipeline call."""

    method: str
    steps: int
    guidance_scale: float
    width: int | None
    height: int | None
    loras: tuple[tuple[str, float], ...] = ()            # (adapter name, weight)
    tokens: tuple[tuple[str, str], ...] = ()             # (token, blob sha) for textual inversion
    subject_shas: tuple[str, ...] = ()                   # IP-Adapter reference images
    ip_scale: float = 0.0


class DiffusersImageBackend:
    """Stable Diffusion text-to-image with IP-Adapter, LoRA and textual inversion personalization."""

    modality = "image"
    methods = frozenset({"prompt_only", "ip_adapter", "lora", "textual_inversion"})

    def __init__(self, ref: str = TINY_SD, device: str = "cpu", dtype: str = "float32", steps: int = 2,
                 guidance_scale: float = 5.0, width: int | None = None, height: int | None = None,
                 ip_adapter: str | None = None) -> None:
        self.ref = ref
        self.device = device
        self.dtype = dtype
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.width = width
        self.height = height
        self.ip_adapter = ip_adapter
        self._pipe: Any = None
        # Parsed now: a malformed profile fails when built, not on the first request.
        self._ip_spec = _IpAdapterSpec.parse(ip_adapter) if ip_adapter is not None else None
        self._loras: OrderedDict[str, str] = OrderedDict()  # adapter name → key, most recent last
        self._image_encoder: Any = None  # kept across IP-Adapter unloads: reloading it is slow
        self._workdir: Path | None = None

    # -- loading

    def setup(self) -> None:
        """Load the pipeline once (building the tiny one on first use)."""
        if self._pipe is not None:
            return
        import torch
        from diffusers import AutoPipelineForText2Image

        source = str(tiny_sd_dir()) if self.ref == TINY_SD else self.ref
        # AutoPipeline picks SD, SD 2.x (sd-turbo) or SDXL from model_index.json.
        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=getattr(torch, self.dtype))
        pipe.set_progress_bar_config(disable=True)
        self._pipe = pipe.to(self.device)
        if self._ip_spec is None and self.ref == TINY_SD:
            # The tiny pipeline's own random IP-Adapter (see `_save_tiny_ip_adapter`).
            self._ip_spec = _IpAdapterSpec(source, "ip_adapter", "ip-adapter_tiny.safetensors")
        self._workdir = Path(tempfile.mkdtemp(prefix="unipgen-adapters-"))

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (for inspection and tests)."""
        self.setup()
        return self._pipe

    # -- generation

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One list of `num_outputs` PNGs per request, in order; requests with the same job share a call."""
        self.setup()
        jobs = [self._job(request, fetch) for request in requests]
        results: list[list[GeneratedOutput]] = [[] for _ in requests]
        groups: dict[_Job, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job, []).append(index)
        for job, indices in groups.items():
            outputs = self._run(job, [requests[i] for i in indices], fetch)
            for index, produced in zip(indices, outputs, strict=True):
                results[index] = produced
        self._trim_loras()  # after the batch: every LoRA it named stayed loaded while it ran
        return results

    def _job(self, request: GenerationRequest, fetch: BlobFetcher) -> _Job:
        """Resolve a request's method and adapters (loading LoRAs it names) into its group key."""
        plan, options = request.plan, request.options
        refs = [_find_adapter(request.context, key) for key in plan.adapters]
        for ref in refs:  # checked before loading anything
            if ref.method not in ("lora", "textual_inversion"):
                raise InvalidInputError(f"adapter {ref.key!r}: method {ref.method!r} is not an image adapter")
        loras = tuple((self._load_lora(ref, fetch), float((ref.meta or {}).get("weight", 1.0)))
                      for ref in refs if ref.method == "lora")
        tokens = tuple((_ti_token(ref), _blob_sha(ref)) for ref in refs if ref.method == "textual_inversion")
        shas = _subject_shas(request) if plan.method == "ip_adapter" and self._ip_spec is not None else ()
        method = plan.method if plan.method != "ip_adapter" or shas else "prompt_only"
        return _Job(method=method, steps=options.steps or self.steps,
                    guidance_scale=self.guidance_scale if options.guidance_scale is None else options.guidance_scale,
                    width=options.width or self.width, height=options.height or self.height,
                    loras=loras, tokens=tokens, subject_shas=shas,
                    ip_scale=options.ip_adapter_scale if shas else 0.0)

    def _run(self, job: _Job, requests: list[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One pipeline call for requests of the same job, with its personalization applied then undone."""
        self._activate_loras(job.loras)
        kwargs: dict[str, Any] = {}
        if job.subject_shas:
            kwargs["ip_adapter_image"] = [[_open_image(fetch(sha), sha) for sha in job.subject_shas]]
            self._load_ip_adapter(job.ip_scale)
        if job.tokens:
            self._load_tokens(job.tokens, fetch)
        try:
            images = self._call(job, requests, kwargs)
        finally:  # undo: the next request sees the base pipeline
            if job.tokens:
                self._pipe.unload_textual_inversion([token for token, _ in job.tokens])
            if job.subject_shas:
                self._image_encoder = self._pipe.image_encoder
                self._pipe.unload_ip_adapter()
        return self._package(job, requests, images)

    def _call(self, job: _Job, requests: list[GenerationRequest], kwargs: dict[str, Any]) -> list[Any]:
        """Run the pipeline: one prompt and one seeded generator per output image."""
        import torch

        prompts, negatives, generators = [], [], []
        for request in requests:
            for offset in range(request.options.num_outputs):
                prompts.append(request.plan.prompt)
                negatives.append(request.plan.negative_prompt)
                # Output j of a request uses seed + j: the same bytes whatever else is in the batch call.
                generators.append(torch.Generator(self.device).manual_seed(request.options.seed + offset))
        return self._pipe(prompt=prompts, negative_prompt=negatives, num_inference_steps=job.steps,
                          guidance_scale=job.guidance_scale, width=job.width, height=job.height,
                          generator=generators, output_type="pil", **kwargs).images

    def _package(self, job: _Job, requests: list[GenerationRequest], images: list[Any]) -> list[list[GeneratedOutput]]:
        """PNG bytes with how each image was made."""
        results, position = [], 0
        for request in requests:
            produced = []
            for offset in range(request.options.num_outputs):
                image = images[position]
                position += 1
                meta = {"model": self.ref, "method": job.method, "prompt": request.plan.prompt,
                        "negative_prompt": request.plan.negative_prompt, "seed": request.options.seed + offset,
                        "steps": job.steps, "guidance_scale": job.guidance_scale, "width": image.width,
                        "height": image.height, "adapters": list(request.plan.adapters),
                        "subject": request.plan.subject}
                if job.method != request.plan.method:
                    meta["requested_method"] = request.plan.method  # fell back: no reference images/weights
                if job.subject_shas:
                    meta["ip_adapter_scale"] = job.ip_scale
                produced.append(GeneratedOutput(data=_png(image), media_type="image/png", meta=meta))
            results.append(produced)
        return results

    # -- IP-Adapter

    def _load_ip_adapter(self, scale: float) -> None:
        """Load the configured IP-Adapter (and its image encoder) and set its scale."""
        spec = self._ip_spec
        assert spec is not None  # _job only asks for IP-Adapter when it is configured
        if self._image_encoder is not None:  # load_ip_adapter loads an encoder only when none is set
            self._pipe.register_modules(image_encoder=self._image_encoder)
        self._pipe.load_ip_adapter(spec.source, subfolder=spec.subfolder, weight_name=spec.weight_name,
                                   image_encoder_folder=spec.image_encoder_folder)
        self._pipe.set_ip_adapter_scale(scale)

    # -- LoRA

    def _load_lora(self, ref: AdapterRef, fetch: BlobFetcher) -> str:
        """Load a LoRA adapter blob once (LRU cache); its adapter name is the sha's first 16 digits."""
        sha = _blob_sha(ref)
        name = sha[:16]
        if name in self._loras:
            self._loras.move_to_end(name)
            return name
        path = self._write_blob(ref, fetch, LORA_WEIGHT_NAME)
        try:
            self._pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except Exception as exc:  # safetensors/PEFT/diffusers raise many kinds for a bad file
            _drop_partial_adapter(self._pipe, name)
            raise InvalidInputError(f"adapter {ref.key!r} is not a diffusers LoRA safetensors file: {exc}") from exc
        self._loras[name] = ref.key
        return name

    def _trim_loras(self) -> None:
        """Delete the least recently used LoRAs beyond the cache size."""
        while len(self._loras) > _LORA_CACHE:
            old, _ = self._loras.popitem(last=False)
            self._pipe.delete_adapters(old)

    def _activate_loras(self, loras: tuple[tuple[str, float], ...]) -> None:
        """Enable exactly `loras` with their weights, or switch LoRA off when there are none."""
        if not self._loras:
            return
        if not loras:
            self._pipe.disable_lora()
            return
        self._pipe.enable_lora()
        self._pipe.set_adapters([name for name, _ in loras], adapter_weights=[weight for _, weight in loras])

    # -- textual inversion

    def _load_tokens(self, tokens: tuple[tuple[str, str], ...], fetch: BlobFetcher) -> None:
        """Add each learned token's embedding to the tokenizer and text encoder."""
        from safetensors.torch import load as load_safetensors

        for token, sha in tokens:
            try:
                state = load_safetensors(fetch(sha))
                self._pipe.load_textual_inversion(state, token=token)
            except Exception as exc:  # a corrupt file or a wrong embedding size
                raise InvalidInputError(f"textual inversion {token!r} (blob {sha[:12]}): {exc}") from exc

    def _write_blob(self, ref: AdapterRef, fetch: BlobFetcher, file_name: str) -> Path:
        """Write an adapter's bytes to its own folder (diffusers loads adapters from files)."""
        assert self._workdir is not None
        folder = self._workdir / _blob_sha(ref)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name
        path.write_bytes(fetch(_blob_sha(ref)))
        return path


# ---------------------------------------------------------------- helpers


def _find_adapter(context: UserContext, key: str) -> AdapterRef:
    """The adapter the plan names, among the user's and their subjects' adapters."""
    refs = list(context.conditioning.adapters)
    for subject in context.conditioning.subjects:
        refs.extend(subject.adapters)
    for ref in refs:
        if ref.key == key:
            return ref
    raise NotFoundError(f"adapter {key!r} is not in the request's context")


def _blob_sha(ref: AdapterRef) -> str:
    if not ref.blob_sha:
        raise NotFoundError(f"adapter {ref.key!r} has no stored file")
    return ref.blob_sha


def _ti_token(ref: AdapterRef) -> str:
    token = (ref.meta or {}).get("token")
    if not token:
        raise InvalidInputError(f"textual inversion adapter {ref.key!r} has no meta['token']")
    return str(token)


def _subject_shas(request: GenerationRequest) -> tuple[str, ...]:
    """The reference images of the plan's subject (empty when it has none)."""
    for subject in request.context.conditioning.subjects:
        if subject.key == request.plan.subject:
            return tuple(subject.image_shas)
    return ()


def _open_image(data: bytes, sha: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UnsupportedMediaError(f"reference image {sha[:12]} is not an image: {exc}") from exc


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _drop_partial_adapter(pipe: Any, name: str) -> None:
    """Remove what a failed LoRA load may have injected, so the pipeline stays usable."""
    import contextlib

    with contextlib.suppress(Exception):  # nothing was injected: nothing to remove
        pipe.delete_adapters(name)


__all__ = ["LORA_WEIGHT_NAME", "TINY_SD", "DiffusersImageBackend", "build_tiny_sd", "tiny_ip_adapter_weights",
           "tiny_sd_dir"]
