"""A user's personalization on a diffusers pipeline, put in and taken out: shared by image and video.

The image backend (Stable Diffusion) and the video backend (AnimateDiff: the same UNet layers
with motion modules between them) personalize alike, so both extend `PersonalizedDiffusion`:
`generate` is the recipe `job` → `run` (personalize, `call` the pipeline, undo) → `package`;
each backend loads its pipeline (`load_pipeline`) and says how a job's requests become bytes
(`call`, `package`). Requests with the same `DiffusionJob` share a pipeline call.

The personalization itself is a component, `DiffusersPersonalizer`: `applied(job, fetch)` loads
what a job asks for and undoes it on exit, so a plain request after a personalized one gives the
same bytes as on a fresh pipeline. Each way in has its way out:

* IP-Adapter on a subject's photos, or FaceID on the user's face: `ip_adapter.SubjectIpAdapter`
  and `ip_adapter.FaceIdAdapter`, each with `load` / `unload`;
* LoRA: `load_lora` keeps a user's LoRA loaded in a small LRU cache, `activate_loras` switches
  exactly a job's LoRAs on (or LoRA off), `trim_loras` deletes the least recently used;
* textual inversion: `load_tokens` / `unload_tokens`.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.modalities.image_tiny import (
    TINY_IP_ADAPTER_FOLDER,
    TINY_IP_ADAPTER_WEIGHT_NAME,
    TINY_SD,
    tiny_sd_dir,
)
from unipgen.modalities.ip_adapter import FaceIdAdapter, IpAdapterSpec, SubjectIpAdapter, mean_face
from unipgen.schema.context import AdapterRef, UserContext
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import is_random

if TYPE_CHECKING:
    from PIL import Image

#: LoRA weight file name as written by `StableDiffusionPipeline.save_lora_weights`.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
#: LoRAs kept loaded (disabled when unused); more are deleted, oldest first.
LORA_CACHE = 8
#: The job method of a request conditioned on the user's face (its outputs' meta says "ip_adapter").
FACE_METHOD = "ip_adapter_faceid"


@dataclass(frozen=True)
class DiffusionJob:
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

    @property
    def by_face(self) -> bool:
        """Whether the job conditions on the user's face (IP-Adapter FaceID)."""
        return self.method == FACE_METHOD

    @property
    def applied_method(self) -> str:
        """The plan method the job applies, as its outputs' meta names it."""
        return "ip_adapter" if self.by_face else self.method

    def conditioning_meta(self, request: GenerationRequest) -> dict[str, Any]:
        """What an output's meta adds on the job's personalization: a fallback, the IP-Adapter used."""
        meta: dict[str, Any] = {}
        if self.applied_method != request.plan.method:
            meta["requested_method"] = request.plan.method  # fell back: no reference images, face or weights
        if self.subject_shas or self.by_face:
            meta["ip_adapter_scale"] = self.ip_scale
            meta["conditioning"] = "subject" if self.subject_shas else "face"
        return meta


