"""The contract every modality backend keeps (text, image, video, audio, 3D).

A backend is built from its profile entry (the constructor arguments are its config), loads its
base model once in `setup`, and turns a batch of requests into outputs in `generate`: one list
of outputs per request, in order, the same bytes for the same seed. Personalization arrives in
the request's plan (method, prompt, adapters); files come from the `BlobFetcher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from unipgen.schema.context import Modality
from unipgen.schema.generation import BlobFetcher, GeneratedOutput, GenerationRequest


@runtime_checkable
class Backend(Protocol):
    modality: Modality
    #: Personalization methods this backend can apply (plan.method values).
    methods: frozenset[str]

    def setup(self) -> None:
        """Load the base model (idempotent)."""
        ...

    def generate(self, requests: Sequence[GenerationRequest], fetch: BlobFetcher) -> list[list[GeneratedOutput]]:
        """One list of outputs per request, in order; deterministic under `options.seed`."""
        ...
