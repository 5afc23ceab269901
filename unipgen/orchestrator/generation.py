"""A generation's two ends around the backend: prepare (embed what a bulk load left without
vectors → context → plan → backend requests) and outputs → artifacts with lineage.

Every output is made through here, by a job (`unipgen.orchestrator.jobs.run_claimed`), whoever
runs it: the inline executor (the CLI, `unipgen worker`, the service, `InlineGenerator`) or Ray.
The backend sees only the request (or its best-of-N candidates, `best_of`, or a labels / scale
request's scoring prompts, `labels`) and a blob fetcher; choosing among candidates (or mixing the
scored answers with the user's own) and recording that each output was derived from every memory item the
context used (and the adapters loaded) happens here, so forgetting any of them removes the output
too. The job's end stores the artifacts, in the transaction that marks it succeeded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.jobs import OutputArtifact
from unipgen.orchestrator import best_of, labels
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
    scoring: labels.Scoring | None = None  # a labels / scale request's scoring

    @property
    def requests(self) -> list[GenerationRequest]:
        """What the executor's work sends to the backend, in one call; its outputs, one list per
        request, are what `output_artifacts` takes."""
        return self.scoring.requests if self.scoring is not None else self.candidates.requests


def prepare_generation(model: UserModel, tenant: str, user: str, modality: Modality, instruction: str,
                       options: GenerationOptions | None = None) -> PreparedGeneration:
    """Pending vectors → context → plan → request; everything a backend needs, as plain data."""
    options = options or GenerationOptions()
    embed_pending(model, tenant, [user])
    context = model.context(tenant, user, modality, instruction, for_generation=True,
                            preferences=best_of.needs_preferences(modality, options))
    return prepared_from(model, context, options)


def embed_pending(model: UserModel, tenant: str, users: Iterable[str]) -> int:
    """Text vectors for what a context reads and a bulk load (`unipgen ingest`, a store-level
    `add_items`) left without one: the tenant's catalog items, `users`' documents. Run when a
    generation is prepared, so a request gets the same context whoever runs it; returns how many."""
    return model.embed_missing(tenant, users)


def prepared_from(model: UserModel, context: UserContext, options: GenerationOptions | None) -> PreparedGeneration:
    """The request for a built context: its plan, the options, and the lineage sources."""
    options = options or GenerationOptions()
    context, provenance = _with_melody(context, options.melody)
    plan = model.plan(context)
    request = GenerationRequest(context=context, plan=plan, options=options)
    if options.scored:
        scoring = labels.plan(model, request)
        sources = list(dict.fromkeys([*_sources(provenance, plan), *scoring.sources]))
        return PreparedGeneration(scoring.requests[0], sources, best_of.Candidates([request]), scoring)
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
    if prepared.scoring is not None:
        outputs = labels.select(prepared.scoring, produced)
    else:
        outputs = best_of.select(model, prepared.request, prepared.candidates, produced)
    return [OutputArtifact(key=f"out-{uuid.uuid4().hex[:16]}", kind="output", media_type=output.media_type,
                           data=output.data, derived_from=prepared.sources,
                           meta={**output.meta, "modality": plan.modality, "profile": model.profile.name})
            for output in outputs]


def _sources(provenance: list[str], plan: PersonalizationPlan) -> list[tuple[str, str]]:
    """(kind, key) lineage sources: everything the context used, plus the adapters loaded."""
    pairs = [tuple(p.split(":", 1)) for p in provenance]
    pairs += [("artifact", key) for key in plan.adapters]
    return list(dict.fromkeys((k, v) for k, v in pairs if k in _LINEAGE_KINDS))
