"""Errors as JSON: every failure is `{"code", "message"}` (`ErrorBody`) with an HTTP status
chosen by the error's class, never by its text. Codes are listed in docs/errors.md."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from unipgen import errors

log = logging.getLogger("unipgen.api")

#: HTTP status of each error class; the most specific class listed wins.
STATUS: list[tuple[type[errors.UnipgenError], int]] = [
    (errors.UnauthorizedError, 401),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.PayloadTooLargeError, 413),
    (errors.UnsupportedMediaError, 415),
    (errors.InvalidInputError, 422),
    (errors.RateLimitedError, 429),
    (errors.QueueFullError, 429),
    (errors.EncoderFailedError, 503),
]

_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media"}


def status_of(error: errors.UnipgenError) -> int:
    return next((status for cls, status in STATUS if isinstance(error, cls)), 500)


def body(code: str, message: str, status: int, **extra: object) -> JSONResponse:
    headers = {"Retry-After": "60"} if status == 429 else None
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an `ErrorBody`."""

    @app.exception_handler(errors.UnipgenError)
    async def _unipgen(_: Request, exc: errors.UnipgenError) -> JSONResponse:
        return body(exc.code, exc.message, status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": [str(part) for part in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
                    for e in exc.errors()]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"]) or "request"
        return body("invalid_input", f"{where}: {first['msg']}", 422, errors=problems)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return body(_HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return body("internal", f"internal error ({type(exc).__name__}); the service log has the details", 500)
