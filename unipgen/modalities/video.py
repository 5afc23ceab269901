"""Videos with diffusers' AnimateDiff: text-to-video on a Stable Diffusion 1.5 base, personalized.

`AnimateDiffVideoBackend` loads `AnimateDiffPipeline`: the image base model (`ref`: a Hub id, a
local folder, or "tiny-random", the tiny pipeline of `image_tiny`) plus a motion adapter
(`motion_adapter`: a Hub id or folder such as "guoyww/animatediff-motion-adapter-v1-5-2";
left out with "tiny-random", the tiny random one of `video_tiny`). The UNet becomes a
`UNetMotionModel`: the image layers, with temporal attention over frames between them.

Personalization is the image backend's, on the same UNet layers, applied and undone after each
request by the same public component (`personalization.DiffusersPersonalizer`): "ip_adapter"
conditions on the subject's reference photos, "lora" loads the subject's (or user's) image
LoRA, "textual_inversion" adds a learned token; an "ip_adapter" plan with no subject conditions
on the user's face with IP-Adapter FaceID (`face_adapter`, as for images; the tiny pipeline has
its own), or falls back to the prompt (meta says so). FaceID's own LoRA is numbered over the
image UNet's attention layers; the personalizer renumbers it for the motion UNet, whose motion
layers lie between them. Unlike the image backend, a named subject must exist and have photos.

Each output is one pipeline call seeded by `row_seed(seed, index)`, so its bytes do not depend
on what else is in the batch; it is encoded as H.264 MP4 (PyAV's bundled libx264, no system
ffmpeg) or GIF. Encoding adds no variation: the same frames give the same bytes on any machine
with the same PyAV (colour conversion done here in integers, one encoder thread, "bitexact"
muxing); the frames themselves are the same for the same request, device and torch build.
Its meta carries `temporal_consistency`: the mean cosine similarity of consecutive frames' CLIP
image embeddings (1 = every frame embeds the same; lower = frames change more).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError
from unipgen.modalities.image_tiny import TINY_SD
from unipgen.modalities.personalization import DiffusionJob, PersonalizedDiffusion
from unipgen.modalities.seeding import output_generator
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest
from unipgen.tiny import is_random, score_kind

if TYPE_CHECKING:
    import numpy as np
    import torch

TINY_FRAME_ENCODER = "tiny-random"
FORMATS = {"mp4": "video/mp4", "gif": "image/gif"}
MAX_FRAMES = 128   # a sanity bound; the motion adapter's own limit (32 for AnimateDiff v1-5) is checked on load
MAX_FPS = 120.0


class AnimateDiffVideoBackend(PersonalizedDiffusion):
    """Text-to-video with AnimateDiff, personalized by IP-Adapter, LoRA or textual inversion."""

    modality = "video"
    methods = frozenset({"prompt_only", "ip_adapter", "lora", "textual_inversion"})

    def __init__(self, ref: str = TINY_SD, motion_adapter: str | None = None, device: str = "cpu",
                 dtype: str = "float32", steps: int = 2, guidance_scale: float = 7.5, width: int | None = None,
                 height: int | None = None, num_frames: int | None = None, fps: float = 8,
                 video_format: str = "mp4", ip_adapter: str | None = None, face_adapter: str | None = None,
                 frame_encoder: str | None = TINY_FRAME_ENCODER) -> None:
        super().__init__(ref, device, dtype, steps, guidance_scale, width, height, ip_adapter, face_adapter)
        if motion_adapter is None and ref != TINY_SD:
            raise InvalidInputError(f"model {ref!r}: the video backend needs a motion_adapter "
                                    "(e.g. 'guoyww/animatediff-motion-adapter-v1-5-2')")
        self.motion_adapter = motion_adapter
        self.num_frames = num_frames if num_frames is not None else (8 if ref == TINY_SD else 16)
        self.fps = fps
        self.video_format = video_format
        self.frame_encoder = frame_encoder
        if type(self.num_frames) is not int or not 2 <= self.num_frames <= MAX_FRAMES:  # bool is not a count
            raise InvalidInputError(f"num_frames {self.num_frames!r} is outside [2, {MAX_FRAMES}]")
        if type(fps) not in (int, float) or not 0 < fps <= MAX_FPS:
            raise InvalidInputError(f"fps {fps!r} is outside (0, {MAX_FPS:g}]")
        if video_format not in FORMATS:
            raise InvalidInputError(f"video_format {video_format!r}: expected one of {sorted(FORMATS)}")
        self._encoder: FrameEncoder | None = None

    def load_pipeline(self, source: str) -> Any:
        """The AnimateDiff pipeline on `source` with the motion adapter, and the frame encoder."""
        import torch
        from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

        from unipgen.modalities.video_tiny import tiny_motion_adapter_dir

        dtype = getattr(torch, self.dtype)
        adapter_source = str(tiny_motion_adapter_dir()) if self.motion_adapter is None else self.motion_adapter
        adapter = MotionAdapter.from_pretrained(adapter_source, dtype=dtype)
        limit = int(adapter.config.motion_max_seq_length)
        if self.num_frames > limit:
            raise InvalidInputError(f"num_frames {self.num_frames} is more than motion adapter "
                                    f"{adapter_source!r} takes ({limit})")
        pipe = AnimateDiffPipeline.from_pretrained(source, motion_adapter=adapter, dtype=dtype)
        # The scheduler AnimateDiff's authors and diffusers' docs use for its motion modules.
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_schedule="linear", clip_sample=False,
                                                   timestep_spacing="linspace", steps_offset=1)
        pipe.set_progress_bar_config(disable=True)
        if self.frame_encoder is not None:
            self._encoder = FrameEncoder(self.frame_encoder, self.device)
            self._encoder.setup()
        return pipe.to(self.device)

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One list of `num_outputs` videos per request, in order; the same bytes for the same request."""
        for request in requests:
            if request.plan.method not in self.methods:
                raise InvalidInputError(f"the video backend cannot apply method {request.plan.method!r}; "
                                        f"it applies {sorted(self.methods)}")
        return super().generate(requests, fetch)

    def job(self, request: GenerationRequest, fetch: BlobFetcher) -> DiffusionJob:
        """A request's group key, as for images; but a subject the plan names must exist and have photos."""
        plan = request.plan
        if plan.method == "ip_adapter" and plan.subject is not None:
            subject = next((s for s in request.context.conditioning.subjects if s.key == plan.subject), None)
            if subject is None:
                raise InvalidInputError(f"subject {plan.subject!r} is not in the request's context")
            if not subject.image_shas:
                raise InvalidInputError(f"subject {plan.subject!r} has no reference images for ip_adapter")
        return super().job(request, fetch)

    def call(self, job: DiffusionJob, requests: list[GenerationRequest], kwargs: dict[str, Any]) -> list[Any]:
        """One pipeline call per output (a list of PIL frames each), seeded by `row_seed(seed, index)`."""
        videos = []
        for request in requests:
            for index in range(request.options.num_outputs):
                generator = output_generator(request.options.seed, index, self.device)
                output = self.pipeline(prompt=[request.plan.prompt], negative_prompt=[request.plan.negative_prompt],
                                       num_frames=self.num_frames, num_inference_steps=job.steps,
                                       guidance_scale=job.guidance_scale, width=job.width, height=job.height,
                                       generator=generator, output_type="pil", **kwargs)
                videos.append(output.frames[0])
        return videos

    def package(self, job: DiffusionJob, requests: list[GenerationRequest], results: list[Any],
                ) -> list[list[GeneratedOutput]]:
        """MP4 or GIF bytes with how each video was made and its temporal consistency."""
        outputs, videos = [], iter(results)
        for request in requests:
            produced = []
            for index in range(request.options.num_outputs):
                frames = next(videos)
                consistency = self._encoder.consistency(frames) if self._encoder is not None else None
                meta = {"model": self.ref, "motion_adapter": self.motion_adapter or TINY_SD,
                        "method": job.applied_method, "prompt": request.plan.prompt,
                        "negative_prompt": request.plan.negative_prompt, "seed": request.options.seed,
                        "output_index": index, "steps": job.steps, "guidance_scale": job.guidance_scale,
                        "width": frames[0].width, "height": frames[0].height, "num_frames": len(frames),
                        "fps": self.fps, "seconds": round(len(frames) / self.fps, 3), "format": self.video_format,
                        "adapters": list(request.plan.adapters), "subject": request.plan.subject,
                        "temporal_consistency": consistency, **job.conditioning_meta(request)}
                if self._encoder is not None:  # what the score is: a measure, or a mechanical check
                    meta["score_kinds"] = {"temporal_consistency": score_kind(self._encoder)}
                data = encode_mp4(frames, self.fps) if self.video_format == "mp4" else encode_gif(frames, self.fps)
                produced.append(GeneratedOutput(data=data, media_type=FORMATS[self.video_format], meta=meta))
            outputs.append(produced)
        return outputs


