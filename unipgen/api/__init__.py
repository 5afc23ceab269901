"""The HTTP service (FastAPI): `create_app`. Needs the `api` extra (fastapi, uvicorn)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    from unipgen.api.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
