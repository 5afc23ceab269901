"""Protect a user's photos from fine-tuning, as a job: the photos of a subject (or a face photo)
get an Anti-DreamBooth-style perturbation (misalign or ASPL, `unipgen.modalities.image_protect`)
against the profile's image model, and the protected copies are stored as artifacts of kind ``protected``
with lineage to what they protect. The originals stay as they are.

What is *shared* is what leaves the store through the download routes: a face or subject photo
is served as its newest protected copy when it has one (`shared_photo`), the original only when
asked for by name (``variant=original``). While a protection job for it is queued or running, a
shared read is refused rather than serving the unprotected photo. The user's own export holds
both, the originals and the protected copies (it goes to the user, not to the public).

Like a training job, it runs in three steps: `prepare_protection` reads the photos out of the
store, `run_protection` perturbs them anywhere (no store access), and the job's end stores the
copies (`protected_outputs`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from unipgen.core.usermodel import UserModel
from unipgen.errors import ConflictError, NotFoundError
from unipgen.memory.artifacts import PROTECTED
from unipgen.memory.jobs import OutputArtifact
from unipgen.schema.jobs import ProtectSpec

if TYPE_CHECKING:
    from unipgen.memory import MemoryStore
    from unipgen.settings import Settings

#: The class noun of a face photo (DreamBooth's "a photo of sks person").
FACE_NOUN = "person"


@dataclass(frozen=True)
class ProtectionInputs:
    """What one protection needs, read from the store: it can travel to a worker as is."""

    ref: str
    base: str | None
    device: str
    target: tuple[str, str]  # ("subject", key) or ("face", key)
    class_noun: str
    images: list[bytes]
    shas: list[str]
    spec: ProtectSpec

    @property
    def steps(self) -> int:
        """How many rounds the lease's progress counts."""
        return self.spec.rounds


@dataclass(frozen=True)
class ProtectedPhotos:
    """The protected copies of a target's photos, in the photos' order, ready to store."""

    target: tuple[str, str]
    images: list[bytes]
    metas: list[dict[str, Any]]
    losses: list[float] = field(default_factory=list)


def protect_spec(settings: Settings, *, subject: str | None = None, face: str | None = None,
                 seed: int = 0) -> ProtectSpec:
    """A protection job's spec with the budget of `settings` (`UNIPGEN_PROTECT_*`)."""
    return ProtectSpec(subject=subject, face=face, seed=seed, epsilon=settings.protect_epsilon,
                       step_size=settings.protect_step_size, rounds=settings.protect_rounds,
                       pgd_steps=settings.protect_pgd_steps, surrogate_steps=settings.protect_surrogate_steps,
                       method=settings.protect_method)


def protect_spec_of(settings: Settings, kind: str, key: str) -> ProtectSpec:
    """`protect_spec` for a target named by its kind ("subject" or "face") and key."""
    return protect_spec(settings, subject=key if kind == "subject" else None, face=key if kind == "face" else None)


def prepare_protection(model: UserModel, tenant: str, user: str, spec: ProtectSpec) -> ProtectionInputs:
    """Read the photos to protect and the profile's image model; errors name what is missing."""
    store = model.store
    backend = model.profile.backends.get("image")
    if backend is None:
        raise NotFoundError(f"profile {model.profile.name!r} has no image generator to protect against")
    kind, key = spec.target
    if kind == "subject":
        found = next((s for s in store.content.subjects(tenant, user) if s.key == key), None)
        if found is None:
            raise NotFoundError(f"unknown subject {key!r} of user {user!r}")
        shas, noun = found.image_shas, found.class_noun
        images = [store.blobs.get(sha) for sha in shas]
    else:
        photo, _ = store.content.media_blob(tenant, user, "face", key)
        images, noun = [photo], FACE_NOUN
        shas = [hashlib.sha256(photo).hexdigest()]
    return ProtectionInputs(ref=backend.ref or "tiny-random", base=backend.ref,
                            device=str(backend.options.get("device", "cpu")), target=(kind, key), class_noun=noun,
                            images=images, shas=shas, spec=spec)


