"""Uploads: face photos and voice samples (biometric: consent required, reads audited) and
subjects with their reference photos. Multipart forms; files are checked by `api.uploads`.

Photos may be protected from fine-tuning (`protect=true` at upload, or `POST .../protections`):
a download then serves the protected copy (`variant=shared`, the default), the original only
when asked for (`variant=original`); see `unipgen.orchestrator.protection`. The user's consent
to training (apart from the consent to storing biometric data) is read and set here too."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.api.uploads import naming, read_audio, read_image
from unipgen.errors import EncoderFailedError, InvalidInputError
from unipgen.orchestrator.protection import original_photo, protect_spec_of, shared_photo
from unipgen.schema.api import ErrorBody, FacePublic, MediaPublic, SubjectPublic, TrainingConsentUpdate
from unipgen.schema.memory import TrainingConsent
from unipgen.schema.rules import PublicId

#: Uploads may also answer 415 (not the media it must be).
router = APIRouter(prefix="/v1/users/{user}", tags=["media"], responses={415: {"model": ErrorBody}})

Key = Annotated[PublicId, Form(description="The public id of this upload.")]
#: An upload's encoder process may die on it (a native crash): 503 `encoder_failed`, nothing stored.
ENCODER_FAILED: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The encoder's process crashed on the file."}}
Consent = Annotated[bool, Form(description="The user's explicit consent to storing this biometric data.")]
Protect = Annotated[bool, Form(description="Protect the photos from fine-tuning (Anti-DreamBooth) as a job; "
                                           "downloads serve the protected copies.")]
Variant = Annotated[Literal["shared", "original"], Query(
    description="shared: the protected copy when there is one (refused while a protection runs); original: as uploaded.")]
MAX_SUBJECT_PHOTOS = 20


@router.post("/faces", status_code=status.HTTP_201_CREATED, response_model=FacePublic, responses=ENCODER_FAILED)
async def add_face(user: str, key: Key, consent: Consent, file: Annotated[UploadFile, File()], svc: ServiceDep,
                   who: CallerDep, protect: Protect = False) -> FacePublic:
    """A photo of the user's face (JPEG, PNG...): stored with its identity embedding."""
    image, media_type = await read_image(file, svc.settings.max_blob_bytes, f"face {key!r}", svc.store.content.media_limits)
    await _encoded(repr(file.filename), svc.model.add_face, who.tenant, user, key, image, consent=consent)
    job = await run_in_threadpool(_protect, svc, who, user, "face", key) if protect else None
    return FacePublic(key=key, media_type=media_type, protection_job=job)


@router.get("/faces", response_model=list[MediaPublic])
def list_faces(user: str, svc: ServiceDep, who: CallerDep) -> list[MediaPublic]:
    return [MediaPublic(key=k, media_type=t) for k, t in svc.store.content.media(who.tenant, user, "face")]


@router.get("/faces/{key}", response_class=Response, responses={200: {"content": {"image/*": {}}}})
def get_face(user: str, key: str, svc: ServiceDep, who: CallerDep, variant: Variant = "shared") -> Response:
    """The photo itself: its protected copy when it has one (header `X-Unipgen-Variant`). Every
    read is in the audit log."""
    return _photo(svc, who, user, "face", key, 0, variant)


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
                      svc: ServiceDep, who: CallerDep, protect: Protect = False) -> SubjectPublic:
    """A personal subject (a pet, a bag) with 1 to 20 reference photos."""
    if not 1 <= len(files) <= MAX_SUBJECT_PHOTOS:
        raise InvalidInputError(f"subject {key!r}: send 1 to {MAX_SUBJECT_PHOTOS} photos, not {len(files)}")
    limit, limits = svc.settings.max_blob_bytes, svc.store.content.media_limits
    images = [(await read_image(f, limit, f"subject {key!r} photo {n + 1}", limits))[0] for n, f in enumerate(files)]
    await _encoded(", ".join(repr(f.filename) for f in files), svc.model.add_subject, who.tenant, user, key,
                   name=name, class_noun=class_noun, images=images)
    job = await run_in_threadpool(_protect, svc, who, user, "subject", key) if protect else None
    return SubjectPublic(key=key, name=name, class_noun=class_noun, images=len(images), protection_job=job)


@router.get("/subjects", response_model=list[SubjectPublic])
def list_subjects(user: str, svc: ServiceDep, who: CallerDep) -> list[SubjectPublic]:
    return [SubjectPublic(key=s.key, name=s.name, class_noun=s.class_noun, images=len(s.image_shas))
            for s in svc.store.content.subjects(who.tenant, user)]


@router.get("/subjects/{key}/photos/{position}", response_class=Response,
            responses={200: {"content": {"image/*": {}}}})
def get_subject_photo(user: str, key: str, position: int, svc: ServiceDep, who: CallerDep,
                      variant: Variant = "shared") -> Response:
    """A subject's photo (`position` from 0): its protected copy when it has one (header
    `X-Unipgen-Variant`). Every read is in the audit log."""
    return _photo(svc, who, user, "subject", key, position, variant)


@router.get("/training-consent", response_model=TrainingConsent)
def get_training_consent(user: str, svc: ServiceDep, who: CallerDep) -> TrainingConsent:
    """Whether adapters may be trained on the user's faces and subjects (LoRA, textual inversion)."""
    return svc.store.users.training_consent(who.tenant, user)


@router.put("/training-consent", response_model=TrainingConsent)
def set_training_consent(user: str, body: TrainingConsentUpdate, svc: ServiceDep, who: CallerDep) -> TrainingConsent:
    """Record the user's consent to training (or its withdrawal), with an audit entry. Without it,
    training on their faces or subjects fails with 403 `consent_required`."""
    return svc.store.users.set_training_consent(who.tenant, user, body.granted, actor=who.actor)


def _protect(svc: ServiceDep, who: CallerDep, user: str, kind: str, key: str) -> str:
    """Queue the protection of what was just uploaded; if it cannot be queued, the upload is
    undone (a photo asked to be protected is never kept unprotected by a failed request)."""
    spec = protect_spec_of(svc.settings, kind, key)
    try:
        job = svc.queue(who.tenant, who.actor, user, spec, None, "protect", {"target": f"{kind}:{key}"})
    except Exception:
        svc.store.privacy.forget_item(who.tenant, kind, key, user=user)
        raise
    return str(job.key)


def _photo(svc: ServiceDep, who: CallerDep, user: str, kind: str, key: str, position: int, variant: str) -> Response:
    served: str | None = None
    if variant == "original":
        data, media_type = original_photo(svc.store, who.tenant, user, kind, key, position)
    else:
        data, media_type, served = shared_photo(svc.store, who.tenant, user, kind, key, position)
    detail: dict[str, Any] = {"variant": "protected" if served else "original"}
    if kind == "subject":
        detail["position"] = position
    svc.store.audit.record_audit(who.tenant, who.actor, f"read_{kind}", user=user, object_kind=kind, object_key=key,
                                 detail=detail)
    headers = {"X-Unipgen-Variant": detail["variant"]} | ({"X-Unipgen-Artifact": served} if served else {})
    return Response(data, media_type=media_type, headers=headers)


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
