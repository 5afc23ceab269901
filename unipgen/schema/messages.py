"""Conversation messages: what callers write, and how a message is kept as a user's document.

A message is one turn of a conversation the user took part in (with an assistant, a friend, a
support agent). It is stored as a document of kind ``message`` (so forget, export, retention and
lineage treat it like any document) whose meta keeps what makes it a turn: who spoke, in which
session, its place in the conversation, and the caption of a photo shared with it. No LLM runs on
a write: the turn is stored as said and embedded once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from unipgen.schema.memory import DocumentIn, NonBlank, UtcTime
from unipgen.schema.rules import PublicId

#: The document kind messages are stored under.
MESSAGE_KIND = "message"


class MessageIn(BaseModel):
    """One turn: its public id (LoCoMo's ``dia_id``, a chat's message id), speaker, text, session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: PublicId
    speaker: NonBlank = Field(min_length=1, max_length=128)
    text: NonBlank = Field(min_length=1)
    session: str = Field(default="1", min_length=1, max_length=64,
                         description="The conversation session the turn belongs to (turns keep their order in it).")
    ts: UtcTime | None = Field(default=None, description="When the turn (or its session) took place.")
    caption: str | None = Field(default=None, max_length=2_000, description="A caption of a photo shared with it.")

    def indexed_text(self) -> str:
        """The text retrieval reads: the speaker's name and the photo's caption are part of what a
        question asks about ("what did Caroline paint?"). The same text as
        `unipgen.core.conversation.turn_document`, so stored vectors serve its index."""
        text = self.text.strip()
        if self.caption:
            text = f"{text} [photo: {self.caption}]".strip()
        return f"{self.speaker}: {text}"

    def as_document(self, turn: int) -> DocumentIn:
        """The stored form; `turn` is the message's place in the user's conversation (0 first)."""
        meta: dict[str, Any] = {"speaker": self.speaker, "session": self.session, "turn": turn}
        if self.caption:
            meta["caption"] = self.caption
        return DocumentIn(key=self.key, text=self.text, kind=MESSAGE_KIND, ts=self.ts, meta=meta)


def message_of(document: DocumentIn) -> MessageIn:
    """A stored message back from its document (the inverse of `MessageIn.as_document`)."""
    meta = document.meta or {}
    return MessageIn.model_construct(key=document.key, speaker=meta.get("speaker", ""), text=document.text,
                                     session=str(meta.get("session", "1")), ts=document.ts,
                                     caption=meta.get("caption"))


def indexed_text(document: DocumentIn) -> str:
    """What a document's text vector is made from: a message's `MessageIn.indexed_text`, any
    other document's text."""
    return message_of(document).indexed_text() if document.kind == MESSAGE_KIND else document.text


class ChatReply(BaseModel):
    """One answered chat turn: the user's message and the reply, both stored as messages."""

    model_config = ConfigDict(frozen=True)

    session: str
    message: str = Field(description="Key of the user's stored turn.")
    reply: str = Field(description="Key of the stored reply.")
    text: str
    method: str = Field(description="How the reply was personalized: rag_prompt, or lora with the user's adapter.")
    evidence: list[str] = Field(default_factory=list, description="Memory shown to the model, as keys.")
    derived_from: list[str] = Field(default_factory=list, description="The reply's lineage, as 'kind:key'.")
