"""Run a generation in this process: context → plan → backend → artifacts with lineage.

This is the embedded default's path for one request. The backend sees only the request (or its
best-of-N candidates, `best_of`) and a blob fetcher; choosing among candidates, storing the
outputs, and recording that each was derived from every memory item the context used (and the
adapters loaded), happens here, so forgetting any of them removes the output too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.blobs import sha256_hex
from unipgen.memory.jobs import OutputArtifact
from unipgen.modalities import load_backend
from unipgen.orchestrator import best_of
from unipgen.schema.context import Modality, PersonalizationPlan, UserContext
from unipgen.schema.generation import GeneratedOutput, GenerationOptions, GenerationRequest

#: Provenance kinds that lineage can point to (UserContext.provenance uses "kind:key").
_LINEAGE_KINDS = {"user", "item", "document", "face", "subject", "voice", "artifact"}


@dataclass(frozen=True)
class GeneratedArtifact:
    """One stored output: its artifact key, media type, blob, and where its file is (if local)."""

    key: str
    media_type: str
    blob_sha: str
    path: str | None
    plan: PersonalizationPlan


@dataclass(frozen=True)
class PreparedGeneration:
    """A backend request built from the store, the memory items its outputs derive from, and
    the requests the backend runs for it (itself, or its best-of-N candidates)."""

    request: GenerationRequest
    sources: list[tuple[str, str]]
    candidates: best_of.Candidates

    @property
    def requests(self) -> list[GenerationRequest]:
        """What the executor's work sends to the backend, in one call; its outputs, one list per
        request, are what `output_artifacts` takes."""
        return self.candidates.requests


def prepare_generation(model: UserModel, tenant: str, user: str, modality: Modality, instruction: str,
                       options: GenerationOptions | None = None) -> PreparedGeneration:
    """Context → plan → request; everything a backend needs, as plain data."""
    options = options or GenerationOptions()
    context = model.context(tenant, user, modality, instruction, for_generation=True,
                            preferences=best_of.needs_preferences(modality, options))
    return prepared_from(model, context, options)


def prepared_from(model: UserModel, context: UserContext, options: GenerationOptions | None) -> PreparedGeneration:
    """The request for a built context: its plan, the options, and the lineage sources."""
    options = options or GenerationOptions()
    context, provenance = _with_melody(context, options.melody)
    plan = model.plan(context)
    request = GenerationRequest(context=context, plan=plan, options=options)
    return PreparedGeneration(request, _sources(provenance, plan), best_of.plan(model, request))


def _with_melody(context: UserContext, melody: str | None) -> tuple[UserContext, list[str]]:
    """The context with the recording `melody` names as its melody, which joins the lineage."""
    if melody is None:
        return context, context.provenance
    if context.modality != "audio":
        raise InvalidInputError(f"melody applies to music (audio) requests, not {context.modality!r}")
    shas = context.conditioning.voice_samples
    if melody not in shas:
        raise NotFoundError(f"user {context.user!r} has no voice recording {melody!r} to take a melody from; "
                            f"theirs: {sorted(shas) or 'none'}")
    conditioning = context.conditioning.model_copy(update={"melody": shas[melody]})
    provenance = [*context.provenance, f"voice:{melody}"]
    return context.model_copy(update={"conditioning": conditioning, "provenance": provenance}), provenance


def output_artifacts(model: UserModel, prepared: PreparedGeneration,
                     produced: list[list[GeneratedOutput]]) -> list[OutputArtifact]:
    """The artifacts to store for what the backend produced for `prepared.requests` (one list of
    outputs per request): the outputs kept (best-of-N chooses here), each derived from what the
    request used."""
    plan = prepared.request.plan
    outputs = best_of.select(model, prepared.request, prepared.candidates, produced)
    return [OutputArtifact(key=f"out-{uuid.uuid4().hex[:16]}", kind="output", media_type=output.media_type,
                           data=output.data, derived_from=prepared.sources,
                           meta={**output.meta, "modality": plan.modality, "profile": model.profile.name})
            for output in outputs]


class InlineGenerator:
    """Generates for users with the backends of one profile, loaded once and kept."""

    def __init__(self, model: UserModel) -> None:
        self.model = model
        self._backends: dict[str, Any] = {}

    def backend(self, modality: Modality) -> Any:
        if modality not in self._backends:
            specs = self.model.profile.backends
            if modality not in specs:
                raise NotFoundError(f"profile {self.model.profile.name!r} has no {modality!r} generator")
            backend = load_backend(specs[modality])
            backend.setup()
            self._backends[modality] = backend
        return self._backends[modality]

    def generate(self, tenant: str, user: str, modality: Modality, instruction: str,
                 options: GenerationOptions | None = None) -> list[GeneratedArtifact]:
        """Personalized outputs for one request, stored as artifacts of `user`."""
        backend = self.backend(modality)  # an unknown modality fails before any work
        prepared = prepare_generation(self.model, tenant, user, modality, instruction, options)
        produced = backend.generate(prepared.requests, self.model.store.blobs.get)
        stored = []
        for out in output_artifacts(self.model, prepared, produced):
            self.model.store.artifacts.add_artifact(tenant, out.key, kind=out.kind, media_type=out.media_type, data=out.data,
                                          user=user, derived_from=out.derived_from, meta=out.meta)
            stored.append(generated_artifact(self.model, out, prepared.request.plan))
        return stored


def generated_artifact(model: UserModel, out: OutputArtifact, plan: PersonalizationPlan) -> GeneratedArtifact:
    sha = sha256_hex(out.data or b"")
    return GeneratedArtifact(out.key, out.media_type, sha, model.store.blobs.local_path(sha), plan)


def _sources(provenance: list[str], plan: PersonalizationPlan) -> list[tuple[str, str]]:
    """(kind, key) lineage sources: everything the context used, plus the adapters loaded."""
    pairs = [tuple(p.split(":", 1)) for p in provenance]
    pairs += [("artifact", key) for key in plan.adapters]
    return list(dict.fromkeys((k, v) for k, v in pairs if k in _LINEAGE_KINDS))
