"""Images with diffusers: text-to-image, personalized by IP-Adapter, LoRA or textual inversion.

`DiffusersImageBackend` loads one Stable Diffusion pipeline (a Hub id, a local folder, or
"tiny-random": a tiny random-weight pipeline built offline from configs, for tests and demos)
and serves batches of requests. Each personalization is opt-in per request and undone after it:
IP-Adapter weights are unloaded, LoRAs disabled (kept loaded in a small LRU cache), textual
inversion tokens removed, so a plain request after a personalized one gives the same bytes as
on a fresh pipeline.

The `ip_adapter` option names IP-Adapter weights as "repo:subfolder:weight_name" with an
optional ":image_encoder_folder" (diffusers' `load_ip_adapter` arguments), e.g.
"h94/IP-Adapter:models:ip-adapter_sd15.safetensors"; the subfolder may be empty. The
`face_adapter` option names IP-Adapter FaceID weights the same way, with no image encoder:
FaceID takes the user's face embedding (`conditioning.face_embeddings`, averaged), not an
image, e.g. "h94/IP-Adapter-FaceID::ip-adapter-faceid_sd15.bin". The tiny pipeline ships its own
random IP-Adapter and FaceID weights (`image_tiny`), used when the options are left out.
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
from unipgen.modalities.image_tiny import (
    TINY_FACE_WEIGHT_NAME,
    TINY_SD,
    build_tiny_sd,
    tiny_face_adapter_dir,
    tiny_ip_adapter_weights,
    tiny_sd_dir,
)
from unipgen.schema.context import AdapterRef, UserContext
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest

if TYPE_CHECKING:
    import torch

#: LoRA weight file name as written by `StableDiffusionPipeline.save_lora_weights`.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_LORA_CACHE = 8  # LoRAs kept loaded (disabled when unused); more are deleted, oldest first
#: The job method of a self-portrait conditioned on the user's face (public meta: "ip_adapter").
_FACE_METHOD = "ip_adapter_faceid"


# ---------------------------------------------------------------- the backend


@dataclass(frozen=True)
class _IpAdapterSpec:
    """Where IP-Adapter weights live: `load_ip_adapter`'s arguments."""

    source: str
    subfolder: str
    weight_name: str
    image_encoder_folder: str | None = "image_encoder"  # None: no encoder (FaceID takes embeddings)

    @classmethod
    def parse(cls, text: str, option: str = "ip_adapter", encoder: bool = True) -> _IpAdapterSpec:
        """Read "repo:subfolder:weight_name[:image_encoder_folder]" (the subfolder may be empty)."""
        parts = text.split(":")
        sizes = (3, 4) if encoder else (3,)
        if len(parts) not in sizes or not parts[0] or not all(parts[2:]):
            shape = "repo:subfolder:weight_name" + ("[:image_encoder_folder]" if encoder else "")
            raise InvalidInputError(f"{option} {text!r}: expected {shape!r}")
        return cls(*parts) if encoder else cls(*parts, image_encoder_folder=None)


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
    ip_scale: float = 0.0                                # IP-Adapter (subject or face) scale
    # FaceID: the user's mean face embedding. Part of the key because the pipeline repeats
    # `ip_adapter_image_embeds` for every prompt of a call: one face per call.
    face: tuple[float, ...] = ()


