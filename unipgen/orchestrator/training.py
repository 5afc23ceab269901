"""Train a user's personal adapter in this process and store it as an artifact with lineage.

Only the per-user text LoRA is wired so far (`method="text-lora"`): it is fitted on the user's
documents, and the adapter records each document it learned from, so forgetting one removes
the adapter, and with it every output generated through it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError

METHODS = ("text-lora",)


@dataclass(frozen=True)
class TrainedArtifact:
    key: str
    method: str
    losses: list[float]


def train(model: UserModel, tenant: str, user: str, method: str, *, steps: int = 20, seed: int = 0) -> TrainedArtifact:
    """Train `method` for `user` with the profile's base model; returns the adapter artifact."""
    if method not in METHODS:
        raise InvalidInputError(f"unknown training method {method!r}; available here: {list(METHODS)}")
    return _text_lora(model, tenant, user, steps, seed)


def _text_lora(model: UserModel, tenant: str, user: str, steps: int, seed: int) -> TrainedArtifact:
    from unipgen.modalities.text import train_text_lora

    documents = model.store.documents(tenant, user)
    if not documents:
        raise InvalidInputError(f"user {user!r} has no documents to train a text adapter on")
    spec = model.profile.backends.get("text")
    if spec is None:
        raise NotFoundError(f"profile {model.profile.name!r} has no text generator to adapt")
    trained = train_text_lora(spec.ref or "tiny-random", [d.text for d in documents], steps=steps, seed=seed,
                              gguf_file=spec.options.get("gguf_file"))
    key = f"text-lora-{uuid.uuid4().hex[:12]}"
    meta = {"method": "lora", "modality": "text", "base": spec.ref, "steps": steps, "seed": seed,
            "losses": trained.losses}
    model.store.add_artifact(tenant, key, kind="adapter", media_type="application/zip", data=trained.data,
                             user=user, derived_from=[("document", d.key) for d in documents], meta=meta)
    return TrainedArtifact(key, "text-lora", trained.losses)
