"""Describe one of a user's images (a stored image output, a subject's photo, or a photo sent with
the request): a caption, or the answer to a question, in the user's style, stored with its lineage.

A multipart form, so that a photo can come with it; the photo is checked like any upload (size,
header, declared type against the content) and read, not stored. The models run in the service
process, one request at a time on the text model it shares with chat."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status
from starlette.concurrency import run_in_threadpool

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.api.uploads import read_image
from unipgen.schema.api import ErrorBody
from unipgen.schema.describe import MAX_QUESTION_CHARS, Description

router = APIRouter(prefix="/v1/users/{user}", tags=["describe"])


@router.post("/descriptions", status_code=status.HTTP_201_CREATED, response_model=Description,
             responses={415: {"model": ErrorBody, "description": "The image is not an image."}})
async def describe(
    user: str, svc: ServiceDep, who: CallerDep,
    artifact: Annotated[str | None, Form(description="One of the user's stored image outputs.")] = None,
    subject: Annotated[str | None, Form(description="One of the user's subjects: its first photo.")] = None,
    question: Annotated[str | None, Form(max_length=MAX_QUESTION_CHARS,
                                         description="A question about the image; none: a caption.")] = None,
    seed: Annotated[int, Form(ge=0, le=2**31 - 1, description="Sampling seed of the text model.")] = 0,
    max_new_tokens: Annotated[int, Form(ge=1, le=512, description="The longest description.")] = 60,
    file: Annotated[UploadFile | None, File(description="A photo (JPEG, PNG...), read and not stored.")] = None,
) -> Description:
    """Describe exactly one image (`artifact`, `subject` or `file`) for the user: the image model's
    caption (and answer to `question`), rewritten by the text model in the user's style, with
    their retrieved documents in the prompt and their text adapter when trained. The description
    is stored as an output artifact derived from the image and the memory it used."""
    await run_in_threadpool(svc.store.users.profile, who.tenant, user)  # an unknown user: 404 before the upload
    data, name = None, None
    if file is not None:
        name = file.filename or "upload"
        data, _ = await read_image(file, svc.settings.max_blob_bytes, f"photo {name!r}", svc.store.content.media_limits)
    request = {"artifact": artifact, "subject": subject, "file": name, "question": question, "seed": seed,
               "max_new_tokens": max_new_tokens}
    described: Description = await run_in_threadpool(svc.describer.describe, who.tenant, user, request, data)
    await run_in_threadpool(svc.store.audit.record_audit, who.tenant, who.actor, "describe", user=user,
                            object_kind="artifact", object_key=described.key)
    return described