class DiffusersImageBackend:
    """Stable Diffusion text-to-image with IP-Adapter (subject or face), LoRA and textual inversion."""

    modality = "image"
    methods = frozenset({"prompt_only", "ip_adapter", "lora", "textual_inversion"})

    def __init__(self, ref: str = TINY_SD, device: str = "cpu", dtype: str = "float32", steps: int = 2,
                 guidance_scale: float = 5.0, width: int | None = None, height: int | None = None,
                 ip_adapter: str | None = None, face_adapter: str | None = None) -> None:
        self.ref = ref
        self.device = device
        self.dtype = dtype
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.width = width
        self.height = height
        self.ip_adapter = ip_adapter
        self.face_adapter = face_adapter
        self._pipe: Any = None
        # Parsed now: a malformed profile fails when built, not on the first request.
        self._ip_spec = _IpAdapterSpec.parse(ip_adapter) if ip_adapter is not None else None
        self._face_spec = (_IpAdapterSpec.parse(face_adapter, "face_adapter", encoder=False)
                           if face_adapter is not None else None)
        self._face_dim: int | None = None  # the FaceID id embedding size, read from the weights once
        self._loras: OrderedDict[str, str] = OrderedDict()  # adapter name → key, most recent last
        self.adapter_cache_stats = {"hits": 0, "misses": 0}  # LoRA uses served loaded vs loaded for them
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
        method, shas = self._conditioning(request)
        face = _mean_face(request.context.conditioning.face_embeddings) if method == _FACE_METHOD else ()
        return _Job(method=method, steps=options.steps or self.steps,
                    guidance_scale=self.guidance_scale if options.guidance_scale is None else options.guidance_scale,
                    width=options.width or self.width, height=options.height or self.height,
                    loras=loras, tokens=tokens, subject_shas=shas,
                    ip_scale=options.ip_adapter_scale if shas or face else 0.0, face=face)

    def _conditioning(self, request: GenerationRequest) -> tuple[str, tuple[str, ...]]:
        """The method a request runs with, and its subject's reference images for IP-Adapter.

        IP-Adapter conditions on the subject's photos; with no subject, on the user's face
        (FaceID); with neither, or no weights for it, the request falls back to its prompt.
        """
        plan = request.plan
        if plan.method != "ip_adapter":
            return plan.method, ()
        shas = _subject_shas(request) if self._ip_spec is not None else ()
        if shas:
            return "ip_adapter", shas
        if plan.subject is None and request.context.conditioning.face_embeddings and self._face_weights():
            self._check_face_size(request)
            return _FACE_METHOD, ()
        return "prompt_only", ()

    def _run(self, job: _Job, requests: list[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One pipeline call for requests of the same job, with its personalization applied then undone."""
        self._activate_loras(job.loras)
        kwargs: dict[str, Any] = {}
        if job.subject_shas:
            kwargs["ip_adapter_image"] = [[_open_image(fetch(sha), sha) for sha in job.subject_shas]]
            self._load_ip_adapter(job.ip_scale)
        if job.method == _FACE_METHOD:
            kwargs["ip_adapter_image_embeds"] = [self._face_embeds(job)]
            self._load_face_adapter(job.ip_scale, job.loras)
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
            if job.method == _FACE_METHOD:
                self._unload_face_adapter()
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
                method = "ip_adapter" if job.method == _FACE_METHOD else job.method
                meta = {"model": self.ref, "method": method, "prompt": request.plan.prompt,
                        "negative_prompt": request.plan.negative_prompt, "seed": request.options.seed + offset,
                        "steps": job.steps, "guidance_scale": job.guidance_scale, "width": image.width,
                        "height": image.height, "adapters": list(request.plan.adapters),
                        "subject": request.plan.subject}
                if method != request.plan.method:
                    meta["requested_method"] = request.plan.method  # fell back: no reference images/weights
                if job.subject_shas or job.method == _FACE_METHOD:
                    meta["ip_adapter_scale"] = job.ip_scale
                    meta["conditioning"] = "subject" if job.subject_shas else "face"
                if job.method == _FACE_METHOD:
                    meta["face_embeddings"] = len(request.context.conditioning.face_embeddings)
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

    # -- IP-Adapter FaceID: the user's face

    def _face_weights(self) -> _IpAdapterSpec | None:
        """The FaceID weights: configured, or the tiny pipeline's own (built on first use)."""
        if self._face_spec is None and self.ref == TINY_SD:
            self._face_spec = _IpAdapterSpec(str(tiny_face_adapter_dir()), "", TINY_FACE_WEIGHT_NAME, None)
        return self._face_spec

    def face_id_dim(self) -> int:
        """The id embedding size the FaceID weights take (loaded once to read it, then unloaded)."""
        if self._face_dim is None:
            from diffusers.models.embeddings import IPAdapterFaceIDImageProjection

            self.setup()
            if self._face_weights() is None:
                raise InvalidInputError(f"model {self.ref!r}: no face_adapter configured")
            self._load_face_adapter(0.0, ())
            try:
                projection = self._pipe.unet.encoder_hid_proj.image_projection_layers[0]
            finally:
                self._unload_face_adapter()
            if not isinstance(projection, IPAdapterFaceIDImageProjection):
                raise InvalidInputError(f"face_adapter {self.face_adapter!r} is not IP-Adapter FaceID weights "
                                        f"(its projection is {type(projection).__name__})")
            self._face_dim = int(projection.ff.net[0].proj.in_features)
        return self._face_dim

    def _check_face_size(self, request: GenerationRequest) -> None:
        """Refuse face embeddings whose size is not the adapter's id embedding size."""
        sizes = sorted({len(e) for e in request.context.conditioning.face_embeddings})
        expected = self.face_id_dim()
        if sizes != [expected]:
            raise InvalidInputError(
                f"user {request.context.user!r}: face embeddings of size {'/'.join(map(str, sizes))}, but the "
                f"FaceID adapter takes {expected}-d id embeddings (h94's FaceID weights take 512-d ArcFace "
                "embeddings from insightface; the dlib face encoder gives 128-d)")

    def _face_embeds(self, job: _Job) -> torch.Tensor:
        """`ip_adapter_image_embeds[0]` for the job's face: (1 prompt, 1 image, dim), or (2, 1, dim).

        The pipeline repeats it for every prompt of the call. With classifier-free guidance it
        splits the tensor in halves on dim 0, negative first: zeros here, as in diffusers' docs.
        """
        import torch

        embeds = torch.tensor(job.face).view(1, 1, -1).to(device=self.device, dtype=self._pipe.unet.dtype)
        guided = job.guidance_scale > 1 and self._pipe.unet.config.time_cond_proj_dim is None
        return torch.cat([torch.zeros_like(embeds), embeds]) if guided else embeds

    def _load_face_adapter(self, scale: float, loras: tuple[tuple[str, float], ...]) -> None:
        """Load the FaceID weights with no image encoder; their own LoRA joins the request's."""
        spec = self._face_weights()
        assert spec is not None  # _conditioning only picks FaceID when it has weights
        self._pipe.load_ip_adapter(spec.source, subfolder=spec.subfolder, weight_name=spec.weight_name,
                                   image_encoder_folder=None)
        self._pipe.set_ip_adapter_scale(scale)
        faceid = self._face_loras()
        if faceid:  # h94's FaceID weights carry a LoRA, loaded as "faceid_0"; active even if LoRA was off
            self._pipe.enable_lora()
            self._pipe.set_adapters([*faceid, *(name for name, _ in loras)],
                                    adapter_weights=[1.0] * len(faceid) + [weight for _, weight in loras])

    def _unload_face_adapter(self) -> None:
        """Undo `_load_face_adapter`: `unload_ip_adapter` leaves FaceID's LoRA in, so delete it too."""
        self._pipe.unload_ip_adapter()
        faceid = self._face_loras()
        if faceid:
            self._pipe.delete_adapters(faceid)

    def _face_loras(self) -> list[str]:
        """The LoRA adapters `load_ip_adapter` added for FaceID weights ("faceid_0", ...)."""
        return [name for name in getattr(self._pipe.unet, "peft_config", None) or {} if name.startswith("faceid_")]

    # -- LoRA

    def _load_lora(self, ref: AdapterRef, fetch: BlobFetcher) -> str:
        """Load a LoRA adapter blob once (LRU cache); its adapter name is the sha's first 16 digits."""
        sha = _blob_sha(ref)
        name = sha[:16]
        if name in self._loras:
            self._loras.move_to_end(name)
            self.adapter_cache_stats["hits"] += 1
            return name
        self.adapter_cache_stats["misses"] += 1
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


def _mean_face(embeddings: list[list[float]]) -> tuple[float, ...]:
    """The mean of a user's face embeddings, L2-normalised (as the per-photo embeddings are)."""
    import torch

    mean = torch.tensor(embeddings, dtype=torch.float64).mean(dim=0)
    norm = mean.norm()
    return tuple((mean / norm if norm > 0 else mean).float().tolist())


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


__all__ = ["LORA_WEIGHT_NAME", "TINY_SD", "DiffusersImageBackend", "build_tiny_sd", "tiny_face_adapter_dir",
           "tiny_ip_adapter_weights", "tiny_sd_dir"]
