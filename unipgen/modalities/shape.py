"""3D objects with Shap-E (diffusers): text-to-3D, and image-to-3D from a subject's photo.

`ShapEBackend` serves two plan methods:
* ``prompt_only``: `ShapEPipeline` turns the plan's prompt into an object;
* ``image_to_3d``: `ShapEImg2ImgPipeline` turns the first reference image of the plan's subject
  (`context.conditioning.subjects`, fetched by sha256) into an object; the prompt is not used.

Each output is a mesh file (GLB by default, or PLY: the `mesh_format` option) followed by a PNG
preview of it, so a request for n outputs returns 2n: mesh, preview, mesh, preview... The preview
carries meta {"role": "preview", "of": <index of its mesh in the request's list>}.

How a mesh is made: the prior denoises a latent (`steps` Heun steps, classifier-free guidance
`guidance_scale`), the renderer turns it into a signed distance field sampled on a `grid_size`³
grid, and marching cubes gives the triangles, colored per vertex. Shap-E's meshes are z-up in a
[-1, 1]³ box; they are turned y-up facing +z (glTF's convention: the view of Shap-E's first
pan camera becomes the front) and normalized: centered on the vertical axis, resting on y = 0,
the longest side 1 unit long. The same geometry goes into GLB and PLY. Vertex colors are
linear RGB in GLB (as glTF defines COLOR_0) and sRGB in PLY (as viewers show them).

The preview is a flat-shaded orthographic software render (painter's algorithm with PIL): a
three-quarter view from the front, 30° to the right and 20° above, on white; `frame_size` px
square unless the request sets width/height. It shows the exported mesh, not a NeRF render.

Model references: ``"tiny-random"`` (tiny random pipelines built offline, `shape_tiny`), or a Hub
id / local folder: `ref` for text ("openai/shap-e"), `image_ref` for images
("openai/shap-e-img2img"). The image pipeline is loaded on the first image request.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, UnipgenError, UnsupportedMediaError
from unipgen.modalities.seeding import output_generator
from unipgen.modalities.shape_tiny import TINY_SHAP_E, tiny_shap_e_dir, tiny_shap_e_img2img_dir
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import is_random

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

#: Mesh formats and their media types (PLY has no registered type; "model/ply" is common use).
MESH_FORMATS = {"glb": "model/gltf-binary", "ply": "model/ply"}
_YAW, _PITCH = 30.0, 20.0  # preview camera, degrees: right of the front, above the horizon
_LIGHT = (-0.4, 0.6, 0.7)  # preview light direction in view space (left, up, towards the viewer)


@dataclass(frozen=True)
class _Job:
    """One request, checked: how its outputs are made."""

    method: str
    steps: int
    guidance_scale: float
    width: int
    height: int
    image: Any = None          # the reference image (PIL, RGB) for image_to_3d
    image_sha: str | None = None


class ShapEBackend:
    """Text-to-3D and image-to-3D with Shap-E; meshes (GLB/PLY) with a PNG preview each."""

    modality = "3d"
    methods = frozenset({"prompt_only", "image_to_3d"})

    def __init__(self, ref: str = TINY_SHAP_E, image_ref: str | None = None, device: str = "cpu",
                 dtype: str = "float32", steps: int | None = None, guidance_scale: float = 15.0,
                 image_guidance_scale: float = 3.0, frame_size: int = 256, grid_size: int | None = None,
                 mesh_format: str = "glb", max_steps: int = 256, max_frame_size: int = 1024) -> None:
        """`steps`: prior steps (default 64, tiny 2); `grid_size`: marching-cubes grid (default 128,
        tiny 32); guidance scales as in diffusers' Shap-E examples (15 for text, 3 for images)."""
        tiny = ref == TINY_SHAP_E
        self.ref = ref
        self.image_ref = image_ref or (TINY_SHAP_E if tiny else "openai/shap-e-img2img")
        self.random_weights = is_random(ref) or is_random(self.image_ref)
        self.device = device
        self.dtype = dtype
        self.steps = steps or (2 if tiny else 64)
        self.guidance_scale = guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self.frame_size = frame_size
        self.grid_size = grid_size or (32 if tiny else 128)
        self.mesh_format = mesh_format
        self.max_steps = max_steps
        self.max_frame_size = max_frame_size
        # Checked now: a bad profile fails when built, not on the first request.
        if mesh_format not in MESH_FORMATS:
            raise InvalidInputError(f"mesh_format {mesh_format!r}: expected one of {sorted(MESH_FORMATS)}")
        if not 8 <= self.grid_size <= 256:
            raise InvalidInputError(f"grid_size {self.grid_size} is outside [8, 256]")
        if not 1 <= self.steps <= max_steps:
            raise InvalidInputError(f"steps {self.steps} is outside [1, {max_steps}]")
        self._check_size(frame_size)
        self._text: Any = None
        self._image: Any = None

    # -- loading

    def setup(self) -> None:
        """Load the text-to-3D pipeline once (the image one loads on the first image request)."""
        if self._text is None:
            self._text = self._load("ShapEPipeline", self.ref, tiny_shap_e_dir)

    def _image_pipeline(self) -> Any:
        if self._image is None:
            self._image = self._load("ShapEImg2ImgPipeline", self.image_ref, tiny_shap_e_img2img_dir)
        return self._image

    def _load(self, class_name: str, ref: str, tiny_dir: Any) -> Any:
        import diffusers
        import torch

        source = str(tiny_dir()) if ref == TINY_SHAP_E else ref
        pipe = getattr(diffusers, class_name).from_pretrained(source, dtype=getattr(torch, self.dtype))
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    @property
    def pipeline(self) -> Any:
        """The loaded text-to-3D pipeline (for inspection and benchmarks)."""
        self.setup()
        return self._text

    # -- generation

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """Per request: mesh, preview, mesh, preview... (2 × num_outputs), the same bytes for the same seed."""
        self.setup()
        jobs = [self._job(request, fetch) for request in requests]  # every input checked before any work
        results = []
        for request, job in zip(requests, jobs, strict=True):
            outputs: list[GeneratedOutput] = []
            for index in range(request.options.num_outputs):
                outputs += self._one(request, job, index, len(outputs))
            results.append(outputs)
        return results

    def _job(self, request: GenerationRequest, fetch: BlobFetcher) -> _Job:
        plan, options = request.plan, request.options
        if plan.method not in self.methods:
            raise InvalidInputError(f"the 3D backend cannot apply {plan.method!r}; it serves {sorted(self.methods)}")
        steps = options.steps or self.steps
        if steps > self.max_steps:
            raise InvalidInputError(f"steps {steps} is above this backend's limit of {self.max_steps}")
        width, height = options.width or self.frame_size, options.height or self.frame_size
        self._check_size(width, height)
        image = plan.method == "image_to_3d"
        default_guidance = self.image_guidance_scale if image else self.guidance_scale
        guidance = default_guidance if options.guidance_scale is None else options.guidance_scale
        if not image:
            return _Job(plan.method, steps, guidance, width, height)
        sha = _reference_sha(request)
        return _Job(plan.method, steps, guidance, width, height, _open_image(fetch(sha), sha), sha)

    def _check_size(self, *sizes: int) -> None:
        for size in sizes:
            if not 16 <= size <= self.max_frame_size:
                raise InvalidInputError(f"preview size {size} px is outside [16, {self.max_frame_size}]")

    def _one(self, request: GenerationRequest, job: _Job, index: int, position: int) -> list[GeneratedOutput]:
        """One object: its mesh file and, right after it, its preview."""
        generator = output_generator(request.options.seed, index, self.device)
        if job.method == "image_to_3d":
            pipe, kwargs = self._image_pipeline(), {"image": job.image}
        else:
            pipe, kwargs = self._text, {"prompt": request.plan.prompt}
        latents = pipe(**kwargs, num_inference_steps=job.steps, guidance_scale=job.guidance_scale,
                       generator=generator, output_type="latent").images
        vertices, faces, colors = self._mesh(pipe, latents[0])
        data = _export(vertices, faces, colors, self.mesh_format)
        meta = {"model": self.ref if job.method == "prompt_only" else self.image_ref, "method": job.method,
                "prompt": request.plan.prompt, "seed": request.options.seed, "index": index,
                "vertices": len(vertices), "faces": len(faces), "format": self.mesh_format, "steps": job.steps,
                "guidance_scale": job.guidance_scale, "grid_size": self.grid_size, "up_axis": "y"}
        if job.image_sha is not None:
            meta.update(subject=request.plan.subject, reference_image=job.image_sha)
        preview = _preview(vertices, faces, colors, job.width, job.height)
        return [GeneratedOutput(data=data, media_type=MESH_FORMATS[self.mesh_format], meta=meta),
                GeneratedOutput(data=preview, media_type="image/png", meta={
                    "role": "preview", "of": position, "width": job.width, "height": job.height})]

    def _mesh(self, pipe: Any, latent: Any) -> tuple[Any, Any, Any]:
        """Vertices (y-up, normalized), faces and linear RGB vertex colors of a latent's surface."""
        import numpy as np
        import torch

        try:
            with torch.inference_mode():
                decoded = pipe.shap_e_renderer.decode_to_mesh(latent[None], self.device, grid_size=self.grid_size)
        except (RuntimeError, ValueError) as exc:  # no zero crossing: torch.cat of no texture batches
            raise UnipgenError(f"Shap-E decoded no surface from this latent ({exc})") from exc
        vertices = decoded.verts.float().cpu().numpy().astype(np.float64)
        faces = decoded.faces.cpu().numpy().astype(np.int64)
        colors = torch.stack([decoded.vertex_channels[c] for c in "RGB"], dim=1).float().cpu().numpy()
        if not len(faces):
            raise UnipgenError("Shap-E decoded no surface from this latent")
        vertices = vertices[:, [0, 2, 1]] * np.array([1.0, 1.0, -1.0])  # z-up → y-up; Shap-E's -y front → +z
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        center = np.array([(low[0] + high[0]) / 2, low[1], (low[2] + high[2]) / 2])
        vertices = (vertices - center) / max(float((high - low).max()), 1e-9)
        return vertices, faces, np.clip(colors, 0.0, 1.0)


