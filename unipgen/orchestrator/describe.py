"""Describe an image for a user: a caption, or the answer to a question, in the user's style.

A description is: the image (one of the user's stored image outputs, a subject's first
reference photo, or a photo sent with the request) → the profile's image-to-text backend
(`modalities.base.Captioner`: BLIP) for the raw caption, and the raw answer when there is a
question → a text request whose instruction carries those words, prepared like any text
generation (`prepare_generation`: the user's documents retrieved for it go in the prompt, and
their text adapter is loaded when trained) → the profile's text model → a stored artifact
(kind ``output``, meta ``task`` = ``describe``), derived from the image and from everything the
text request used, so forgetting the image, a document it quoted, the adapter or the user
removes it. The uploaded photo itself is read, not stored: the artifact records its sha256.

Like a chat turn, a description runs in the caller's process (the CLI, a service worker), not
as a queued job: it is interactive. It shares the text model (and its lock) of a `Chat` when
given one, so a service holds one copy of the LM.

`Describer.read` is the image-to-text step alone, on bytes in memory: a generation path can
caption an image it has just made without storing it first.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from unipgen.errors import NotFoundError, UnsupportedMediaError
from unipgen.memory.media import check_size, image_header
from unipgen.memory.parsing import parse_rows
from unipgen.orchestrator.chat import Chat
from unipgen.orchestrator.generation import prepare_generation
from unipgen.schema.describe import DescribedImage, DescribeRequest, Description, ImageSource
from unipgen.schema.generation import GenerationOptions
from unipgen.tiny import has_random_weights

if TYPE_CHECKING:
    from unipgen.core.usermodel import UserModel
    from unipgen.modalities.base import Captioner

#: The `task` in a description artifact's meta.
TASK = "describe"
MEDIA_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class ImageToDescribe:
    """An image read for a description: its bytes, where they came from, and the lineage source
    it adds to the description (None for an upload, which is not stored)."""

    data: bytes
    described: DescribedImage
    source: tuple[str, str] | None


def instruction(caption: str, question: str | None = None, answer: str | None = None) -> str:
    """The text request a description makes of the image model's words: the retrieval query and
    the prompt's instruction (the user's documents and profile come before it in the prompt)."""
    if question is None:
        return ("Write a caption for this photo the way this user would, in their own words and style, in one or "
                f"two sentences, keeping what the photo shows.\nThe photo shows: {caption}")
    return ("Answer this question about a photo the way this user would, in their own words and style, in one or "
            f"two sentences.\nQuestion: {question}\nThe photo shows: {caption}\nAnswer seen in the photo: {answer}")


class Describer:
    """Descriptions of images for the users of one user model (see the module doc).

    `captioner`: the image-to-text backend (default: the profile's ``caption`` entry, loaded on
    first use); `chat`: the chat whose text model and lock are shared (default: a new one).
    """

    def __init__(self, model: UserModel, *, captioner: Captioner | None = None, chat: Chat | None = None) -> None:
        self.model = model
        self._captioner = captioner
        self.chat = chat or Chat(model)

    @property
    def captioner(self) -> Captioner:
        """The profile's image-to-text backend, loaded on first use."""
        if self._captioner is None:
            from unipgen.modalities import CAPTION, load_captioner

            spec = self.model.profile.backends.get(CAPTION)
            if spec is None:
                raise NotFoundError(f"profile {self.model.profile.name!r} has no {CAPTION!r} backend "
                                    "(image to text): add one to describe images")
            captioner = load_captioner(spec)
            captioner.setup()
            self._captioner = captioner
        return self._captioner

    # -- the steps -------------------------------------------------------------------------------

    def image(self, tenant: str, user: str, request: DescribeRequest, data: bytes | None = None) -> ImageToDescribe:
        """The image `request` names, read from the store (an artifact or a subject of `user`) or
        checked as an upload (`data`: size, then header, nothing decoded)."""
        store = self.model.store
        if request.artifact is not None:
            data, media_type = store.artifacts.artifact_blob(tenant, request.artifact, user=user)
            if not media_type.startswith("image/"):
                raise UnsupportedMediaError(f"artifact {request.artifact!r} is {media_type}, not an image")
            return _read("artifact", request.artifact, data, media_type, ("artifact", request.artifact))
        if request.subject is not None:
            subject = next((s for s in store.content.subjects(tenant, user) if s.key == request.subject), None)
            if subject is None or not subject.image_shas:
                raise NotFoundError(f"unknown subject {request.subject!r} of user {user!r} (or it has no photo)")
            data = store.blobs.get(subject.image_shas[0])
            media_type = image_header(data, f"subject {subject.key!r} photo 1", store.content.media_limits)
            return _read("subject", subject.key, data, media_type, ("subject", subject.key))
        name = request.file or "upload"
        if data is None:
            raise NotFoundError(f"no file {name!r} came with the request")
        check_size(data, store.content.max_blob_bytes, f"photo {name!r}")
        media_type = image_header(data, f"photo {name!r}", store.content.media_limits)
        return _read("file", name, data, media_type, None)

    def read(self, image: bytes, question: str | None = None) -> tuple[str, str | None]:
        """(caption, answer) of `image` by the image-to-text backend alone, in its own words (the
        answer is None without a question). Runs on bytes in memory: nothing is stored."""
        captioner = self.captioner
        with self.chat.lock:  # the models of one user model run one request at a time
            [caption] = captioner.caption([image])
            answer = captioner.answer(image, question) if question is not None else None
        return caption or "(no caption)", answer

    def describe(self, tenant: str, user: str, request: DescribeRequest | dict[str, Any],
                 data: bytes | None = None) -> Description:
        """Describe the image `request` names for `user`, in their style, and store the description."""
        asked = parse_rows([request], DescribeRequest, "describe request")[0]
        self.model.store.users.profile(tenant, user)  # an unknown user fails first, naming the user
        image = self.image(tenant, user, asked, data)
        return self.written(tenant, user, asked, image)

    def written(self, tenant: str, user: str, request: DescribeRequest, image: ImageToDescribe) -> Description:
        """The description of `image`: read by the image model, written by the text model in the
        user's style, stored with its lineage."""
        caption, answer = self.read(image.data, request.question)
        options = GenerationOptions(seed=request.seed, max_new_tokens=request.max_new_tokens)
        prepared = prepare_generation(self.model, tenant, user, "text",
                                      instruction(caption, request.question, answer), options)
        with self.chat.lock:
            [[output]] = self.chat.backend.generate([prepared.request], self.model.store.blobs.get)
        said = output.data.decode("utf-8", errors="replace").strip()
        text = said or answer or caption  # a model may say nothing: the image model's words stand
        sources = list(dict.fromkeys([*([image.source] if image.source else []), *prepared.sources]))
        plan = prepared.request.plan
        models = {"caption_model": self.captioner.ref, "text_model": output.meta.get("model"),
                  "random_weights": self.captioner.random_weights or has_random_weights(self.chat.backend)}
        meta = {**output.meta, "modality": "text", "profile": self.model.profile.name, "task": TASK,
                "question": request.question, "caption": caption, "answer": answer,
                "image": image.described.model_dump(), "captioner": self.captioner.models(),
                "evidence": plan.evidence}
        key = f"desc-{uuid.uuid4().hex[:16]}"
        self.model.store.artifacts.add_artifact(tenant, key, kind="output", media_type=MEDIA_TYPE,
                                                data=text.encode("utf-8"), user=user, derived_from=sources, meta=meta)
        return Description(key=key, text=text, question=request.question, caption=caption, answer=answer,
                           image=image.described, method=plan.method, evidence=plan.evidence,
                           adapters=plan.adapters, derived_from=[f"{kind}:{k}" for kind, k in sources], models=models)


def _read(source: ImageSource, key: str, data: bytes, media_type: str,
          lineage: tuple[str, str] | None) -> ImageToDescribe:
    described = DescribedImage(source=source, key=key, sha256=hashlib.sha256(data).hexdigest(), media_type=media_type)
    return ImageToDescribe(data, described, lineage)


__all__ = ["MEDIA_TYPE", "TASK", "Describer", "ImageToDescribe", "instruction"]
