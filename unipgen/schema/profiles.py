"""Model profiles: which model fills each role, as data files (`unipgen/profiles/*.toml`).

A profile names, per role, a registry `type` and a model `ref` (a Hub id or a local path) with
constructor `options`. `tiny` runs offline anywhere (tests, demos); `cpu` and `gpu` use real
models. A path to a .toml file works wherever a profile name does.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from unipgen.errors import InvalidInputError, NotFoundError

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ComponentSpec(BaseModel):
    """One role's model: the registry type, the model reference and constructor options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    ref: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ModelProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    encoders: dict[str, ComponentSpec] = Field(default_factory=dict)
    backends: dict[str, ComponentSpec] = Field(default_factory=dict, description="Generator per modality.")


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> ModelProfile:
    """A profile by name (`tiny`, `cpu`, `gpu`) or from a .toml file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise NotFoundError(f"unknown model profile {str(name_or_path)!r}; known: {profile_names()}")
    try:
        return ModelProfile.model_validate(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise InvalidInputError(f"model profile {path} is invalid: {exc}") from None
