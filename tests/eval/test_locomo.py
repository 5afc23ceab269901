"""LoCoMo: the loader's validation, session-aware retrieval over turns, and the recall harness
(on a tiny LoCoMo-shaped file built here, and on one real conversation when the data is there)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from unipgen.core.conversation import (
    ConversationIndex,
    FusionWeights,
    best_neighbour,
    date_text,
    light_stem,
    without_names,
)
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval.environment import shared_data_dir
from unipgen.eval.locomo import recall_at, run_locomo
from unipgen.memory.locomo import load_locomo, normalize_evidence, parse_locomo


def tiny_sample() -> dict[str, Any]:
    """Two sessions of Ana and Ben; a photo in session 2; four questions (one adversarial)."""
    session_1 = [
        {"speaker": "Ana", "dia_id": "D1:1", "text": "Hi Ben! I started pottery classes last week."},
        {"speaker": "Ben", "dia_id": "D1:2", "text": "Cool! What did you make?"},
        {"speaker": "Ana", "dia_id": "D1:3", "text": "A blue bowl for my mother."},
        {"speaker": "Ben", "dia_id": "D1:4", "text": "I went hiking in the mountains on Sunday."},
        {"speaker": "Ana", "dia_id": "D1:5", "text": "Sounds lovely, talk soon."},
    ]
    session_2 = [
        {"speaker": "Ben", "dia_id": "D2:1", "text": "Look at my new puppy!", "blip_caption": "a photo of a beagle dog"},
        {"speaker": "Ana", "dia_id": "D2:2", "text": "So cute! What is its name?"},
        {"speaker": "Ben", "dia_id": "D2:3", "text": "Her name is Daisy."},
        {"speaker": "Ana", "dia_id": "D2:4", "text": "I am reading a novel about sailors."},
    ]
    return {"sample_id": "tiny-1",
            "conversation": {"speaker_a": "Ana", "speaker_b": "Ben",
                             "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": session_1,
                             "session_2_date_time": "10:04 am on 20 June, 2023", "session_2": session_2},
            "qa": [{"question": "What did Ana make in pottery class?", "answer": "a blue bowl",
                    "evidence": ["D1:3"], "category": 4},
                   {"question": "When did Ben go hiking?", "answer": "7 May 2023", "evidence": ["D1:4"], "category": 2},
                   {"question": "What dog breed does Ben have?", "answer": "beagle",
                    "evidence": ["D2:1; D2:3"], "category": 1},
                   {"question": "What is Ana's puppy called?", "adversarial_answer": "Daisy", "evidence": ["D2:3"],
                    "category": 5}],
            "observation": {}, "session_summary": {}}


def write_samples(path: Path, samples: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(samples), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def encoder() -> Any:
    pytest.importorskip("sentence_transformers")
    from unipgen.core.encoders.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


# ---------------------------------------------------------------- the loader

def test_loader_reads_turns_sessions_and_questions(tmp_path: Path) -> None:
    [conversation] = load_locomo(write_samples(tmp_path / "tiny.json", [tiny_sample()]))
    assert conversation.sample_id == "tiny-1" and conversation.speakers == ("Ana", "Ben")
    assert [s.index for s in conversation.sessions] == [1, 2]
    assert conversation.sessions[1].ts is not None and conversation.sessions[1].ts.month == 6
    photo = conversation.turns[5]
    assert (photo.key, photo.session, photo.caption) == ("D2:1", 2, "a photo of a beagle dog")
    assert conversation.turns[0].caption is None and conversation.turns[0].session_time.day == 8
    assert conversation.questions[2].evidence == ("D2:1", "D2:3")  # "D2:1; D2:3" split
    assert conversation.questions[3].answer is None and conversation.questions[3].category == 5


def test_evidence_is_normalised_or_dropped() -> None:
    known = {"D8:6", "D9:17", "D11:26", "D30:5"}
    assert normalize_evidence(["D8:6; D9:17", "D:11:26", "D", "D30:05", "D99:1", "D8:6"], known) == (
        "D8:6", "D9:17", "D11:26", "D30:5")


@pytest.mark.parametrize(("break_it", "message"), [
    (lambda s: s.pop("sample_id"), "'sample_id' is missing"),
    (lambda s: s["conversation"].pop("speaker_b"), "'speaker_b' is missing"),
    (lambda s: s["conversation"].pop("session_2_date_time"), "session_2_date_time is missing"),
    (lambda s: s["conversation"]["session_1"][0].pop("dia_id"), "session_1 turn #0: 'dia_id'"),
    (lambda s: s["conversation"]["session_2"].append({"speaker": "Ana", "dia_id": "D1:1", "text": "again"}),
     "dia_id 'D1:1' appears twice"),
    (lambda s: s["qa"][0].update(category=7), "category must be one of"),
    (lambda s: s["qa"][0].update(evidence="D1:3"), "evidence must be a list"),
    (lambda s: s["conversation"].update(session_1="nope"), "session_1 must be a list"),
])
def test_loader_names_what_is_wrong(break_it: Any, message: str) -> None:
    sample = copy.deepcopy(tiny_sample())
    break_it(sample)
    with pytest.raises(InvalidInputError, match=message):
        parse_locomo([sample])


def test_loader_refuses_a_missing_or_non_list_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        load_locomo(tmp_path / "absent.json")
    with pytest.raises(InvalidInputError, match="non-empty JSON list"):
        load_locomo(write_samples(tmp_path / "dict.json", {"sample_id": "x"}))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="duplicate sample_id"):
        parse_locomo([tiny_sample(), tiny_sample()])


# ---------------------------------------------------------------- retrieval over turns

def test_light_stem_and_best_neighbour_stay_in_the_session() -> None:
    assert light_stem(["painting", "painted", "paints", "is", "dogs"]) == ["paint", "paint", "paint", "is", "dog"]
    same_as_previous = np.array([False, True, True, False, True])  # sessions: 0 0 0 | 1 1
    assert best_neighbour(np.array([1.0, 0.0, 0.2, 5.0, 0.0]), same_as_previous).tolist() == [0.0, 1.0, 0.0, 0.0, 5.0]


def test_names_leave_the_dense_query_and_dates_read_as_words() -> None:
    assert without_names("What did Ana's brother tell Ben?", ["Ana", "Ben"]) == "What did brother tell ?"
    assert without_names("Ana?", ["Ana"]) == "Ana?"  # nothing left: the question as asked
    assert date_text(parse_locomo([tiny_sample()])[0].sessions[1].ts) == "20 June 2023" and date_text(None) == ""


def test_a_month_finds_the_session_of_that_date(encoder: Any) -> None:
    turns = parse_locomo([tiny_sample()])[0].turns
    lexical_only = FusionWeights(dense=0.0, neighbour=0.0, speaker=0.0)
    hits = ConversationIndex(turns, encoder, lexical_only).search("What happened in June?", k=4)
    assert {hit.key for hit in hits} == {"D2:1", "D2:2", "D2:3", "D2:4"}


def test_search_returns_k_distinct_turn_keys(encoder: Any) -> None:
    turns = parse_locomo([tiny_sample()])[0].turns
    index = ConversationIndex(turns, encoder)
    hits = index.search("What did Ana make in pottery class?", k=3)
    assert len(hits) == 3 and len({h.key for h in hits}) == 3 and hits[0].key in {"D1:1", "D1:3"}
    assert all(h.key in {t.key for t in turns} for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(index.search("dog", k=50)) == len(turns)  # k over the turns: every turn once
    with pytest.raises(InvalidInputError, match="k must be at least 1"):
        index.search("dog", k=0)


def test_a_hit_lifts_its_neighbour_in_the_same_session_only(encoder: Any) -> None:
    turns = parse_locomo([tiny_sample()])[0].turns
    keys = [t.key for t in turns]
    alone = ConversationIndex(turns, encoder, FusionWeights(neighbour=0.0, session=0.0, speaker=0.0))
    expanded = ConversationIndex(turns, encoder, FusionWeights(neighbour=0.5, session=0.0, speaker=0.0))
    question = "What is the name of the puppy?"
    gain = expanded.scores(question) - alone.scores(question)
    # "Her name is Daisy" (D2:3) answers the matching D2:2 and gains from it; D1:5 ends session 1
    # and gains only from D1:4, never from D2:1 across the session boundary.
    assert gain[keys.index("D2:3")] > 0
    best_in_session_1 = max(alone.scores(question)[keys.index("D1:4")], 0.0)
    assert gain[keys.index("D1:5")] == pytest.approx(0.5 * best_in_session_1)


def test_the_named_speaker_is_boosted(encoder: Any) -> None:
    turns = parse_locomo([tiny_sample()])[0].turns
    plain = ConversationIndex(turns, encoder, FusionWeights(speaker=0.0))
    boosted = ConversationIndex(turns, encoder, FusionWeights(speaker=0.5))
    ratio = boosted.scores("What is Ben reading?") / plain.scores("What is Ben reading?")
    by_ben = np.array([t.speaker == "Ben" for t in turns])
    assert np.allclose(ratio[by_ben], 1.5) and np.allclose(ratio[~by_ben], 1.0)


# ---------------------------------------------------------------- the harness

def test_recall_at_counts_the_evidence_in_the_first_k() -> None:
    assert recall_at(["a", "b", "c"], ["c", "d"], 3) == 0.5 and recall_at(["a", "b", "c"], ["c"], 2) == 0.0


def test_harness_end_to_end_on_a_tiny_file(tmp_path: Path, encoder: Any) -> None:
    data = write_samples(tmp_path / "tiny.json", [tiny_sample()])
    result = run_locomo(data, out=tmp_path / "report", encoder=encoder)
    assert result["questions"] == 3  # the adversarial question is not scored
    for method in ("session-aware", "bm25", "dense"):
        table = result["recall"][method]
        assert set(table) == {"@5", "@10"} and table["@10"]["3"] is None  # no category-3 question
        assert 0.0 <= table["@5"]["all"] <= table["@10"]["all"] <= 1.0
    assert result["recall"]["session-aware"]["@10"]["all"] == 1.0  # 9 turns: k=10 returns them all
    assert result["conversations"][0]["turns"] == 9 and result["timing"]["query_ms_p99"] > 0
    assert "cpu" in result["machine"] and "torch_threads" in result["machine"]
    markdown = (tmp_path / "report" / "locomo.md").read_text()
    assert "Evidence recall@10" in markdown and "| session-aware |" in markdown


def test_harness_on_one_real_conversation(tmp_path: Path, encoder: Any) -> None:
    """conv-26's first 60 questions (~30 s: one MiniLM pass over 419 turns on one thread)."""
    path = shared_data_dir() / "locomo-dev" / "locomo-dev.json"
    if not path.is_file():
        pytest.skip(f"LoCoMo development data not found at {path} (set UNIPGEN_SHARED_DATA to run this)")
    result = run_locomo(path, conversations=1, questions=60, encoder=encoder)
    assert result["questions"] == 60
    ours, bm25, dense = (result["recall"][m]["@10"]["all"] for m in ("session-aware", "bm25", "dense"))
    assert ours > bm25 and ours > dense


def test_the_command_line_runs_the_harness(tmp_path: Path) -> None:
    """`unipgen eval locomo --data FILE --out DIR --json`, and a missing file named in the error."""
    pytest.importorskip("sentence_transformers")
    data = write_samples(tmp_path / "tiny.json", [tiny_sample()])

    def cli(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "UNIPGEN_HOME": str(tmp_path / "home")}
        return subprocess.run([sys.executable, "-m", "unipgen.cli", "eval", "locomo", *args, "--json"],
                              capture_output=True, text=True, env=env)

    done = cli("--data", str(data), "--out", str(tmp_path / "report"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["benchmark"] == "locomo" and result["questions"] == 3
    assert {Path(path).name for path in result["report"].values()} == {"locomo.json", "locomo.md", "locomo.html"}
    missing = cli("--data", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2 and "nowhere.json" in json.loads(missing.stdout)["error"]["message"]
