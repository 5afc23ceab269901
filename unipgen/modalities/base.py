"""The contracts of the modality backends: `Backend` (text, image, video, audio, speech, 3D) and
`Captioner` (image to text).

A backend is built from its profile entry (the constructor arguments are its config), loads its
base model once in `setup`, and turns a batch of requests into outputs in `generate`: one list
of outputs per request, in order, the same bytes for the same seed. Personalization arrives in
the request's plan (method, prompt, adapters); files come from the `BlobFetcher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class Captioner(Protocol):
    """Image to text (the profile's ``caption`` backend): a caption of an image, or the answer to
    a question about it, in the model's own words. It takes image bytes, never the store, so any
    path holding an image (a stored one, an upload, one just generated) can caption it."""

    ref: str
    #: Whether its models run on random weights (`unipgen.tiny.is_random` of their references).
    random_weights: bool

    def setup(self) -> None:
        """Load the model (idempotent)."""
        ...

    def caption(self, images: Sequence[bytes]) -> list[str]:
        """One caption per image, in order; the same image gives the same words."""
        ...

    def answer(self, image: bytes, question: str) -> str:
        """The answer to `question` about `image`."""
        ...

    def models(self) -> dict[str, Any]:
        """What an output's meta records about the models that read the image."""
        ...
