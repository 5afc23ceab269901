"""`POST /v1/users/{user}/chat` through the SDK: the reply streams as server-sent events and both
turns are stored as messages; bad requests fail before the stream, as plain errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import Live
from unipgen.client import AsyncClient, Client
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.schema.messages import ChatReply


@pytest.fixture(scope="module")
def api(live: Live) -> Iterator[Client]:
    with live.client() as client:
        client.create_user("chatty")
        client.add_documents("chatty", [{"key": "pet", "text": "My dog Biscuit loves the beach."}])
        yield client


def test_a_turn_streams_tokens_then_the_stored_reply(api: Client) -> None:
    events = list(api.chat("chatty", "Where does my dog like to go?", session="walks", seed=1))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"token"} and len(kinds) > 2
    reply = events[-1][1]
    assert isinstance(reply, ChatReply) and reply.text == "".join(t for k, t in events if k == "token").strip()
    assert "pet" in reply.evidence and "document:pet" in reply.derived_from
    stored = [(m.key, m.speaker, m.session) for m in api.messages("chatty") if m.session == "walks"]
    assert stored == [(reply.message, "chatty", "walks"), (reply.reply, "assistant", "walks")]


def test_the_async_client_streams_the_same_way(live: Live, api: Client) -> None:
    async def turn() -> list[tuple[str, object]]:
        async with AsyncClient(live.url, api_key=live.key) as client:
            return [event async for event in client.chat("chatty", "And my dog's name?", session="async")]

    events = asyncio.run(turn())
    assert events[-1][0] == "end" and events[-1][1].session == "async"


def test_bad_turns_fail_before_the_stream_and_store_nothing(live: Live, api: Client) -> None:
    before = len(api.messages("chatty"))
    with pytest.raises(NotFoundError, match="unknown user 'nobody'"):
        list(api.chat("nobody", "hello"))
    with pytest.raises(InvalidInputError, match="text"):
        list(api.chat("chatty", ""))
    response = httpx.post(f"{live.url}/v1/users/chatty/chat", content=b"{not json",
                          headers={"Authorization": f"Bearer {live.key}", "Content-Type": "application/json"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"
    assert len(api.messages("chatty")) == before
