"""IP-Adapter on a diffusers pipeline, loaded for a request and unloaded after it.

Two kinds, both in diffusers' `load_ip_adapter` layout: `SubjectIpAdapter` conditions on a
subject's reference photos through a CLIP image encoder; `FaceIdAdapter` (IP-Adapter FaceID)
conditions on the user's face embedding, with no image encoder, and carries a LoRA of its own
("faceid_0") that is loaded and deleted with it. `IpAdapterSpec` reads where the weights are:
the backends' `ip_adapter` and `face_adapter` options, "repo:subfolder:weight_name" with an
optional ":image_encoder_folder" (the subfolder may be empty). `DiffusersPersonalizer` uses both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.modalities.image_tiny import TINY_FACE_WEIGHT_NAME, tiny_face_adapter_dir
from unipgen.schema.generation import GenerationRequest

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class IpAdapterSpec:
    """Where IP-Adapter weights live: `load_ip_adapter`'s arguments."""

    source: str
    subfolder: str
    weight_name: str
    image_encoder_folder: str | None = "image_encoder"  # None: no encoder (FaceID takes embeddings)

    @classmethod
    def parse(cls, text: str, option: str = "ip_adapter", encoder: bool = True) -> IpAdapterSpec:
        """Read "repo:subfolder:weight_name[:image_encoder_folder]" (the subfolder may be empty)."""
        parts = text.split(":")
        sizes = (3, 4) if encoder else (3,)
        if len(parts) not in sizes or not parts[0] or not all(parts[2:]):
            shape = "repo:subfolder:weight_name" + ("[:image_encoder_folder]" if encoder else "")
            raise InvalidInputError(f"{option} {text!r}: expected {shape!r}")
        return cls(*parts) if encoder else cls(parts[0], parts[1], parts[2], image_encoder_folder=None)


class SubjectIpAdapter:
    """The configured IP-Adapter on `pipe`: reference photos in, through its image encoder."""

    def __init__(self, pipe: Any, spec: IpAdapterSpec) -> None:
        self.pipe = pipe
        self.spec = spec
        self.image_encoder: Any = None  # kept across unloads: reloading it is slow
        # The pipeline's own: diffusers' unload drops it from pipelines with no safety checker
        # (AnimateDiff), and a load with none makes a default one of another size.
        self.feature_extractor: Any = getattr(pipe, "feature_extractor", None)

    def load(self, scale: float) -> None:
        """Load the weights (and the image encoder, kept from the last load) and set their scale."""
        if self.image_encoder is not None:  # load_ip_adapter loads an encoder only when none is set
            self.pipe.register_modules(image_encoder=self.image_encoder)
        if self.feature_extractor is not None and getattr(self.pipe, "feature_extractor", None) is None:
            self.pipe.register_modules(feature_extractor=self.feature_extractor)
        spec = self.spec
        self.pipe.load_ip_adapter(spec.source, subfolder=spec.subfolder, weight_name=spec.weight_name,
                                  image_encoder_folder=spec.image_encoder_folder)
        self.pipe.set_ip_adapter_scale(scale)

    def unload(self) -> None:
        """Undo `load`, keeping the image encoder for the next one."""
        self.image_encoder = self.pipe.image_encoder
        self.pipe.unload_ip_adapter()


