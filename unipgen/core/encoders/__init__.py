"""Encoders: one registry from a type name to the class that implements it, resolved lazily.

A profile (`unipgen.schema.profiles`) says which type and model fill each role (text, image,
face, voice, clap); `load_encoder` builds one, `Encoders` holds a profile's by role (the user
model's and the context builder's). Plugins add types with `register_encoder`.
"""

from __future__ import annotations

import importlib
from typing import Any

from unipgen.core.encoders.base import Encoder, NoFaceFoundError, l2_normalize
from unipgen.errors import MissingDependencyError, NotFoundError
from unipgen.schema.profiles import ComponentSpec, ModelProfile

#: type name → "module:Class". Modules are imported on first use only.
ENCODERS: dict[str, str] = {
    "sentence-transformers": "unipgen.core.encoders.text:SentenceTransformerEncoder",
    "clip": "unipgen.core.encoders.image:ClipEncoder",
    "clap": "unipgen.core.encoders.clap:ClapEncoder",
    "dlib-face": "unipgen.core.encoders.face:DlibFaceEncoder",
    "resemblyzer": "unipgen.core.encoders.voice:ResemblyzerVoiceEncoder",
}


def register_encoder(type_name: str, target: str) -> None:
    """Make `type_name` usable in profiles; `target` is "package.module:Class"."""
    ENCODERS[type_name] = target


def encoder_class(type_name: str) -> type[Any]:
    if type_name not in ENCODERS:
        raise NotFoundError(f"unknown encoder type {type_name!r}; known: {sorted(ENCODERS)}")
    module, _, name = ENCODERS[type_name].partition(":")
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


def load_encoder(spec: ComponentSpec) -> Any:
    """Build the encoder a profile entry describes (models load on first use)."""
    cls = encoder_class(spec.type)
    kwargs = dict(spec.options)
    if spec.ref is not None:
        kwargs["ref"] = spec.ref
    return cls(**kwargs)


class Encoders:
    """The encoders of one profile by role (`text`, `image`, `face`, `voice`), built on first use."""

    def __init__(self, profile: ModelProfile) -> None:
        self.profile = profile
        self._loaded: dict[str, Any] = {}

    def __getattr__(self, role: str) -> Any:
        if role.startswith("_"):
            raise AttributeError(role)
        if role not in self._loaded:
            if role not in self.profile.encoders:
                raise NotFoundError(f"profile {self.profile.name!r} has no {role!r} encoder")
            self._loaded[role] = load_encoder(self.profile.encoders[role])
        return self._loaded[role]

    def use(self, role: str, encoder: Any) -> None:
        """Encode `role` with `encoder` instead of the profile's (a harness's own, or one
        already loaded elsewhere)."""
        self._loaded[role] = encoder


__all__ = [
    "ENCODERS",
    "Encoder",
    "Encoders",
    "MissingDependencyError",
    "NoFaceFoundError",
    "encoder_class",
    "l2_normalize",
    "load_encoder",
    "register_encoder",
]
