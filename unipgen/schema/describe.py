"""Describing an image for a user (`unipgen describe`, `POST /v1/users/{user}/descriptions`):
what is asked, and the stored description that comes back.

The image is one of the user's own: a stored image artifact, a subject's first reference photo,
or a file sent with the request (read, not kept). The description is a caption, or the answer
to `question`, written in the user's style (`unipgen.orchestrator.describe`).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from unipgen.schema.rules import PublicId

#: The longest question, in characters.
MAX_QUESTION_CHARS = 500
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _question(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("the question is empty")
    if _CONTROL.search(value):
        raise ValueError("the question holds a control character or a lone surrogate")
    return value


def _file_name(value: str) -> str:
    """An uploaded file's name, kept only to name it: control characters and lone surrogates dropped."""
    return _CONTROL.sub("", value).strip()[:255] or "upload"


Question = Annotated[str, Field(max_length=MAX_QUESTION_CHARS), AfterValidator(_question)]
FileName = Annotated[str, AfterValidator(_file_name)]
ImageSource = Literal["artifact", "subject", "file"]


class DescribeRequest(BaseModel):
    """Which image to describe (exactly one of `artifact`, `subject`, `file`), and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: PublicId | None = Field(default=None, description="One of the user's stored image outputs.")
    subject: PublicId | None = Field(default=None, description="One of the user's subjects: its first photo.")
    file: FileName | None = Field(default=None, description="The name of a photo sent with the request.")
    question: Question | None = Field(default=None, description="A question about the image; none: a caption.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Sampling seed of the text model.")
    max_new_tokens: int = Field(default=60, ge=1, le=512, description="The longest description, in tokens.")

    @model_validator(mode="after")
    def _one_image(self) -> DescribeRequest:
        given = [name for name in ("artifact", "subject", "file") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"name exactly one image: an artifact, a subject or a file (given: {given or 'none'})")
        return self

    @property
    def source(self) -> ImageSource:
        return "artifact" if self.artifact is not None else "subject" if self.subject is not None else "file"


class DescribedImage(BaseModel):
    """The image that was described: where it came from, its bytes' sha256 and media type."""

    source: ImageSource
    key: str = Field(description="The artifact's or subject's key, or the uploaded file's name.")
    sha256: str
    media_type: str


class Description(BaseModel):
    """A stored description: the text in the user's style, and what it came from.

    `caption` (and `answer` for a question) are the image model's own words; `text` is what the
    profile's text model wrote from them in the user's style, with their retrieved documents in
    the prompt (`evidence`) and their text adapter when trained (`method` ``lora``). The
    description is stored as the artifact `key` (kind ``output``, meta ``task``), derived from
    the image and the memory it used (`derived_from`), so forgetting any of them removes it.
    """

    key: str
    text: str
    question: str | None = None
    caption: str
    answer: str | None = None
    image: DescribedImage
    method: str
    evidence: list[str] = Field(default_factory=list)
    adapters: list[str] = Field(default_factory=list)
    derived_from: list[str] = Field(default_factory=list, description="Lineage, as 'kind:key'.")
    models: dict[str, str | bool | None] = Field(default_factory=dict, description=(
        "The image and text models' references, and whether any ran on random weights."))


__all__ = ["MAX_QUESTION_CHARS", "DescribeRequest", "DescribedImage", "Description", "ImageSource", "Question"]
