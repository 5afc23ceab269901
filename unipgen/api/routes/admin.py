"""Admin routes (the admin key from `UNIPGEN_ADMIN_KEY`): tenants and their API keys."""

from __future__ import annotations

from fastapi import APIRouter, status

from unipgen.api.deps import AdminDep, ServiceDep
from unipgen.schema.api import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, TenantCreate, TenantPublic

router = APIRouter(prefix="/v1/tenants", tags=["admin"])


def _public(record: object) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(record, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TenantPublic)
def create_tenant(body: TenantCreate, svc: ServiceDep, _: AdminDep) -> TenantPublic:
    svc.store.users.create_tenant(body.key)
    return TenantPublic(key=body.key)


@router.get("", response_model=list[TenantPublic])
def list_tenants(svc: ServiceDep, _: AdminDep) -> list[TenantPublic]:
    return [TenantPublic(key=key) for key in svc.store.users.list_tenants()]


@router.post("/{tenant}/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(tenant: str, body: ApiKeyCreate, svc: ServiceDep, _: AdminDep) -> ApiKeyCreated:
    """A new key for `tenant`. The response holds the key itself: it is not shown again."""
    created = svc.store.keys.create_api_key(tenant, body.name)
    return ApiKeyCreated(**_public(created.record).model_dump(), key=created.key)


@router.get("/{tenant}/api-keys", response_model=list[ApiKeyPublic])
def list_api_keys(tenant: str, svc: ServiceDep, _: AdminDep) -> list[ApiKeyPublic]:
    return [_public(record) for record in svc.store.keys.list_api_keys(tenant)]


@router.delete("/{tenant}/api-keys/{prefix}", response_model=ApiKeyPublic)
def revoke_api_key(tenant: str, prefix: str, svc: ServiceDep, _: AdminDep) -> ApiKeyPublic:
    return _public(svc.store.keys.revoke_api_key(tenant, prefix))
