"""Artifacts (generated outputs, trained adapters) and the tenant's audit log."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.schema.api import ArtifactPublic, AuditPublic

router = APIRouter(prefix="/v1", tags=["artifacts"])


def _public(record: object) -> ArtifactPublic:
    return ArtifactPublic(key=record.key, kind=record.kind, media_type=record.media_type,  # type: ignore[attr-defined]
                          sha256=record.blob_sha, meta=record.meta, derived_from=record.derived_from)  # type: ignore[attr-defined]


@router.get("/users/{user}/artifacts", response_model=list[ArtifactPublic])
def list_artifacts(user: str, svc: ServiceDep, who: CallerDep, kind: str | None = None) -> list[ArtifactPublic]:
    """The user's artifacts, oldest first, each with what it was derived from."""
    return [_public(a) for a in svc.store.artifacts.artifacts(who.tenant, user, kind=kind)]


@router.get("/artifacts/{key}", response_model=ArtifactPublic)
def get_artifact(key: str, svc: ServiceDep, who: CallerDep) -> ArtifactPublic:
    return _public(svc.store.artifacts.artifact(who.tenant, key))


@router.get("/artifacts/{key}/content", response_class=Response,
            responses={200: {"content": {"image/png": {}, "text/plain": {}, "application/zip": {}},
                             "description": "The artifact's bytes, with its media type."}})
def get_artifact_content(key: str, svc: ServiceDep, who: CallerDep) -> Response:
    data, media_type = svc.store.artifacts.artifact_blob(who.tenant, key)
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'inline; filename="{key}"'})


@router.get("/audit", response_model=list[AuditPublic])
def audit_log(svc: ServiceDep, who: CallerDep, user: str | None = None, action: str | None = None,
              limit: int = Query(default=100, ge=1, le=1000)) -> list[AuditPublic]:
    """Reads of biometric data, generations, exports and forgets in the tenant, newest first."""
    return [AuditPublic.model_validate(r, from_attributes=True)
            for r in svc.store.audit.audit_log(who.tenant, user=user, action=action, limit=limit)]