# ---------------------------------------------------------------- temporal consistency


class FrameEncoder:
    """CLIP image embeddings of video frames, for `temporal_consistency` (a Hub id/path or "tiny-random")."""

    def __init__(self, ref: str = TINY_FRAME_ENCODER, device: str = "cpu") -> None:
        self.ref = ref
        self.random_weights = is_random(ref)  # temporal_consistency is then a mechanical check
        self.device = device
        self._model: Any = None
        self._processor: Any = None

    def setup(self) -> None:
        if self._model is not None:
            return
        import transformers

        from unipgen.tiny import tiny_clip_dir

        path = str(tiny_clip_dir()) if self.ref == TINY_FRAME_ENCODER else self.ref
        self._model = transformers.CLIPModel.from_pretrained(path).to(self.device).eval()  # type: ignore[arg-type]  # transformers' wrapped .to
        # The PIL processor (transformers 5) needs no torchvision; 4.x has only the one class.
        processor = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
        self._processor = processor.from_pretrained(path)

    def embed(self, frames: Sequence[Any]) -> torch.Tensor:
        """(frames, dim) float tensor of CLIP image embeddings (not normalised)."""
        import torch

        self.setup()
        pixels = self._processor(images=list(frames), return_tensors="pt")["pixel_values"].to(self.device)
        with torch.inference_mode():
            features = self._model.get_image_features(pixel_values=pixels)
        # transformers 5 returns a model output whose pooler_output is the projection; 4.x the tensor.
        return getattr(features, "pooler_output", features).float().cpu()

    def consistency(self, frames: Sequence[Any]) -> float:
        return temporal_consistency(self.embed(frames))


