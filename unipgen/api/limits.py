"""Request body budgets, enforced before a route parses anything: a 50 MB JSON document cost 50 s
and 2.7 GB, and a 100 MB body of 1,000 documents was committed minutes after its client had
given up. Each kind of route has its own budget (a setting):

- bulk routes (`/v1/events/bulk`, `/v1/items`, `/v1/users/{user}/documents`): lists of rows,
  `UNIPGEN_MAX_BULK_REQUEST_BYTES`;
- uploads (faces, voices, a catalog item's image, a photo to describe: one file; subjects: up to 20):
  `UNIPGEN_MAX_BLOB_BYTES` per file plus the form's overhead;
- every other route: `UNIPGEN_MAX_REQUEST_BYTES`.

A declared `Content-Length` over the budget is answered 413 at once, without reading the body;
a body without one (chunked) is counted as it streams and refused as soon as it goes over.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from unipgen.api.errors import body
from unipgen.api.routes.media import MAX_SUBJECT_PHOTOS
from unipgen.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Paths of the bulk routes (lists of rows).
_BULK = re.compile(r"^/v1/(events/bulk|items|users/[^/]+/documents)/?$")
#: Upload routes and how many files each takes at most.
_UPLOADS = {re.compile(r"^/v1/users/[^/]+/(faces|voices|descriptions)/?$"): 1, re.compile(r"^/v1/items/[^/]+/?$"): 1,
            re.compile(r"^/v1/users/[^/]+/subjects/?$"): MAX_SUBJECT_PHOTOS}
#: Room for a multipart form's boundaries, headers and text fields beside its files.
FORM_OVERHEAD = 64 * 1024
#: A body over its budget is read (and dropped) up to this many bytes before the 413 is sent, so
#: that a client that sends its whole body before reading the answer gets the 413 and not a reset
#: connection; beyond it the connection is closed.
DRAIN_BYTES = 64 * 1024 * 1024


def body_limit(path: str, settings: Settings) -> tuple[int, str]:
    """(the budget in bytes, the setting that sets it) of a request to `path`."""
    if _BULK.match(path):
        return settings.max_bulk_request_bytes, "UNIPGEN_MAX_BULK_REQUEST_BYTES"
    for pattern, files in _UPLOADS.items():
        if pattern.match(path):
            return files * settings.max_blob_bytes + FORM_OVERHEAD, "UNIPGEN_MAX_BLOB_BYTES"
    return settings.max_request_bytes, "UNIPGEN_MAX_REQUEST_BYTES"


def _too_large(size: int, limit: int, setting: str, exact: bool) -> str:
    over = f"{size} bytes" if exact else f"over {limit} bytes"
    return f"the request body is {over}, over the limit of {limit} bytes for this route ({setting})"


class BodyLimit:
    """ASGI middleware: refuse request bodies over their route's budget (see the module doc)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = body_limit(scope["path"], scope["app"].state.service.settings)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _drain(receive, min(declared, DRAIN_BYTES))
            await body("payload_too_large", _too_large(declared, limit, setting, True), 413)(scope, receive, send)
            return
        await self.app(scope, _counting(receive, limit, setting), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counting(receive: Receive, limit: int, setting: str) -> Receive:
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:  # HTTPException: FastAPI lets it through its body parsing unchanged
                raise HTTPException(413, _too_large(seen, limit, setting, False))
        return message

    return limited


async def _drain(receive: Receive, bound: int) -> None:
    """Read and drop up to `bound` bytes of the body (nothing is kept)."""
    read = 0
    while read < bound:
        message = await receive()
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
