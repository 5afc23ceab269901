"""One backend per modality (text, image, video, audio, 3D) and the personalization methods,
and the image-to-text backend (captions and visual questions, the profile's ``caption`` entry).

`BACKENDS` maps a profile's backend type to its class, imported on first use; plugins add
types with `register_backend`. `load_backend` builds a generator, `load_captioner` an image-to-text
backend, both from the same registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unipgen.errors import NotFoundError
from unipgen.schema.profiles import ComponentSpec

if TYPE_CHECKING:
    from unipgen.modalities.base import Backend, Captioner

BACKENDS: dict[str, str] = {
    "transformers-lm": "unipgen.modalities.text:TransformersTextBackend",
    "diffusers-sd": "unipgen.modalities.image:DiffusersImageBackend",
    "diffusers-animatediff": "unipgen.modalities.video:AnimateDiffVideoBackend",
    "transformers-musicgen": "unipgen.modalities.audio:MusicgenAudioBackend",
    "transformers-musicgen-melody": "unipgen.modalities.audio_melody:MusicgenMelodyAudioBackend",
    "kokoro-voice-match": "unipgen.modalities.speech:KokoroSpeechBackend",
    "transformers-speecht5": "unipgen.modalities.speech_t5:SpeechT5Backend",
    "diffusers-shap-e": "unipgen.modalities.shape:ShapEBackend",
    "transformers-blip": "unipgen.modalities.caption:BlipCaptioner",
}
#: The profile's entry (`ModelProfile.backends`) that names its image-to-text backend.
CAPTION = "caption"


#: Profile options that say where a backend runs (read by the Ray executor), not how it is built:
#: its GPU share, the custom Ray resources it needs (a table of name -> amount), its batching.
PLACEMENT_KEYS = ("num_gpus", "resources", "max_batch_requests", "max_wait_ms")


def register_backend(type_name: str, target: str) -> None:
    """Make `type_name` usable in profiles; `target` is "package.module:Class"."""
    BACKENDS[type_name] = target


def load_backend(spec: ComponentSpec) -> Backend:
    """Build (not yet set up) the backend a profile entry describes."""
    backend: Backend = _build(spec)
    return backend


def load_captioner(spec: ComponentSpec) -> Captioner:
    """Build (not yet set up) the image-to-text backend a profile's ``caption`` entry describes."""
    from unipgen.errors import InvalidInputError
    from unipgen.modalities.base import Captioner

    captioner = _build(spec)
    if not isinstance(captioner, Captioner):
        raise InvalidInputError(f"backend type {spec.type!r} does not caption images (no caption/answer methods)")
    return captioner


def _build(spec: ComponentSpec) -> Any:
    if spec.type not in BACKENDS:
        raise NotFoundError(f"unknown backend type {spec.type!r}; known: {sorted(BACKENDS)}")
    module, _, name = BACKENDS[spec.type].partition(":")
    cls = getattr(importlib.import_module(module), name)
    kwargs = {key: value for key, value in spec.options.items() if key not in PLACEMENT_KEYS}
    if spec.ref is not None:
        kwargs["ref"] = spec.ref
    return cls(**kwargs)


__all__ = ["BACKENDS", "CAPTION", "PLACEMENT_KEYS", "load_backend", "load_captioner", "register_backend"]