class FaceIdAdapter:
    """IP-Adapter FaceID on `pipe`: the user's face embedding in, with FaceID's own LoRA.

    `spec`: the configured weights; with none and `tiny`, the tiny pipeline's own random ones.
    The weights are read once and their LoRA renumbered for `pipe`'s UNet (see `_faceid_for_unet`).
    """

    def __init__(self, pipe: Any, spec: IpAdapterSpec | None, option: str | None = None, device: str = "cpu",
                 tiny: bool = False) -> None:
        self.pipe = pipe
        self.spec = spec
        self.option = option  # the `face_adapter` text, for messages
        self.device = device
        self.tiny = tiny
        self._weights: dict[str, Any] | None = None
        self._id_dim: int | None = None  # read from the weights once

    def weights(self) -> IpAdapterSpec | None:
        """The FaceID weights: configured, or the tiny pipeline's own (built on first use)."""
        if self.spec is None and self.tiny:
            self.spec = IpAdapterSpec(str(tiny_face_adapter_dir()), "", TINY_FACE_WEIGHT_NAME, None)
        return self.spec

    def id_dim(self) -> int:
        """The id embedding size the weights take (loaded once to read it, then unloaded)."""
        if self._id_dim is None:
            from diffusers.models.embeddings import IPAdapterFaceIDImageProjection

            if self.weights() is None:
                raise InvalidInputError("no face_adapter configured for this model")
            self.load(0.0, ())
            try:
                projection = self.pipe.unet.encoder_hid_proj.image_projection_layers[0]
            finally:
                self.unload()
            if not isinstance(projection, IPAdapterFaceIDImageProjection):
                raise InvalidInputError(f"face_adapter {self.option!r} is not IP-Adapter FaceID weights "
                                        f"(its projection is {type(projection).__name__})")
            self._id_dim = int(projection.ff.net[0].proj.in_features)
        return self._id_dim

    def check_size(self, request: GenerationRequest) -> None:
        """Refuse face embeddings whose size is not the adapter's id embedding size."""
        sizes = sorted({len(e) for e in request.context.conditioning.face_embeddings})
        expected = self.id_dim()
        if sizes != [expected]:
            raise InvalidInputError(
                f"user {request.context.user!r}: face embeddings of size {'/'.join(map(str, sizes))}, but the "
                f"FaceID adapter takes {expected}-d id embeddings (h94's FaceID weights take 512-d ArcFace "
                "embeddings from insightface; the dlib face encoder gives 128-d)")

    def embeds(self, face: tuple[float, ...], guidance_scale: float) -> torch.Tensor:
        """`ip_adapter_image_embeds[0]` for one face: (1 prompt, 1 image, dim), or (2, 1, dim).

        The pipeline repeats it for every prompt of the call. With classifier-free guidance it
        splits the tensor in halves on dim 0, negative first: zeros here, as in diffusers' docs.
        """
        import torch

        embeds = torch.tensor(face).view(1, 1, -1).to(device=self.device, dtype=self.pipe.unet.dtype)
        guided = guidance_scale > 1 and self.pipe.unet.config.time_cond_proj_dim is None
        return torch.cat([torch.zeros_like(embeds), embeds]) if guided else embeds

    def load(self, scale: float, loras: tuple[tuple[str, float], ...]) -> None:
        """Load the weights with no image encoder; their own LoRA joins the request's `loras`."""
        if self._weights is None:
            spec = self.weights()
            assert spec is not None  # FaceID is only picked when it has weights
            self._weights = _faceid_for_unet(_read_ip_weights(spec), self.pipe.unet)
        self.pipe.load_ip_adapter(self._weights, subfolder="", weight_name="", image_encoder_folder=None)
        self.pipe.set_ip_adapter_scale(scale)
        faceid = self.loras()
        if faceid:  # h94's FaceID weights carry a LoRA, loaded as "faceid_0"; active even if LoRA was off
            self.pipe.enable_lora()
            self.pipe.set_adapters([*faceid, *(name for name, _ in loras)],
                                   adapter_weights=[1.0] * len(faceid) + [weight for _, weight in loras])

    def unload(self) -> None:
        """Undo `load`: `unload_ip_adapter` leaves FaceID's LoRA in, so delete it too."""
        self.pipe.unload_ip_adapter()
        faceid = self.loras()
        if faceid:
            self.pipe.delete_adapters(faceid)

    def loras(self) -> list[str]:
        """The LoRA adapters `load_ip_adapter` added for FaceID weights ("faceid_0", ...)."""
        return [name for name in getattr(self.pipe.unet, "peft_config", None) or {} if name.startswith("faceid_")]


def mean_face(embeddings: list[list[float]]) -> tuple[float, ...]:
    """The mean of a user's face embeddings, L2-normalised (as the per-photo embeddings are)."""
    import torch

    mean = torch.tensor(embeddings, dtype=torch.float64).mean(dim=0)
    norm = mean.norm()
    return tuple((mean / norm if norm > 0 else mean).float().tolist())


def _read_ip_weights(spec: IpAdapterSpec) -> dict[str, Any]:
    """IP-Adapter weights as {"image_proj": {...}, "ip_adapter": {...}}, from a safetensors or .bin file."""
    from diffusers.models.model_loading_utils import load_state_dict

    flat = load_state_dict(_weights_file(spec))
    if "image_proj" in flat:  # h94's .bin files are already nested
        return dict(flat)
    nested: dict[str, Any] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        group, _, rest = key.partition(".")
        nested[group][rest] = value
    return nested


def _weights_file(spec: IpAdapterSpec) -> str:
    """The local path of a spec's weight file: in its folder, or downloaded from the Hub (cached)."""
    local = Path(spec.source, spec.subfolder, spec.weight_name)
    if local.is_file():
        return str(local)
    if Path(spec.source).is_dir():
        raise NotFoundError(f"IP-Adapter weights {spec.weight_name!r} are not in {local.parent}")
    from huggingface_hub import hf_hub_download

    return hf_hub_download(spec.source, spec.weight_name, subfolder=spec.subfolder or None)


def _faceid_for_unet(weights: dict[str, Any], unet: Any) -> dict[str, Any]:
    """Renumber FaceID's LoRA keys ("{k}.to_q_lora...") from image-UNet to `unet` processor order.

    k counts the image UNet's attention processors; a motion UNet (AnimateDiff) has the same ones
    in the same order with motion-module processors between them, which diffusers would count
    too. On an image UNet this changes nothing. (The "to_k_ip" keys need nothing: diffusers
    numbers them over cross-attention layers only, skipping motion modules.)
    """
    image_positions = [i for i, name in enumerate(unet.attn_processors) if "motion_modules" not in name]
    renumbered = {}
    for key, value in weights["ip_adapter"].items():
        head, _, rest = key.partition(".")
        renumbered[f"{image_positions[int(head)]}.{rest}" if "_lora." in rest else key] = value
    return {"image_proj": weights["image_proj"], "ip_adapter": renumbered}


__all__ = ["FaceIdAdapter", "IpAdapterSpec", "SubjectIpAdapter", "mean_face"]
