"""Feedback on generated outputs: recorded all-or-none, read back, forgotten with the outputs, exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.settings import Settings


@pytest.fixture
def rated(populated: MemoryStore) -> MemoryStore:
    """alice has three text outputs (a, b, c) and an adapter; bob has one output."""
    s = populated
    for key, text in (("a", "short"), ("b", "long answer"), ("c", "other")):
        s.artifacts.add_artifact("acme", key, kind="output", media_type="text/plain", data=text.encode(), user="alice",
                       derived_from=[("user", "alice")], meta={"prompt": "say hi", "modality": "text"})
    s.artifacts.add_artifact("acme", "ad", kind="adapter", media_type="application/zip", data=b"z", user="alice")
    s.artifacts.add_artifact("acme", "bob-out", kind="output", media_type="text/plain", data=b"x", user="bob")
    s.events.add_feedback("acme", [
        {"user": "alice", "type": "pairwise", "output": "a", "rejected": "b", "ts": 10},
        {"user": "alice", "type": "thumbs_down", "output": "c", "ts": 20, "meta": {"why": "off topic"}},
    ])
    return s


def test_feedback_reads_back_oldest_first(rated: MemoryStore) -> None:
    got = rated.events.feedback("acme", "alice")
    assert [(f.type, f.output, f.rejected) for f in got] == [("pairwise", "a", "b"), ("thumbs_down", "c", None)]
    assert got[1].meta == {"why": "off topic"}
    assert rated.events.feedback("acme", "bob") == []
    assert rated.users.user_summary("acme", "alice").counts["feedback"] == 2


@pytest.mark.parametrize(("row", "error", "message"), [
    ({"type": "pairwise", "output": "a"}, InvalidInputError, "needs `rejected`"),
    ({"type": "thumbs_up", "output": "a", "rejected": "b"}, InvalidInputError, "`rejected` is for pairwise"),
    ({"type": "pairwise", "output": "a", "rejected": "a"}, InvalidInputError, "must be different"),
    ({"type": "love", "output": "a"}, InvalidInputError, "type"),
    ({"type": "thumbs_up", "output": "nope"}, NotFoundError, "no output 'nope'"),
    ({"type": "thumbs_up", "output": "bob-out"}, NotFoundError, "no output 'bob-out'"),
    ({"type": "thumbs_up", "output": "ad"}, InvalidInputError, "not a generated output"),
])
def test_bad_feedback_is_refused_and_writes_nothing(rated: MemoryStore, row: dict, error: type,
                                                    message: str) -> None:
    good = {"user": "alice", "type": "thumbs_up", "output": "a"}
    with pytest.raises(error, match=message):
        rated.events.add_feedback("acme", [good, {"user": "alice", **row}])
    assert len(rated.events.feedback("acme", "alice")) == 2  # the good row of the batch was not written either


def test_unknown_user_is_named(rated: MemoryStore) -> None:
    with pytest.raises(NotFoundError, match="unknown user 'carol'"):
        rated.events.add_feedback("acme", [{"user": "carol", "type": "thumbs_up", "output": "a"}])


def test_forgetting_an_output_forgets_the_judgements_of_it(rated: MemoryStore) -> None:
    report = rated.privacy.forget_item("acme", "artifact", "b")
    assert report.deleted["feedback"] == 1 and report.residue == []
    assert [f.output for f in rated.events.feedback("acme", "alice")] == ["c"]


def test_forgetting_the_user_leaves_no_feedback(rated: MemoryStore) -> None:
    report = rated.privacy.forget_user("acme", "alice")
    assert report.deleted["feedback"] == 2 and report.residue == []


def test_export_import_keeps_feedback(rated: MemoryStore, tmp_path: Path) -> None:
    first = tmp_path / "first.zip"
    assert rated.privacy.export_user("acme", "alice", first)["feedback"] == 2
    with MemoryStore.open(Settings(home=tmp_path / "empty")) as empty:
        empty.privacy.import_user(first)
        assert empty.events.feedback("acme", "alice") == rated.events.feedback("acme", "alice")
        second = tmp_path / "second.zip"
        empty.privacy.export_user("acme", "alice", second)
        assert first.read_bytes() == second.read_bytes()