def temporal_consistency(embeddings: Any) -> float:
    """Mean cosine similarity of consecutive rows of `embeddings` (frames × dim), in [-1, 1].

    1.0: every frame embeds the same (a still video); lower: the content changes between
    frames (motion, flicker). Fewer than two frames: 1.0.
    """
    import torch

    vectors = torch.as_tensor(embeddings, dtype=torch.float64)
    if vectors.ndim != 2:
        raise InvalidInputError(f"expected (frames, dim) embeddings, got shape {tuple(vectors.shape)}")
    if len(vectors) < 2:
        return 1.0
    cosines = torch.nn.functional.cosine_similarity(vectors[:-1], vectors[1:], dim=1)
    return round(float(cosines.mean().clamp(-1.0, 1.0)), 6)


# ---------------------------------------------------------------- encoding


def encode_mp4(frames: Sequence[Any], fps: float, crf: int = 18) -> bytes:
    """H.264 (yuv420p, BT.601 limited range) in MP4, byte-for-byte reproducible.

    The RGB→YUV conversion is done here in integer arithmetic (swscale picks CPU-specific code
    paths), x264 runs on one thread (its output depends on the thread count) and the muxer
    writes no timestamps or version strings ("bitexact").
    """
    import av
    import numpy as np

    width, height = frames[0].size
    if width % 2 or height % 2:
        raise InvalidInputError(f"H.264 needs even frame sizes, got {width}x{height}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        stream.options = {"crf": str(crf), "preset": "medium"}
        for number, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(_yuv420(np.asarray(image.convert("RGB"))), format="yuv420p")
            frame.pts = number
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _yuv420(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (3H/2, W) uint8 planar YUV 4:2:0, BT.601 limited range, rounded."""
    import numpy as np

    r, g, b = (rgb[..., channel].astype(np.int32) for channel in range(3))
    # Integer BT.601 (as in ITU-R BT.601 / JFIF "studio swing"), coefficients × 256.
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    height, width = y.shape

    def half(plane: np.ndarray) -> np.ndarray:  # 2×2 mean with rounding
        blocks = plane.reshape(height // 2, 2, width // 2, 2).sum(axis=(1, 3))
        return (blocks + 2) >> 2

    planes = [y.ravel(), half(u).ravel(), half(v).ravel()]
    return np.clip(np.concatenate(planes), 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def encode_gif(frames: Sequence[Any], fps: float) -> bytes:
    """An endlessly looping GIF (PIL); frame delays are whole centiseconds, so fps is approximate."""
    buffer = io.BytesIO()
    first, *rest = [image.convert("RGB") for image in frames]
    first.save(buffer, format="GIF", save_all=True, append_images=rest, duration=round(1000 / fps), loop=0)
    return buffer.getvalue()


__all__ = ["FORMATS", "AnimateDiffVideoBackend", "FrameEncoder", "encode_gif", "encode_mp4", "temporal_consistency"]
