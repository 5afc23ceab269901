"""Persona-grounded chat: streamed turns grounded in the user's memory, stored as messages whose
lineage names what they used; failures keep the user's words and store no reply."""

from __future__ import annotations

from pathlib import Path

import pytest

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.modalities.text import TransformersTextBackend
from unipgen.orchestrator import Chat
from unipgen.orchestrator.chat import conversation_prompt
from unipgen.schema.messages import MessageIn


@pytest.fixture
def chat(sqlite_store: MemoryStore, tmp_path: Path) -> Chat:
    sqlite_store.users.create_tenant("t")
    sqlite_store.users.create_users("t", ["ann"])
    model = UserModel(sqlite_store, "tiny", cache_dir=tmp_path / "cache")
    model.add_documents("t", "ann", [{"key": "d1", "text": "I adopted a grey cat named Pixel last spring."},
                                     {"key": "d2", "text": "My favourite films are slow Japanese dramas."}])
    return Chat(model, max_new_tokens=12)


def test_a_turn_streams_and_stores_both_messages_with_lineage(chat: Chat) -> None:
    turn = chat.turn("t", "ann", "What is my cat called?", session="s1", seed=3)
    pieces = list(turn)
    assert len(pieces) > 1 and turn.reply is not None
    reply = turn.reply
    assert reply.text == "".join(pieces).strip() and reply.method == "rag_prompt"
    assert "d1" in reply.evidence and "document:d1" in reply.derived_from
    assert f"document:{reply.message}" in reply.derived_from
    stored = chat.model.messages("t", "ann")
    assert [(m.key, m.speaker, m.session) for m in stored] == [(reply.message, "ann", "s1"),
                                                              (reply.reply, "assistant", "s1")]
    assert stored[1].text == reply.text


def test_the_session_so_far_is_in_the_prompt_and_other_sessions_are_not(chat: Chat) -> None:
    first = chat.turn("t", "ann", "Remember that I play the cello.", session="s1").text()
    chat.turn("t", "ann", "Unrelated talk.", session="s2").text()
    history = [m for m in chat.model.messages("t", "ann") if m.session == "s1"]
    assert [m.key for m in history] == [first.message, first.reply]
    prompt = conversation_prompt(history, "PROMPT")
    assert prompt.startswith("Conversation so far:\nann: Remember that I play the cello.\nassistant: ")
    assert prompt.endswith("\n\nPROMPT") and "Unrelated" not in prompt


def test_a_trained_text_adapter_answers_and_joins_the_lineage(chat: Chat) -> None:
    from unipgen.orchestrator import train

    trained = train(chat.model, "t", "ann", "text-lora", steps=1)
    reply = chat.turn("t", "ann", "Tell me about my cat.").text()
    assert reply.method == "lora" and f"artifact:{trained.key}" in reply.derived_from


def test_forgetting_what_a_reply_used_forgets_the_reply(chat: Chat) -> None:
    reply = chat.turn("t", "ann", "Tell me about my cat.").text()
    assert "document:d1" in reply.derived_from
    chat.model.store.privacy.forget_item("t", "document", "d1", user="ann")
    assert [m.key for m in chat.model.messages("t", "ann")] == [reply.message]


def test_bad_turns_are_refused_and_change_nothing(chat: Chat) -> None:
    with pytest.raises(InvalidInputError, match="chat message #0 is invalid: text"):
        chat.turn("t", "ann", "   ")
    with pytest.raises(NotFoundError, match="unknown user 'bob'"):
        chat.turn("t", "bob", "hello")
    assert chat.model.messages("t", "ann") == []


def test_a_failing_model_keeps_the_users_words_and_stores_no_reply(chat: Chat) -> None:
    cramped = Chat(chat.model, TransformersTextBackend(max_context=8), max_new_tokens=12)  # no room for a prompt
    with pytest.raises(InvalidInputError, match="max_new_tokens leaves no room for the prompt"):
        cramped.turn("t", "ann", "Are you there?").text()
    assert [m.text for m in chat.model.messages("t", "ann")] == ["Are you there?"]


def test_chat_options_are_checked_when_made(chat: Chat) -> None:
    with pytest.raises(InvalidInputError, match="chat options #0 is invalid: max_new_tokens"):
        Chat(chat.model, max_new_tokens=0)


def test_conversation_prompt_cuts_long_turns() -> None:
    turn = MessageIn(key="k", speaker="ann", text="x" * 1000)
    assert conversation_prompt([turn], "P", max_chars=10) == "Conversation so far:\nann: xxxxxxxxxx\n\nP"
    assert conversation_prompt([], "P") == "P"
