"""Errors as JSON: every failure is `{"code", "message"}` (`ErrorBody`) with an HTTP status
chosen by the error's class, never by its text. Codes are listed in docs/errors.md."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from unipgen import errors

log = logging.getLogger("unipgen.api")

#: HTTP status of each error class; the most specific class listed wins.
STATUS: list[tuple[type[errors.UnipgenError], int]] = [
    (errors.UnauthorizedError, 401),
    (errors.ConsentRequiredError, 403),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.PayloadTooLargeError, 413),
    (errors.UnsupportedMediaError, 415),
    (errors.InvalidInputError, 422),
    (errors.RateLimitedError, 429),
    (errors.QueueFullError, 429),
    (errors.EncoderFailedError, 503),
    (errors.UnavailableError, 503),
]

_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               415: "unsupported_media"}

#: Echoed values are cut to this many characters (a 100,000-character id is not sent back whole).
MAX_ECHO_CHARS = 80
MAX_MESSAGE_CHARS = 2000
_LONG_TOKEN = re.compile(rf"[^\s'\"]{{{MAX_ECHO_CHARS + 1},}}")
#: "<_io.BytesIO object at 0x7f...>" and the like: heap addresses tell a client nothing.
_OBJECT_REPR = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


def status_of(error: errors.UnipgenError) -> int:
    return next((status for cls, status in STATUS if isinstance(error, cls)), 500)


def public_message(message: str) -> str:
    """`message` as a client may see it: no object reprs with heap addresses, long values cut."""
    message = _OBJECT_REPR.sub(lambda m: f"<{m.group(1).rsplit('.', 1)[-1]}>", message)
    message = _LONG_TOKEN.sub(lambda m: f"{m.group()[:MAX_ECHO_CHARS]}...({len(m.group())} characters)", message)
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "..."


def body(code: str, message: str, status: int, headers: Mapping[str, str] | None = None,
         **extra: object) -> JSONResponse:
    if status == 429 and not (headers and "Retry-After" in headers):
        headers = {**(headers or {}), "Retry-After": "60"}
    return JSONResponse({"code": code, "message": public_message(message), **extra}, status_code=status,
                        headers=headers)


def _retry_after(exc: errors.UnipgenError) -> dict[str, str] | None:
    seconds = getattr(exc, "retry_after_s", None)
    return None if seconds is None else {"Retry-After": str(max(1, math.ceil(seconds)))}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into an `ErrorBody`."""

    @app.exception_handler(errors.UnipgenError)
    async def _unipgen(_: Request, exc: errors.UnipgenError) -> JSONResponse:
        return body(exc.code, exc.message, status_of(exc), _retry_after(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"loc": [str(part) for part in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
                    for e in exc.errors()]
        first = problems[0] if problems else {"loc": [], "msg": "invalid request", "type": ""}
        where = ".".join(first["loc"]) or "request"
        message = f"{where}: {first['msg']}"
        if first["type"] == "json_invalid":  # loc is ("body", character position)
            reason = (exc.errors()[0].get("ctx") or {}).get("error", "")
            message = f"malformed JSON body at character {first['loc'][-1]}: {reason}".rstrip(": ")
        return body("invalid_input", message, 422, errors=problems)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400:  # Starlette's "could not parse the body" (a broken multipart form)
            return body("invalid_input", f"malformed request body: {exc.detail}", 422)
        # exc.headers carries what the status needs: `Allow` on a 405, for example.
        return body(_HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return body("internal", f"internal error ({type(exc).__name__}); the service log has the details", 500)
