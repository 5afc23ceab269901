"""Persona-grounded chat: the assistant back end over one user's memory.

A turn is: the user's words → a text context (profile, retrieved memory, preferences, the user's
text adapter when trained) with the session so far → the profile's text model, streamed piece
by piece → the reply stored as a message whose lineage names the memory it used. The user's
turn is stored before the model runs, so a failure loses nothing they said; the reply is
stored only when complete. Chat runs the text backend in the caller's process (the CLI, a
service worker), not as a queued job: a turn is interactive.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from unipgen.memory.parsing import parse_rows
from unipgen.orchestrator.generation import prepare_generation
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.messages import ChatReply, MessageIn

if TYPE_CHECKING:
    from unipgen.core.usermodel import UserModel

#: The speaker name of the assistant's turns.
ASSISTANT = "assistant"


class ChatTurn:
    """The reply's pieces as the model writes them (iterate); then `reply`, the stored turn."""

    def __init__(self, message: str, pieces: Iterator[str], finish: Callable[[str], ChatReply],
                 lock: threading.Lock) -> None:
        self.message = message  # the key of the user's stored turn
        self._pieces = pieces
        self._finish = finish
        self._lock = lock
        self.reply: ChatReply | None = None

    def __iter__(self) -> Iterator[str]:
        written: list[str] = []
        with self._lock:  # one turn at a time on the model (adapters are swapped per turn)
            for piece in self._pieces:
                written.append(piece)
                yield piece
        self.reply = self._finish("".join(written))

    def text(self) -> ChatReply:
        """Run the turn to its end (nothing streamed) and return the stored reply."""
        for _ in self:
            pass
        assert self.reply is not None
        return self.reply


class Chat:
    """Multi-turn chat with one profile's text model, grounded in each user's memory.

    `history_turns`: how many earlier turns of the session the prompt shows; `max_new_tokens`:
    the longest reply.
    """

    def __init__(self, model: UserModel, backend: Any = None, *, history_turns: int = 6,
                 max_new_tokens: int = 128) -> None:
        self.model = model
        self._backend = backend
        #: One turn at a time on the text model (adapters are swapped per call); `Describer`s
        #: that share this chat's model take it too.
        self.lock = threading.Lock()
        self.history_turns = history_turns
        self.options = parse_rows([{"max_new_tokens": max_new_tokens}], GenerationOptions, "chat options")[0]

    @property
    def backend(self) -> Any:
        """The profile's text backend, loaded on first use."""
        if self._backend is None:
            from unipgen.modalities import load_backend

            self._backend = load_backend(self.model.profile.backends["text"])
            self._backend.setup()
        return self._backend

    def turn(self, tenant: str, user: str, text: str, *, session: str = "chat", seed: int = 0,
             speaker: str | None = None) -> ChatTurn:
        """Answer `text`, said by `user` (shown as `speaker`, default the user's id) in `session`."""
        said = _message(f"chat-{uuid.uuid4().hex[:16]}", speaker or user, text, session)
        history = [m for m in self.model.messages(tenant, user) if m.session == session][-self.history_turns:]
        options = self.options.model_copy(update={"seed": seed})
        prepared = prepare_generation(self.model, tenant, user, "text", text, options)  # before the turn is stored:
        self.model.add_messages(tenant, user, [said])  # a turn is not its own evidence
        request = prepared.request
        prompt = conversation_prompt(history, request.plan.prompt)
        request = request.model_copy(update={"plan": request.plan.model_copy(update={"prompt": prompt})})

        def finish(written: str) -> ChatReply:
            answer = written.strip() or "…"  # a model may say nothing; a message may not be empty
            reply = _message(f"{said.key}-reply", ASSISTANT, answer, session)
            sources = [*prepared.sources, ("document", said.key)]
            self.model.add_messages(tenant, user, [reply], derived_from={reply.key: sources})
            return ChatReply(session=session, message=said.key, reply=reply.key, text=answer,
                             method=request.plan.method, evidence=[e.key for e in request.context.evidence],
                             derived_from=[f"{kind}:{key}" for kind, key in dict.fromkeys(sources)])

        return ChatTurn(said.key, self.backend.stream(request, self.model.store.blobs.get), finish, self.lock)


def conversation_prompt(history: list[MessageIn], prompt: str, max_chars: int = 600) -> str:
    """The session so far (each turn cut to `max_chars`) before the personalized prompt."""
    if not history:
        return prompt
    lines = [f"{m.speaker}: {m.text[:max_chars]}" for m in history]
    return "Conversation so far:\n" + "\n".join(lines) + "\n\n" + prompt


def _message(key: str, speaker: str, text: str, session: str) -> MessageIn:
    """A turn, validated: a bad field is an `InvalidInputError` naming it."""
    row = {"key": key, "speaker": speaker[:128], "text": text, "session": session}
    return parse_rows([row], MessageIn, "chat message")[0]
