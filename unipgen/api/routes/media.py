"""Uploads: face photos and voice samples (biometric: consent required, reads audited) and
subjects with their reference photos. Multipart forms; files are checked by `api.uploads`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.api.uploads import naming, read_audio, read_image
from unipgen.errors import EncoderFailedError, InvalidInputError
from unipgen.schema.api import ErrorBody, MediaPublic, SubjectPublic
from unipgen.schema.rules import PublicId

#: Uploads may also answer 415 (not the media it must be).
router = APIRouter(prefix="/v1/users/{user}", tags=["media"], responses={415: {"model": ErrorBody}})

Key = Annotated[PublicId, Form(description="The public id of this upload.")]
#: An upload's encoder process may die on it (a native crash): 503 `encoder_failed`, nothing stored.
ENCODER_FAILED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The encoder's process crashed on the file."}}
Consent = Annotated[bool, Form(description="The user's explicit consent to storing this biometric data.")]
MAX_SUBJECT_PHOTOS = 20


@router.post("/faces", status_code=status.HTTP_201_CREATED, response_model=MediaPublic, responses=ENCODER_FAILED)
async def add_face(user: str, key: Key, consent: Consent, file: Annotated[UploadFile, File()], svc: ServiceDep,
                   who: CallerDep) -> MediaPublic:
    """A photo of the user's face (JPEG, PNG...): stored with its identity embedding."""
    image, media_type = await read_image(file, svc.settings.max_blob_bytes, f"face {key!r}", svc.store.content.media_limits)
    await _encoded(repr(file.filename), svc.model.add_face, who.tenant, user, key, image, consent=consent)
    return MediaPublic(key=key, media_type=media_type)


@router.get("/faces", response_model=list[MediaPublic])
def list_faces(user: str, svc: ServiceDep, who: CallerDep) -> list[MediaPublic]:
    return [MediaPublic(key=k, media_type=t) for k, t in svc.store.content.media(who.tenant, user, "face")]


@router.get("/faces/{key}", response_class=Response, responses={200: {"content": {"image/*": {}}}})
def get_face(user: str, key: str, svc: ServiceDep, who: CallerDep) -> Response:
    """The photo itself. Every read is in the audit log."""
    return _read(svc, who, user, "face", key)


@router.post("/voices", status_code=status.HTTP_201_CREATED, response_model=MediaPublic, responses=ENCODER_FAILED)
async def add_voice(user: str, key: Key, consent: Consent, file: Annotated[UploadFile, File()], svc: ServiceDep,
                    who: CallerDep) -> MediaPublic:
    """A recording of the user's voice (WAV, FLAC, OGG), up to `UNIPGEN_MAX_AUDIO_SECONDS`."""
    audio, media_type = await read_audio(file, svc.settings.max_blob_bytes, svc.settings.max_audio_seconds,
                                         f"voice sample {key!r}", svc.store.content.media_limits)
    await _encoded(repr(file.filename), svc.model.add_voice, who.tenant, user, key, audio, consent=consent)
    return MediaPublic(key=key, media_type=media_type)


@router.get("/voices", response_model=list[MediaPublic])
def list_voices(user: str, svc: ServiceDep, who: CallerDep) -> list[MediaPublic]:
    return [MediaPublic(key=k, media_type=t) for k, t in svc.store.content.media(who.tenant, user, "voice")]


@router.get("/voices/{key}", response_class=Response, responses={200: {"content": {"audio/*": {}}}})
def get_voice(user: str, key: str, svc: ServiceDep, who: CallerDep) -> Response:
    """The recording itself. Every read is in the audit log."""
    return _read(svc, who, user, "voice", key)


@router.post("/subjects", status_code=status.HTTP_201_CREATED, response_model=SubjectPublic,
             responses=ENCODER_FAILED)
async def add_subject(user: str, key: Key, name: Annotated[str, Form(min_length=1, max_length=255)],
                      class_noun: Annotated[str, Form(min_length=1, max_length=64)],
                      files: Annotated[list[UploadFile], File(description="Reference photos of the subject.")],
                      svc: ServiceDep, who: CallerDep) -> SubjectPublic:
    """A personal subject (a pet, a bag) with 1 to 20 reference photos."""
    if not 1 <= len(files) <= MAX_SUBJECT_PHOTOS:
        raise InvalidInputError(f"subject {key!r}: send 1 to {MAX_SUBJECT_PHOTOS} photos, not {len(files)}")
    limit, limits = svc.settings.max_blob_bytes, svc.store.content.media_limits
    images = [(await read_image(f, limit, f"subject {key!r} photo {n + 1}", limits))[0] for n, f in enumerate(files)]
    await _encoded(", ".join(repr(f.filename) for f in files), svc.model.add_subject, who.tenant, user, key,
                   name=name, class_noun=class_noun, images=images)
    return SubjectPublic(key=key, name=name, class_noun=class_noun, images=len(images))


@router.get("/subjects", response_model=list[SubjectPublic])
def list_subjects(user: str, svc: ServiceDep, who: CallerDep) -> list[SubjectPublic]:
    return [SubjectPublic(key=s.key, name=s.name, class_noun=s.class_noun, images=len(s.image_shas))
            for s in svc.store.content.subjects(who.tenant, user)]


async def _encoded(files: str, write: Any, *args: Any, **kwargs: Any) -> None:
    """`write(*args, **kwargs)` (encode, then store) off the event loop; an encoder crash names the files."""
    try:
        await run_in_threadpool(write, *args, **kwargs)
    except EncoderFailedError as exc:
        raise naming(files, exc) from None


def _read(svc: ServiceDep, who: CallerDep, user: str, kind: str, key: str) -> Response:
    data, media_type = svc.store.content.media_blob(who.tenant, user, kind, key)
    svc.store.audit.record_audit(who.tenant, who.actor, f"read_{kind}", user=user, object_kind=kind, object_key=key)
    return Response(data, media_type=media_type)