# ---------------------------------------------------------------- helpers


def _reference_sha(request: GenerationRequest) -> str:
    """The first reference image of the plan's subject."""
    key = request.plan.subject
    if key is None:
        raise InvalidInputError("image_to_3d needs plan.subject: the subject whose photo becomes the object")
    subject = next((s for s in request.context.conditioning.subjects if s.key == key), None)
    if subject is None:
        raise InvalidInputError(f"image_to_3d: subject {key!r} is not in the request's context")
    if not subject.image_shas:
        raise InvalidInputError(f"image_to_3d: subject {key!r} has no reference images")
    return subject.image_shas[0]


def _open_image(data: bytes, sha: str) -> Image.Image:
    """The reference image as RGB; transparency is composited onto white (Shap-E's training background)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise UnsupportedMediaError(f"reference image {sha[:12]} is not an image: {exc}") from exc
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _srgb(linear: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def _export(vertices: Any, faces: Any, colors: Any, mesh_format: str) -> bytes:
    """The mesh as GLB (linear vertex colors) or binary PLY (sRGB vertex colors)."""
    import numpy as np
    import trimesh

    shown = colors if mesh_format == "glb" else _srgb(colors)
    rgba = np.concatenate([np.round(shown * 255), np.full((len(shown), 1), 255)], axis=1).astype(np.uint8)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=rgba, process=False)
    return bytes(mesh.export(file_type=mesh_format))  # type: ignore[arg-type]  # trimesh: bytes for glb and ply


def _preview(vertices: Any, faces: Any, colors: Any, width: int, height: int) -> bytes:
    """A flat-shaded orthographic PNG of the mesh, front-right and above, on white."""
    import numpy as np
    from PIL import Image, ImageDraw

    yaw, pitch = np.radians(_YAW), np.radians(_PITCH)
    turn = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    view = vertices @ (tilt @ turn).T  # x right, y up, z towards the viewer
    triangles = view[faces]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    visible = (normals[:, 2] > 0) & (lengths > 0)  # faces wound counter-clockwise from outside
    light = np.array(_LIGHT) / np.linalg.norm(_LIGHT)
    shade = 0.35 + 0.65 * np.clip((normals[visible] @ light) / lengths[visible], 0.0, 1.0)
    fill = np.clip(_srgb(colors[faces[visible]].mean(axis=1) * shade[:, None]) * 255, 0, 255).round().astype(int)
    low, high = view[:, :2].min(axis=0), view[:, :2].max(axis=0)
    scale = 0.9 * min(width / max(high[0] - low[0], 1e-9), height / max(high[1] - low[1], 1e-9))
    middle = (low + high) / 2
    pixels = np.empty(triangles[visible][:, :, :2].shape)
    pixels[..., 0] = width / 2 + (triangles[visible][..., 0] - middle[0]) * scale
    pixels[..., 1] = height / 2 - (triangles[visible][..., 1] - middle[1]) * scale
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for number in np.argsort(triangles[visible][:, :, 2].mean(axis=1), kind="stable"):  # far to near
        draw.polygon([tuple(point) for point in pixels[number].tolist()], fill=tuple(fill[number].tolist()))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["MESH_FORMATS", "ShapEBackend"]