class DiffusersPersonalizer:
    """Puts a job's IP-Adapter or FaceID, LoRAs and textual inversion tokens into a pipeline, and out."""

    def __init__(self, ip_adapter: str | None = None, face_adapter: str | None = None, device: str = "cpu") -> None:
        # Parsed now: a malformed profile fails when built, not on the first request.
        self.ip_spec = IpAdapterSpec.parse(ip_adapter) if ip_adapter is not None else None
        self.face_spec = (IpAdapterSpec.parse(face_adapter, "face_adapter", encoder=False)
                          if face_adapter is not None else None)
        self.face_adapter = face_adapter
        self.device = device
        self.pipe: Any = None
        self.subject: SubjectIpAdapter | None = None  # None: no IP-Adapter weights for subjects
        self.face: FaceIdAdapter | None = None
        self.adapter_cache_stats = {"hits": 0, "misses": 0}  # LoRA uses served loaded vs loaded for them
        self._loras: OrderedDict[str, str] = OrderedDict()  # adapter name → key, most recent last
        self._workdir: Path | None = None

    def attach(self, pipe: Any, tiny_source: str | None = None) -> None:
        """Personalize `pipe` from now on. `tiny_source`: the tiny pipeline's folder, whose own
        random IP-Adapter and FaceID weights stand in for the ones not configured."""
        self.pipe = pipe
        spec = self.ip_spec
        if spec is None and tiny_source is not None:
            spec = IpAdapterSpec(tiny_source, TINY_IP_ADAPTER_FOLDER, TINY_IP_ADAPTER_WEIGHT_NAME)
        self.subject = SubjectIpAdapter(pipe, spec) if spec is not None else None
        self.face = FaceIdAdapter(pipe, self.face_spec, self.face_adapter, self.device, tiny=tiny_source is not None)
        self._workdir = Path(tempfile.mkdtemp(prefix="unipgen-adapters-"))

    # -- a request's job

    def job(self, request: GenerationRequest, fetch: BlobFetcher, steps: int, guidance_scale: float,
            width: int | None, height: int | None) -> DiffusionJob:
        """Resolve a request's method and adapters (loading LoRAs it names) into its group key.

        `steps`, `guidance_scale`, `width` and `height` are the backend's defaults; the request's
        options override them.
        """
        plan, options = request.plan, request.options
        refs = [_find_adapter(request.context, key) for key in plan.adapters]
        for ref in refs:  # checked before loading anything
            if ref.method not in ("lora", "textual_inversion"):
                raise InvalidInputError(f"adapter {ref.key!r}: method {ref.method!r} is not an image adapter")
        loras = tuple((self.load_lora(ref, fetch), float((ref.meta or {}).get("weight", 1.0)))
                      for ref in refs if ref.method == "lora")
        tokens = tuple((_ti_token(ref), _blob_sha(ref)) for ref in refs if ref.method == "textual_inversion")
        method, shas = self.conditioning(request)
        face = mean_face(request.context.conditioning.face_embeddings) if method == FACE_METHOD else ()
        return DiffusionJob(method=method, steps=options.steps or steps,
                            guidance_scale=guidance_scale if options.guidance_scale is None else options.guidance_scale,
                            width=options.width or width, height=options.height or height,
                            loras=loras, tokens=tokens, subject_shas=shas,
                            ip_scale=options.ip_adapter_scale if shas or face else 0.0, face=face)

    def conditioning(self, request: GenerationRequest) -> tuple[str, tuple[str, ...]]:
        """The method a request runs with, and its subject's reference images for IP-Adapter.

        IP-Adapter conditions on the subject's photos; with no subject, on the user's face
        (FaceID); with neither, or no weights for it, the request falls back to its prompt.
        """
        plan = request.plan
        if plan.method != "ip_adapter":
            return plan.method, ()
        shas = _subject_shas(request) if self.subject is not None else ()
        if shas:
            return "ip_adapter", shas
        face = self.face
        if plan.subject is None and request.context.conditioning.face_embeddings and face and face.weights():
            face.check_size(request)
            return FACE_METHOD, ()
        return "prompt_only", ()

    @contextlib.contextmanager
    def applied(self, job: DiffusionJob, fetch: BlobFetcher) -> Iterator[dict[str, Any]]:
        """Load `job`'s personalization, yield the pipeline arguments it adds, and undo it on exit."""
        self.activate_loras(job.loras)
        kwargs: dict[str, Any] = {}
        if job.subject_shas:
            assert self.subject is not None  # `conditioning` only picks subject photos with weights for them
            kwargs["ip_adapter_image"] = [[_open_image(fetch(sha), sha) for sha in job.subject_shas]]
            self.subject.load(job.ip_scale)
        if job.by_face:
            assert self.face is not None
            kwargs["ip_adapter_image_embeds"] = [self.face.embeds(job.face, job.guidance_scale)]
            self.face.load(job.ip_scale, job.loras)
        if job.tokens:
            self.load_tokens(job.tokens, fetch)
        try:
            yield kwargs
        finally:  # undo: the next request sees the base pipeline
            if job.tokens:
                self.unload_tokens(job.tokens)
            if job.subject_shas and self.subject is not None:  # (it is: loaded above)
                self.subject.unload()
            if job.by_face and self.face is not None:
                self.face.unload()

    # -- LoRA

    def load_lora(self, ref: AdapterRef, fetch: BlobFetcher) -> str:
        """Load a LoRA adapter blob once (LRU cache); its adapter name is the sha's first 16 digits."""
        sha = _blob_sha(ref)
        name = sha[:16]
        if name in self._loras:
            self._loras.move_to_end(name)
            self.adapter_cache_stats["hits"] += 1
            return name
        self.adapter_cache_stats["misses"] += 1
        path = self._write_blob(sha, fetch, LORA_WEIGHT_NAME)
        try:
            self.pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except Exception as exc:  # safetensors/PEFT/diffusers raise many kinds for a bad file
            _drop_partial_adapter(self.pipe, name)
            raise InvalidInputError(f"adapter {ref.key!r} is not a diffusers LoRA safetensors file: {exc}") from exc
        self._loras[name] = ref.key
        return name

    def activate_loras(self, loras: tuple[tuple[str, float], ...]) -> None:
        """Enable exactly `loras` with their weights, or switch LoRA off when there are none."""
        if not self._loras:
            return
        if not loras:
            self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters([name for name, _ in loras], adapter_weights=[weight for _, weight in loras])

    def trim_loras(self) -> None:
        """Delete the least recently used LoRAs beyond the cache size."""
        while len(self._loras) > LORA_CACHE:
            old, _ = self._loras.popitem(last=False)
            self.pipe.delete_adapters(old)

    # -- textual inversion

    def load_tokens(self, tokens: tuple[tuple[str, str], ...], fetch: BlobFetcher) -> None:
        """Add each learned token's embedding to the tokenizer and text encoder."""
        from safetensors.torch import load as load_safetensors

        for token, sha in tokens:
            try:
                state = load_safetensors(fetch(sha))
                self.pipe.load_textual_inversion(state, token=token)
            except Exception as exc:  # a corrupt file or a wrong embedding size
                raise InvalidInputError(f"textual inversion {token!r} (blob {sha[:12]}): {exc}") from exc

    def unload_tokens(self, tokens: tuple[tuple[str, str], ...]) -> None:
        """Undo `load_tokens`: the tokens leave the tokenizer and their embeddings the text encoder."""
        self.pipe.unload_textual_inversion([token for token, _ in tokens])

    def _write_blob(self, sha: str, fetch: BlobFetcher, file_name: str) -> Path:
        """Write an adapter's bytes to its own folder (diffusers loads adapters from files)."""
        assert self._workdir is not None  # set by `attach`
        folder = self._workdir / sha
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / file_name
        path.write_bytes(fetch(sha))
        return path


