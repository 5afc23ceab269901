"""Dependencies of the routes: the running `Service`, the caller's tenant (from its API key,
rate-limited per key), and the admin check. Failed logins are throttled per client address."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from unipgen.api.service import Service
from unipgen.errors import UnauthorizedError

_bearer = HTTPBearer(auto_error=False, description="A tenant's API key (`upg_...`); the admin key on admin routes.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


def service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(service)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: their tenant, and how the audit log names them (``key:<prefix>``)."""

    tenant: str
    actor: str


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def caller(svc: ServiceDep, credentials: Credentials, request: Request) -> Caller:
    address = _address(request)
    svc.auth_throttle.check(address)
    try:
        if credentials is None:
            raise UnauthorizedError("no API key: send the header 'Authorization: Bearer upg_...'")
        record = svc.store.keys.authenticate(credentials.credentials)
    except UnauthorizedError:
        svc.auth_throttle.failed(address)
        raise
    svc.limiter.check(record.prefix)
    return Caller(record.tenant, f"key:{record.prefix}")


CallerDep = Annotated[Caller, Depends(caller)]


def admin(svc: ServiceDep, credentials: Credentials, request: Request) -> None:
    address = _address(request)
    svc.auth_throttle.check(address)
    expected = svc.settings.admin_key
    if not expected:
        raise UnauthorizedError("admin routes are disabled: set UNIPGEN_ADMIN_KEY to enable them")
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        svc.auth_throttle.failed(address)
        raise UnauthorizedError("admin routes need the admin key ('Authorization: Bearer <UNIPGEN_ADMIN_KEY>')")
    svc.limiter.check("admin")


AdminDep = Annotated[None, Depends(admin)]
