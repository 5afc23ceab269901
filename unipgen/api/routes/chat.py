"""Chat with the assistant grounded in a user's memory: one turn per request, the reply streamed
as server-sent events (`token` pieces, then `end` with the stored turn, or `error`)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.errors import UnipgenError
from unipgen.schema.api import ChatRequest

router = APIRouter(prefix="/v1", tags=["chat"])
logger = logging.getLogger(__name__)


@router.post("/users/{user}/chat", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": (
                 "`token` events ({\"text\": piece}) as the model writes, then one `end` event (the stored "
                 "turn: ChatReply) or one `error` event ({\"code\", \"message\"}).")}})
async def chat_turn(user: str, body: ChatRequest, svc: ServiceDep, who: CallerDep) -> StreamingResponse:
    """One chat turn: the user's words are stored, the reply streams and is stored with its lineage.

    An unknown user or a bad request fails before the stream starts (a plain error response)."""
    turn = await run_in_threadpool(svc.chat.turn, who.tenant, user, body.text, session=body.session, seed=body.seed)
    await run_in_threadpool(svc.store.audit.record_audit, who.tenant, who.actor, "chat", user=user,
                            object_kind="document", object_key=turn.message)
    return StreamingResponse(_events(turn), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _events(turn: Any) -> AsyncIterator[str]:
    try:
        async for piece in iterate_in_threadpool(iter(turn)):
            yield _sse("token", {"text": piece})
    except UnipgenError as exc:  # the status line is sent: the error travels as an event
        yield _sse("error", {"code": exc.code, "message": exc.message})
        return
    except Exception as exc:  # a model crash ends the stream with an error, not a cut connection
        logger.exception("chat turn %s failed", turn.message)
        yield _sse("error", {"code": "internal", "message": f"the text model failed: {type(exc).__name__}"})
        return
    yield _sse("end", turn.reply.model_dump(mode="json"))


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
