"""Users and what they are: profile attributes, behavior events, documents, the catalog, the
user context; export and forget."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.api.routes.media import ENCODER_FAILED
from unipgen.api.uploads import naming, read_image
from unipgen.errors import EncoderFailedError, InvalidInputError
from unipgen.memory.parsing import parse_rows
from unipgen.schema.api import (
    ContextRequest,
    Count,
    DocumentsCreate,
    ErrorBody,
    EventsCreate,
    ItemsCreate,
    MessagesCreate,
    ProfileValue,
    RecommendationRequest,
    UserCreate,
    UserPublic,
)
from unipgen.schema.context import Recommendations, UserContext
from unipgen.schema.memory import (
    DocumentIn,
    EventIn,
    EventRecord,
    ForgetReport,
    ItemIn,
    UserSummary,
)
from unipgen.schema.messages import MessageIn

router = APIRouter(prefix="/v1", tags=["users"])

#: Route names of the user's kinds of memory that `DELETE /v1/users/{user}/{kind}/{key}` forgets.
FORGETTABLE = {"faces": "face", "voices": "voice", "documents": "document", "subjects": "subject"}


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def create_user(body: UserCreate, svc: ServiceDep, who: CallerDep) -> UserPublic:
    svc.store.users.create_user(who.tenant, body.key)
    return UserPublic(tenant=who.tenant, key=body.key)


@router.get("/users", response_model=list[str])
def list_users(svc: ServiceDep, who: CallerDep) -> list[str]:
    return svc.store.users.list_users(who.tenant)


@router.get("/users/{user}", response_model=UserSummary)
def get_user(user: str, svc: ServiceDep, who: CallerDep) -> UserSummary:
    return svc.store.users.user_summary(who.tenant, user)


@router.get("/users/{user}/profile", response_model=dict[str, Any])
def get_profile(user: str, svc: ServiceDep, who: CallerDep) -> dict[str, Any]:
    return svc.store.users.profile(who.tenant, user)


@router.put("/users/{user}/profile/{name}", response_model=dict[str, Any])
def set_profile(user: str, name: str, body: ProfileValue, svc: ServiceDep, who: CallerDep) -> dict[str, Any]:
    """Set one attribute (the previous value is kept as history); returns the whole profile."""
    svc.store.users.set_profile(who.tenant, user, name, body.value)
    return svc.store.users.profile(who.tenant, user)


@router.post("/events", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_event(body: EventIn, svc: ServiceDep, who: CallerDep) -> Count:
    return Count(count=svc.store.events.ingest_events(who.tenant, [body]))


@router.post("/events/bulk", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_events(body: EventsCreate, svc: ServiceDep, who: CallerDep) -> Count:
    """All the events or, on any error, none."""
    return Count(count=svc.store.events.ingest_events(who.tenant, body.events, create_users=body.create_users))


@router.get("/users/{user}/events", response_model=list[EventRecord])
def list_events(user: str, svc: ServiceDep, who: CallerDep,
                limit: int | None = Query(default=None, ge=1, le=100_000)) -> list[EventRecord]:
    """The user's events, oldest first; each `id` addresses the event for deletion."""
    return svc.store.events.events(who.tenant, user, limit=limit)


@router.delete("/users/{user}/events/{event_id}", response_model=ForgetReport)
def delete_event(user: str, event_id: int, svc: ServiceDep, who: CallerDep) -> ForgetReport:
    """Delete one event (its `id` from the listing) and every output derived from the user's history."""
    report = svc.store.privacy.delete_events(who.tenant, user, ids=[event_id])
    svc.store.audit.record_audit(who.tenant, who.actor, "delete_events", user=user, detail={"ids": [event_id]})
    return report


@router.delete("/users/{user}/events", response_model=ForgetReport)
def delete_events(
    user: str, svc: ServiceDep, who: CallerDep,
    type: Annotated[str | None, Query(description="Only events of this type.")] = None,
    item: Annotated[str | None, Query(description="Only events on this catalog item.")] = None,
    since: Annotated[datetime | None, Query(description="Only events at or after this time (ISO 8601, zoned).")] = None,
    until: Annotated[datetime | None, Query(description="Only events before this time (ISO 8601, zoned).")] = None,
) -> ForgetReport:
    """Delete the user's events matching every filter given (all of them with none), and every
    output derived from the user's history."""
    report = svc.store.privacy.delete_events(who.tenant, user, type=type, item=item, since=since, until=until)
    detail = {k: str(v) for k, v in {"type": type, "item": item, "since": since, "until": until}.items() if v is not None}
    svc.store.audit.record_audit(who.tenant, who.actor, "delete_events", user=user, detail=detail or None)
    return report


