"""Users and what they are: profile attributes, behavior events, documents, the catalog, the
user context; export and forget."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query, status
from fastapi.responses import FileResponse

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.schema.api import (
    ContextRequest,
    Count,
    DocumentsCreate,
    EventsCreate,
    ItemsCreate,
    ProfileValue,
    UserCreate,
    UserPublic,
)
from unipgen.schema.context import UserContext
from unipgen.schema.memory import DocumentIn, EventIn, EventRecord, ForgetReport, UserSummary

router = APIRouter(prefix="/v1", tags=["users"])

#: Route names of the user's kinds of memory that `DELETE /v1/users/{user}/{kind}/{key}` forgets.
FORGETTABLE = {"faces": "face", "voices": "voice", "documents": "document", "subjects": "subject"}


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def create_user(body: UserCreate, svc: ServiceDep, who: CallerDep) -> UserPublic:
    svc.store.create_user(who.tenant, body.key)
    return UserPublic(tenant=who.tenant, key=body.key)


@router.get("/users", response_model=list[str])
def list_users(svc: ServiceDep, who: CallerDep) -> list[str]:
    return svc.store.list_users(who.tenant)


@router.get("/users/{user}", response_model=UserSummary)
def get_user(user: str, svc: ServiceDep, who: CallerDep) -> UserSummary:
    return svc.store.user_summary(who.tenant, user)


@router.get("/users/{user}/profile", response_model=dict[str, Any])
def get_profile(user: str, svc: ServiceDep, who: CallerDep) -> dict[str, Any]:
    return svc.store.profile(who.tenant, user)


@router.put("/users/{user}/profile/{name}", response_model=dict[str, Any])
def set_profile(user: str, name: str, body: ProfileValue, svc: ServiceDep, who: CallerDep) -> dict[str, Any]:
    """Set one attribute (the previous value is kept as history); returns the whole profile."""
    svc.store.set_profile(who.tenant, user, name, body.value)
    return svc.store.profile(who.tenant, user)


@router.post("/events", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_event(body: EventIn, svc: ServiceDep, who: CallerDep) -> Count:
    return Count(count=svc.store.ingest_events(who.tenant, [body]))


@router.post("/events/bulk", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_events(body: EventsCreate, svc: ServiceDep, who: CallerDep) -> Count:
    """All the events or, on any error, none."""
    return Count(count=svc.store.ingest_events(who.tenant, body.events, create_users=body.create_users))


@router.get("/users/{user}/events", response_model=list[EventRecord])
def list_events(user: str, svc: ServiceDep, who: CallerDep,
                limit: int | None = Query(default=None, ge=1, le=100_000)) -> list[EventRecord]:
    """The user's events, oldest first; each `id` addresses the event for deletion."""
    return svc.store.events(who.tenant, user, limit=limit)


@router.delete("/users/{user}/events/{event_id}", response_model=ForgetReport)
def delete_event(user: str, event_id: int, svc: ServiceDep, who: CallerDep) -> ForgetReport:
    """Delete one event (its `id` from the listing) and every output derived from the user's history."""
    report = svc.store.delete_events(who.tenant, user, ids=[event_id])
    svc.store.record_audit(who.tenant, who.actor, "delete_events", user=user, detail={"ids": [event_id]})
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
    report = svc.store.delete_events(who.tenant, user, type=type, item=item, since=since, until=until)
    detail = {k: str(v) for k, v in {"type": type, "item": item, "since": since, "until": until}.items() if v is not None}
    svc.store.record_audit(who.tenant, who.actor, "delete_events", user=user, detail=detail or None)
    return report


@router.post("/items", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_items(body: ItemsCreate, svc: ServiceDep, who: CallerDep) -> Count:
    """Catalog items, embedded on the way in (text; image too where an item has one)."""
    return Count(count=svc.model.add_items(who.tenant, body.items, exist_ok=body.exist_ok))


@router.post("/users/{user}/documents", status_code=status.HTTP_201_CREATED, response_model=Count)
def add_documents(user: str, body: DocumentsCreate, svc: ServiceDep, who: CallerDep) -> Count:
    return Count(count=svc.model.add_documents(who.tenant, user, body.documents))


@router.get("/users/{user}/documents", response_model=list[DocumentIn])
def list_documents(user: str, svc: ServiceDep, who: CallerDep) -> list[DocumentIn]:
    return svc.store.documents(who.tenant, user)


@router.post("/users/{user}/context", response_model=UserContext)
def get_context(user: str, body: ContextRequest, svc: ServiceDep, who: CallerDep) -> UserContext:
    """What a generation for this request would see: evidence, preferences, conditioning."""
    context = svc.model.context(who.tenant, user, body.modality, body.instruction)
    biometric = [p for p in context.provenance if p.split(":", 1)[0] in ("face", "voice")]
    if biometric:  # the context carries face or voice embeddings: a read of biometric data
        svc.store.record_audit(who.tenant, who.actor, "read_context", user=user, detail={"used": biometric})
    return context


@router.get("/users/{user}/export", response_class=FileResponse,
            responses={200: {"content": {"application/zip": {}}, "description": "The user's archive."}})
def export_user(user: str, svc: ServiceDep, who: CallerDep, cleanup: BackgroundTasks) -> FileResponse:
    """Everything held about the user as one zip (`unipgen users import` reads it back)."""
    folder = Path(tempfile.mkdtemp(prefix="unipgen-export-"))
    path = folder / "export.zip"  # not the user id: an id of 255 characters is too long for a file name
    svc.store.export_user(who.tenant, user, path)
    svc.store.record_audit(who.tenant, who.actor, "export_user", user=user)
    cleanup.add_task(_remove, folder)
    return FileResponse(path, media_type="application/zip", filename=f"{who.tenant}-{user}.zip")


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


@router.delete("/users/{user}", response_model=ForgetReport)
def forget_user(user: str, svc: ServiceDep, who: CallerDep) -> ForgetReport:
    """Delete the user and everything derived from their data; the report's residue is empty
    when a full scan found nothing left."""
    report = svc.store.forget_user(who.tenant, user)
    svc.store.record_audit(who.tenant, who.actor, "forget_user", user=user)
    return report


@router.delete("/users/{user}/{kind}/{key}", response_model=ForgetReport)
def forget_item(user: str, kind: str, key: str, svc: ServiceDep, who: CallerDep) -> ForgetReport:
    """Delete one face, voice sample, document or subject of the user, and what was derived from it."""
    from unipgen.errors import NotFoundError

    if kind not in FORGETTABLE:
        raise NotFoundError(f"unknown kind {kind!r}; one of {sorted(FORGETTABLE)}")
    svc.store.profile(who.tenant, user)  # an unknown user is a 404 naming the user
    report = svc.store.forget_item(who.tenant, FORGETTABLE[kind], key, user=user)
    svc.store.record_audit(who.tenant, who.actor, "forget_item", user=user, object_kind=FORGETTABLE[kind],
                           object_key=key)
    return report
