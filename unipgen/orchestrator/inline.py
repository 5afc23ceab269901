"""Run a generation in this process: context → plan → backend → artifacts with lineage.

This is the embedded default's path for one request. The backend sees only the request and a
blob fetcher; storing the outputs, and recording that each was derived from every memory item
the context used (and the adapters loaded), happens here, so forgetting any of them removes
the output too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from unipgen.core.usermodel import UserModel
from unipgen.errors import NotFoundError
from unipgen.memory.blobs import sha256_hex
from unipgen.modalities import load_backend
from unipgen.schema.context import Modality, PersonalizationPlan
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
        context = self.model.context(tenant, user, modality, instruction)
        plan = self.model.plan(context)
        request = GenerationRequest(context=context, plan=plan, options=options or GenerationOptions())
        outputs = backend.generate([request], self.model.store.blobs.get)[0]
        sources = _sources(context.provenance, plan)
        return [self._store(tenant, user, output, plan, sources) for output in outputs]

    def _store(self, tenant: str, user: str, output: GeneratedOutput, plan: PersonalizationPlan,
               sources: list[tuple[str, str]]) -> GeneratedArtifact:
        store = self.model.store
        key = f"out-{uuid.uuid4().hex[:16]}"
        meta = {**output.meta, "modality": plan.modality, "profile": self.model.profile.name}
        store.add_artifact(tenant, key, kind="output", media_type=output.media_type, data=output.data, user=user,
                           derived_from=sources, meta=meta)
        sha = sha256_hex(output.data)
        return GeneratedArtifact(key, output.media_type, sha, store.blobs.local_path(sha), plan)


def _sources(provenance: list[str], plan: PersonalizationPlan) -> list[tuple[str, str]]:
    """(kind, key) lineage sources: everything the context used, plus the adapters loaded."""
    pairs = [tuple(p.split(":", 1)) for p in provenance]
    pairs += [("artifact", key) for key in plan.adapters]
    return list(dict.fromkeys((k, v) for k, v in pairs if k in _LINEAGE_KINDS))