def run_protection(inputs: ProtectionInputs, *, should_stop: Callable[[], bool] | None = None) -> ProtectedPhotos:
    """Perturb the photos (no store access: runs in any process)."""
    from unipgen.modalities.image_protect import ProtectionBudget, protect_images

    spec = inputs.spec
    budget = ProtectionBudget(epsilon=spec.epsilon, step_size=spec.step_size, rounds=spec.rounds,
                              pgd_steps=spec.pgd_steps, surrogate_steps=spec.surrogate_steps, method=spec.method)
    result = protect_images(inputs.ref, inputs.images, inputs.class_noun, budget=budget, seed=spec.seed,
                            device=inputs.device, should_stop=should_stop)
    kind, key = inputs.target
    metas = [{"protects": kind, kind: key, "position": position, "original_sha": sha, "psnr": round(image.psnr, 3),
              "max_change": image.max_change, **result.meta, "base": inputs.base}
             for position, (sha, image) in enumerate(zip(inputs.shas, result.images))]
    return ProtectedPhotos(inputs.target, [image.data for image in result.images], metas, result.losses)


def run_protection_task(inputs: ProtectionInputs) -> ProtectedPhotos:
    """`run_protection` as a Ray task: on one torch thread (the task asked Ray for no CPU)."""
    import torch

    torch.set_num_threads(1)
    return run_protection(inputs)


def protected_outputs(produced: ProtectedPhotos) -> list[OutputArtifact]:
    """The copies as artifacts of kind ``protected`` (PNG), each derived from what it protects."""
    kind, key = produced.target
    run = uuid.uuid4().hex[:8]
    return [OutputArtifact(f"protected-{kind}-{key[:200]}-{meta['position']}-{run}", PROTECTED, "image/png", data,
                           [produced.target], meta)
            for data, meta in zip(produced.images, produced.metas)]


def pending_protection(store: MemoryStore, tenant: str, user: str, kind: str, key: str) -> str | None:
    """The key of a protection job of `user`'s `kind` `key` that is queued or running, if any."""
    for status in ("running", "queued"):
        for job in store.jobs.jobs(tenant, user=user, status=status, limit=1000):
            if job.kind == "protect" and (job.spec.get(kind) == key):
                return job.key
    return None


def shared_photo(store: MemoryStore, tenant: str, user: str, kind: str, key: str,
                 position: int = 0) -> tuple[bytes, str, str | None]:
    """What a download of `user`'s face or subject photo serves: (bytes, media type, the
    protected copy's artifact key, or None for the original). A photo with no protected copy
    is served as it is, unless a protection job for it is under way (`ConflictError`)."""
    copies = store.artifacts.protected_copies(tenant, user, kind, key)
    if position in copies:
        data, media_type = store.artifacts.artifact_blob(tenant, copies[position].key)
        return data, media_type, copies[position].key
    pending = pending_protection(store, tenant, user, kind, key)
    if pending is not None:
        raise ConflictError(f"{kind} {key!r} of user {user!r} is being protected (job {pending}): "
                            "retry when the job has ended, or ask for variant=original")
    data, media_type = original_photo(store, tenant, user, kind, key, position)
    return data, media_type, None


def original_photo(store: MemoryStore, tenant: str, user: str, kind: str, key: str,
                   position: int = 0) -> tuple[bytes, str]:
    """The photo as uploaded: a face photo, or the subject's photo at `position` (from 0)."""
    if kind == "face":
        return store.content.media_blob(tenant, user, "face", key)
    return store.content.subject_photo(tenant, user, key, position)


__all__ = ["FACE_NOUN", "ProtectedPhotos", "ProtectionInputs", "original_photo", "pending_protection",
           "prepare_protection", "protect_spec", "protect_spec_of", "protected_outputs", "run_protection",
           "run_protection_task", "shared_photo"]
