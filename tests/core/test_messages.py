"""Conversation messages: stored as the user's documents of kind ``message``, in order, embedded
with their speaker, found as evidence, and forgotten with their vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from unipgen.core.conversation import turn_document
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.models import Document, Embedding
from unipgen.schema.messages import MessageIn

TURNS = [
    {"key": "D1:1", "speaker": "Caroline", "text": "I joined an LGBTQ support group last week.", "session": "1",
     "ts": "2023-05-08T13:56:00Z"},
    {"key": "D1:2", "speaker": "Melanie", "text": "That is brave. I went camping with my kids.", "session": "1",
     "ts": "2023-05-08T13:56:00Z", "caption": "a photo of a tent by a lake"},
    {"key": "D2:1", "speaker": "Caroline", "text": "I am researching adoption agencies now.", "session": "2",
     "ts": "2023-05-25T13:14:00Z"},
]


@pytest.fixture
def model(sqlite_store: MemoryStore, tmp_path: Path) -> UserModel:
    sqlite_store.users.create_tenant("t")
    sqlite_store.users.create_users("t", ["conv-1"])
    return UserModel(sqlite_store, "tiny", cache_dir=tmp_path / "cache")


def test_messages_are_appended_in_order_with_their_session_and_speaker(model: UserModel) -> None:
    assert model.add_messages("t", "conv-1", TURNS[:2]) == 2
    assert model.add_messages("t", "conv-1", TURNS[2:]) == 1
    turns = model.messages("t", "conv-1")
    assert [(m.key, m.speaker, m.session) for m in turns] == [("D1:1", "Caroline", "1"), ("D1:2", "Melanie", "1"),
                                                              ("D2:1", "Caroline", "2")]
    assert turns[1].caption == "a photo of a tent by a lake"
    metas = {d.key: d.meta for d in model.store.content.documents("t", "conv-1", "message")}
    assert [metas[k]["turn"] for k in ("D1:1", "D1:2", "D2:1")] == [0, 1, 2]
    assert model.store.count_rows(Embedding) == 3  # one text vector per turn


def test_a_turn_is_embedded_with_its_speaker_and_photo_caption(model: UserModel) -> None:
    model.add_messages("t", "conv-1", TURNS[1:2])
    [(_, stored)] = model.store.content.vectors("t", "text", "document", ["D1:2"], user="conv-1").items()
    expected = model.encoders.text.encode([MessageIn.model_validate(TURNS[1]).indexed_text()])[0]
    assert stored == pytest.approx(expected, abs=1e-5)
    assert MessageIn.model_validate(TURNS[1]).indexed_text() == (
        "Melanie: That is brave. I went camping with my kids. [photo: a photo of a tent by a lake]")
    assert turn_document(MessageIn.model_validate(TURNS[1])) == MessageIn.model_validate(TURNS[1]).indexed_text()


def test_a_bad_turn_keeps_nothing_of_its_batch(model: UserModel) -> None:
    with pytest.raises(InvalidInputError, match=r"message #1 is invalid: text: .*at least 1 character"):
        model.add_messages("t", "conv-1", [TURNS[0], {**TURNS[1], "text": ""}])
    with pytest.raises(InvalidInputError, match=r"message #0 is invalid: key"):
        model.add_messages("t", "conv-1", [{**TURNS[0], "key": "a/b"}])
    assert model.store.count_rows(Document) == 0 and model.store.count_rows(Embedding) == 0


def test_messages_are_evidence_and_are_forgotten_with_their_vectors(model: UserModel) -> None:
    model.add_messages("t", "conv-1", TURNS)
    context = model.context("t", "conv-1", "text", "What is Caroline researching?")
    assert {e.key for e in context.evidence} & {"D1:1", "D1:2", "D2:1"}
    model.store.privacy.forget_item("t", "document", "D2:1", user="conv-1")
    assert [m.key for m in model.messages("t", "conv-1")] == ["D1:1", "D1:2"]
    assert model.store.count_rows(Embedding) == 2


def test_a_reply_made_from_memory_is_forgotten_with_its_source(model: UserModel) -> None:
    model.add_messages("t", "conv-1", TURNS)
    reply = {"key": "chat-1", "speaker": "assistant", "text": "You are researching adoption agencies.",
             "session": "chat"}
    model.add_messages("t", "conv-1", [reply], derived_from={"chat-1": [("document", "D2:1"), ("user", "conv-1")]})
    model.store.privacy.forget_item("t", "document", "D1:1", user="conv-1")  # not a source: the reply stays
    assert "chat-1" in [m.key for m in model.messages("t", "conv-1")]
    report = model.store.privacy.forget_item("t", "document", "D2:1", user="conv-1")
    assert [m.key for m in model.messages("t", "conv-1")] == ["D1:2"]
    assert report.residue == [] and model.store.count_rows(Embedding) == 1


def test_lineage_to_an_unknown_source_keeps_nothing(model: UserModel) -> None:
    with pytest.raises(NotFoundError, match="unknown document 'nope'"):
        model.add_messages("t", "conv-1", TURNS[:1], derived_from={"D1:1": [("document", "nope")]})
    assert model.store.count_rows(Document) == 0 and model.store.count_rows(Embedding) == 0


def test_turn_evidence_is_ranked_by_the_conversation_index_with_date_and_speaker(model: UserModel) -> None:
    model.add_messages("t", "conv-1", TURNS)
    model.add_documents("t", "conv-1", [{"key": "note", "text": "Caroline keeps a list of adoption agencies."}])
    context = model.context("t", "conv-1", "text", "What is Caroline researching?")
    turns = [e for e in context.evidence if e.key != "note"]
    assert turns[0].key == "D2:1" and turns[0].text == "[25 May 2023] Caroline: I am researching adoption agencies now."
    assert "note" in [e.key for e in context.evidence]  # other documents still searched beside the turns
    assert len(context.evidence) == len({e.key for e in context.evidence}) <= model.builder.config.evidence_k


def test_the_conversation_index_is_kept_until_the_messages_change(model: UserModel) -> None:
    model.add_messages("t", "conv-1", TURNS[:2])
    model.context("t", "conv-1", "text", "camping")
    first = model.builder.conversations.cached("t", "conv-1")
    model.context("t", "conv-1", "text", "a tent")
    assert first is not None and model.builder.conversations.cached("t", "conv-1") is first
    model.add_messages("t", "conv-1", TURNS[2:])
    context = model.context("t", "conv-1", "text", "adoption agencies")
    assert context.evidence[0].key == "D2:1"  # the new turn is found: the index was rebuilt
    assert model.builder.conversations.cached("t", "conv-1") is not first


def test_forgetting_the_user_drops_their_conversation_index(model: UserModel) -> None:
    model.add_messages("t", "conv-1", TURNS)
    model.context("t", "conv-1", "text", "adoption")
    assert model.builder.conversations.cached("t", "conv-1") is not None
    model.store.privacy.forget_user("t", "conv-1")
    model.forget_cached("t", "conv-1")
    assert model.builder.conversations.cached("t", "conv-1") is None
    with pytest.raises(NotFoundError, match="conv-1"):
        model.context("t", "conv-1", "text", "adoption")
