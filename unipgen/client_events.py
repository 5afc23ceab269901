"""Server-sent events for the SDK (`unipgen.client`): a line reader and the chat stream's events.

The service streams a job's progress and a chat turn's tokens as server-sent events
(`event:` / `data:` lines, a blank line ending each event, the data JSON). `EventReader` turns
lines into (event, data) pairs; `chat_event` reads one of a chat turn's events.
"""

from __future__ import annotations

import json
from typing import Any

from unipgen.errors import error_from
from unipgen.schema.messages import ChatReply


class EventReader:
    """Reads server-sent events line by line: `feed` returns an (event, JSON data) when one ends."""

    def __init__(self) -> None:
        self.event: str = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, Any] | None:
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].strip())
        elif not line and self.data:
            done = self.event, json.loads("\n".join(self.data))
            self.event, self.data = "message", []
            return done
        return None


def chat_event(event: str, data: dict[str, Any]) -> tuple[str, Any]:
    """A chat turn's event as the SDK yields it: ("token", text), ("end", the `ChatReply`); an
    "error" event raises the service's error."""
    if event == "error":
        raise error_from(data)
    if event == "end":
        return event, ChatReply.model_validate(data)
    return event, data["text"]


__all__ = ["EventReader", "chat_event"]