class PersonalizedDiffusion:
    """The recipe of the diffusers backends: `job` → `run` (personalize, `call`, undo) → `package`.

    A backend extends it with `load_pipeline` (its pipeline from a folder or Hub id), `call` (the
    pipeline calls for one job's requests: one result per output, in order) and `package` (those
    results as outputs with their meta). Its constructor arguments are its config.
    """

    def __init__(self, ref: str, device: str, dtype: str, steps: int, guidance_scale: float, width: int | None,
                 height: int | None, ip_adapter: str | None, face_adapter: str | None) -> None:
        self.ref = ref
        self.random_weights = is_random(ref)
        self.device = device
        self.dtype = dtype
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.width = width
        self.height = height
        self.ip_adapter = ip_adapter
        self.face_adapter = face_adapter
        self.personalizer = DiffusersPersonalizer(ip_adapter, face_adapter, device)

    # -- the backend's own steps

    def load_pipeline(self, source: str) -> Any:
        """The backend's diffusers pipeline from `source` (a folder or Hub id), on its device."""
        raise NotImplementedError

    def call(self, job: DiffusionJob, requests: list[GenerationRequest], kwargs: dict[str, Any]) -> list[Any]:
        """One result per output of `requests`, in order; `kwargs` are the personalization's arguments."""
        raise NotImplementedError

    def package(self, job: DiffusionJob, requests: list[GenerationRequest], results: list[Any],
                ) -> list[list[GeneratedOutput]]:
        """Each request's outputs (bytes and meta) from `call`'s results."""
        raise NotImplementedError

    # -- shared

    def setup(self) -> None:
        """Load the pipeline once (building the tiny one on first use) and personalize it from then on."""
        if self.personalizer.pipe is not None:
            return
        tiny = str(tiny_sd_dir()) if self.ref == TINY_SD else None
        self.personalizer.attach(self.load_pipeline(tiny or self.ref), tiny_source=tiny)

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (for inspection and tests)."""
        self.setup()
        return self.personalizer.pipe

    @property
    def adapter_cache_stats(self) -> dict[str, int]:
        """LoRA uses served already loaded ("hits") vs loaded for them ("misses")."""
        return self.personalizer.adapter_cache_stats

    def face_id_dim(self) -> int:
        """The id embedding size the FaceID weights take."""
        self.setup()
        assert self.personalizer.face is not None  # set by `setup`
        return self.personalizer.face.id_dim()

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One list of `num_outputs` outputs per request, in order; requests with the same job share a run."""
        self.setup()
        jobs = [self.job(request, fetch) for request in requests]
        groups: dict[DiffusionJob, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job, []).append(index)
        results: list[list[GeneratedOutput]] = [[] for _ in requests]
        for job, indices in groups.items():
            outputs = self.run(job, [requests[i] for i in indices], fetch)
            for index, produced in zip(indices, outputs, strict=True):
                results[index] = produced
        self.personalizer.trim_loras()  # after the batch: every LoRA it named stayed loaded while it ran
        return results

    def job(self, request: GenerationRequest, fetch: BlobFetcher) -> DiffusionJob:
        """A request's group key: its method, adapters (LoRAs loaded now) and sampling settings."""
        return self.personalizer.job(request, fetch, self.steps, self.guidance_scale, self.width, self.height)

    def run(self, job: DiffusionJob, requests: list[GenerationRequest], fetch: BlobFetcher,
            ) -> list[list[GeneratedOutput]]:
        """The pipeline call(s) for requests of the same job, with its personalization applied then undone."""
        with self.personalizer.applied(job, fetch) as kwargs:
            results = self.call(job, requests, kwargs)
        return self.package(job, requests, results)


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


def _open_image(data: bytes, sha: str) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data)).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UnsupportedMediaError(f"reference image {sha[:12]} is not an image: {exc}") from exc


def _drop_partial_adapter(pipe: Any, name: str) -> None:
    """Remove what a failed LoRA load may have injected, so the pipeline stays usable."""
    with contextlib.suppress(Exception):  # nothing was injected: nothing to remove
        pipe.delete_adapters(name)


__all__ = ["FACE_METHOD", "LORA_CACHE", "LORA_WEIGHT_NAME", "DiffusersPersonalizer", "DiffusionJob",
           "PersonalizedDiffusion"]