@router.post("/items", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_items(body: ItemsCreate, svc: ServiceDep, who: CallerDep) -> Count:
    """Catalog items, their texts embedded on the way in. An item with an image is uploaded
    with `POST /v1/items/{item}` (a multipart form): JSON carries no files."""
    pictured = next((item.key for item in body.items if item.image is not None), None)
    if pictured is not None:
        raise InvalidInputError(f"item {pictured!r} has an image: upload it with POST /v1/items/{{item}} "
                                "(multipart form), not inside JSON")
    return Count(count=svc.model.add_items(who.tenant, body.items, exist_ok=body.exist_ok))


@router.post("/items/{item}", status_code=status.HTTP_201_CREATED, response_model=Count,
             responses={415: {"model": ErrorBody}, **ENCODER_FAILED})
async def add_item(item: str, text: Annotated[str, Form(min_length=1, description="What the item is.")],
                   svc: ServiceDep, who: CallerDep,
                   image: Annotated[UploadFile | None, File(description="The item's picture (JPEG, PNG...).")] = None,
                   meta: Annotated[str | None, Form(description="A JSON object of metadata.")] = None,
                   exist_ok: Annotated[bool, Form()] = False) -> Count:
    """One catalog item from a multipart form, with its image: embedded as text and as image."""
    what = f"image of item {item!r}"
    data = None if image is None else (await read_image(image, svc.settings.max_blob_bytes, what,
                                                        svc.store.content.media_limits))[0]
    row = parse_rows([{"key": item, "text": text, "image": data, "meta": _json_object(meta, "meta")}], ItemIn, "item")
    try:
        return Count(count=await run_in_threadpool(svc.model.add_items, who.tenant, row, exist_ok=exist_ok))
    except EncoderFailedError as exc:
        raise naming(repr(image.filename if image is not None else "upload"), exc) from None


def _json_object(text: str | None, what: str) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


@router.post("/users/{user}/documents", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_documents(user: str, body: DocumentsCreate, svc: ServiceDep, who: CallerDep) -> Count:
    return Count(count=svc.model.add_documents(who.tenant, user, body.documents))


@router.get("/users/{user}/documents", response_model=list[DocumentIn])
def list_documents(user: str, svc: ServiceDep, who: CallerDep) -> list[DocumentIn]:
    return svc.store.content.documents(who.tenant, user)


@router.post("/users/{user}/messages", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_messages(user: str, body: MessagesCreate, svc: ServiceDep, who: CallerDep) -> Count:
    """Turns of a conversation, appended in order after the user's stored ones (all or none)."""
    return Count(count=svc.model.add_messages(who.tenant, user, body.messages))


@router.get("/users/{user}/messages", response_model=list[MessageIn])
def list_messages(user: str, svc: ServiceDep, who: CallerDep) -> list[MessageIn]:
    return svc.model.messages(who.tenant, user)


@router.post("/users/{user}/context", response_model=UserContext)
def get_context(user: str, body: ContextRequest, svc: ServiceDep, who: CallerDep) -> UserContext:
    """What a generation for this request would see: evidence, preferences, conditioning."""
    context = svc.model.context(who.tenant, user, body.modality, body.instruction)
    biometric = [p for p in context.provenance if p.split(":", 1)[0] in ("face", "voice")]
    if biometric:  # the context carries face or voice embeddings: a read of biometric data
        svc.store.audit.record_audit(who.tenant, who.actor, "read_context", user=user, detail={"used": biometric})
    return context


@router.post("/users/{user}/recommendations", response_model=Recommendations)
def recommend(user: str, body: RecommendationRequest, svc: ServiceDep, who: CallerDep) -> Recommendations:
    """Items the user is likeliest to want next, each with the user's events that weigh most for it;
    ranked in the tenant's fitted behavior space (`POST /v1/fits`), or by text before any fit."""
    return svc.model.recommend(who.tenant, user, k=body.k, diversity=body.diversity, include_seen=body.include_seen,
                               kind=body.kind)


@router.get("/users/{user}/export", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "The user's archive."}})
def export_user(user: str, svc: ServiceDep, who: CallerDep) -> StreamingResponse:
    """Everything held about the user as one zip (`unipgen users import` reads it back)."""
    folder = Path(tempfile.mkdtemp(prefix="unipgen-export-"))  # 0700: the zip holds the user's data
    try:
        path = folder / "export.zip"  # not the user id: it may hold any character, "/" included
        svc.store.privacy.export_user(who.tenant, user, path)
        svc.store.audit.record_audit(who.tenant, who.actor, "export_user", user=user)
        return _zip_response(path, f"{who.tenant}-{user}.zip")
    finally:  # failed or not, nothing stays behind (an open handle keeps the zip's bytes until sent)
        _remove(folder)


def _zip_response(path: Path, filename: str) -> StreamingResponse:
    """The zip at `path`, sent from a handle opened now: its folder can go at once, so neither a
    failure nor a client that leaves mid-download (a background task would then not run) leaves
    a file behind."""
    handle = path.open("rb")
    size = os.fstat(handle.fileno()).st_size

    def chunks() -> Iterator[bytes]:
        with handle:
            while block := handle.read(1 << 20):
                yield block

    quoted = quote(filename)
    disposition = f'attachment; filename="{filename}"' if quoted == filename else f"attachment; filename*=utf-8''{quoted}"
    return StreamingResponse(chunks(), media_type="application/zip",
                             headers={"Content-Length": str(size), "Content-Disposition": disposition})


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@router.delete("/users/{user}", response_model=ForgetReport)
def forget_user(user: str, svc: ServiceDep, who: CallerDep) -> ForgetReport:
    """Delete the user and everything derived from their data; the report's residue is empty
    when a full scan found nothing left."""
    report = svc.store.privacy.forget_user(who.tenant, user)
    svc.model.forget_cached(who.tenant, user)
    svc.store.audit.record_audit(who.tenant, who.actor, "forget_user", user=user)
    return report


@router.delete("/users/{user}/{kind}/{key}", response_model=ForgetReport)
def forget_item(user: str, kind: str, key: str, svc: ServiceDep, who: CallerDep) -> ForgetReport:
    """Delete one face, voice sample, document or subject of the user, and what was derived from it."""
    from unipgen.errors import NotFoundError

    if kind not in FORGETTABLE:
        raise NotFoundError(f"unknown kind {kind!r}; one of {sorted(FORGETTABLE)}")
    svc.store.users.profile(who.tenant, user)  # an unknown user is a 404 naming the user
    report = svc.store.privacy.forget_item(who.tenant, FORGETTABLE[kind], key, user=user)
    svc.store.audit.record_audit(who.tenant, who.actor, "forget_item", user=user, object_kind=FORGETTABLE[kind],
                           object_key=key)
    return report
