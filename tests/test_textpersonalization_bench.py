"""`unipgen bench textpersonalization`: the harness end to end on tiny data with the tiny random LM
(its answers mean nothing: the task building, prompts, adapters and scoring are under test), the
LaMP loader, and the metrics against hand-computed values."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from unipgen.bench import textpersonalization
from unipgen.errors import InvalidInputError
from unipgen.eval import lamp_tasks
from unipgen.memory.lamp import load_lamp, profile_text

LAMP2_MINI = Path(__file__).resolve().parent / "data" / "lamp2-mini"
METHODS = ("nonpersonal", "rag", "lora", "usermodel", "rag_usermodel", "lora_usermodel")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The protocol the benchmark runs: `unipgen.eval.lamp`."""
    from unipgen.eval import lamp

    yield lamp


@pytest.fixture(scope="module")
def tags_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic MovieLens layout: two users with 6 labelled movies each, one with a single tag.

    (The shipped sample has 10 tags, none repeated: too few for a fixed label set.)
    """
    directory = tmp_path_factory.mktemp("tags")
    movies = [("1", "Star Voyage (2001)", "Sci-Fi|Adventure"), ("2", "Laugh Riot (1999)", "Comedy"),
              ("3", "Moon Base (2010)", "Sci-Fi"), ("4", "Funny Farm Two (2003)", "Comedy|Children"),
              ("5", "Galaxy Quest Again (2012)", "Sci-Fi|Comedy"), ("6", "Robot Dreams (2015)", "Sci-Fi|Drama"),
              ("7", "Dad Jokes (2018)", "Comedy")]
    tags = [("1", ["sci-fi", "funny", "sci-fi", "sci-fi", "funny", "sci-fi"]),
            ("2", ["funny", "funny", " Funny", "sci-fi", "funny", "funny"])]
    rows = [(user, str(movie), tag, 1000 + 10 * movie) for user, labels in tags
            for movie, tag in enumerate(labels, 1)] + [("3", "7", "funny", 5000)]
    for name, header, body in (("movies.csv", ["movieId", "title", "genres"], movies),
                               ("tags.csv", ["userId", "movieId", "tag", "timestamp"], rows)):
        with (directory / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(body)
    return directory


# -- the MovieLens task --------------------------------------------------------------------------


def test_movielens_task_holds_out_the_latest_movies(bench: ModuleType, tags_dir: Path) -> None:
    task = lamp_tasks.movielens_task(tags_dir, bench.QUICK)
    assert task.labels == ("funny", "sci-fi")  # lower-cased, spaces trimmed: "Funny" counts as funny
    assert sorted(task.profiles) == ["1", "2"]  # user 3 has one labelled movie
    assert [q.id for q in task.questions] == ["1:5", "1:6", "2:5", "2:6"]
    assert [q.golds for q in task.questions] == [("funny",), ("sci-fi",), ("funny",), ("funny",)]
    assert [e.answer for e in task.profiles["1"]] == ["sci-fi", "funny", "sci-fi", "sci-fi"]
    assert all("Galaxy Quest" not in e.text for e in task.profiles["1"])  # questions never in the profile
    question = task.questions[0]
    assert "tags: [funny, sci-fi]" in question.prompt and "Galaxy Quest Again (2012)" in question.prompt


def test_rag_prompt_and_lora_texts(bench: ModuleType, tags_dir: Path) -> None:
    from unipgen.modalities.text import TransformersTextBackend

    task = lamp_tasks.movielens_task(tags_dir, bench.QUICK)
    question = task.questions[1]  # Robot Dreams — Sci-Fi, Drama
    retrieved = bench.retrieve(task, question, 2)
    assert len(retrieved) == 2 and all("Sci-Fi" in e.text for e in retrieved)  # BM25 on the genres
    prompt = bench.rag_prompt(task, question, retrieved)
    assert prompt.startswith('the tag for "') and prompt.endswith(question.prompt)
    backend = TransformersTextBackend()
    backend.setup()
    texts = bench.training_texts(task, task.profiles["1"], backend.tokenizer, steps=3)
    assert len(texts) == 3 and texts[-1].endswith("<|assistant|>sci-fi")  # chat turn, then the user's tag


def test_quick_run_end_to_end(bench: ModuleType, tags_dir: Path) -> None:
    result = textpersonalization.run(quick=True, data_dir=tags_dir)
    assert (result["n_questions"], result["n_users"], result["labels"]) == (4, 2, ["funny", "sci-fi"])
    for method in METHODS:
        assert 0.0 <= result[f"acc_{method}"] <= 1.0 and 0.0 <= result[f"rouge1_{method}"] <= 1.0
        assert result[f"seconds_{method}"] >= 0.0
    assert result["acc_majority"] == 0.25  # profiles tie 4-4, the first seen (sci-fi) wins: right once
    assert result["acc_user_majority"] == 0.75  # user 1: sci-fi (1 of 2), user 2: funny (2 of 2)
    assert result["settings"]["ref"] == "tiny-random" and len(result["answers"]) == 4
    assert result["scores_by_user"]["2"] == {"questions": 2, "profile": 4, "user_majority": 1.0, "majority": 0.0,
                                             **{m: result["scores_by_user"]["2"][m] for m in METHODS}}
    assert all(result[f"unmapped_{m}"] == 0.0 for m in METHODS)  # scored: every answer is a label
    gain, low, high = result["acc_gain_ci95"]["lora_vs_user_majority"]
    assert low <= gain <= high and gain == pytest.approx(result["acc_lora"] - result["acc_user_majority"], abs=1e-3)


def test_cli_runs_a_lamp_task(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unipgen.cli import app

    outcome = CliRunner().invoke(app, ["bench", "textpersonalization", "--quick", "--data", str(LAMP2_MINI), "--json"])
    assert outcome.exit_code == 0, outcome.output
    result = json.loads(outcome.stdout.strip().splitlines()[-1])
    assert result["task"] == "LaMP_2" and result["labels"] == ["comedy", "romance", "sci-fi"]
    assert result["n_questions"] == 3 and result["acc_user_majority"] == 1.0
    assert {f"f1_macro_{m}" for m in METHODS} <= result.keys()


# -- the LaMP loader -----------------------------------------------------------------------------


def test_lamp_loader_reads_the_mini_sample() -> None:
    task = load_lamp(LAMP2_MINI)
    assert (task.task, task.kind, task.answer_field) == ("LaMP_2", "classification", "tag")
    assert [q.gold for q in task.questions] == ["sci-fi", "romance", "comedy", "romance"]
    record = task.questions[0].profile[0]
    assert profile_text(record) == "Two astronauts race to fix an oxygen leak on a lunar base. sci-fi"
    assert profile_text(record, exclude=("id", "tag")) == "Two astronauts race to fix an oxygen leak on a lunar base."


def test_lamp_loader_takes_the_release_file_names(tmp_path: Path) -> None:
    shutil.copy(LAMP2_MINI / "questions.json", tmp_path / "dev_questions.json")
    shutil.copy(LAMP2_MINI / "outputs.json", tmp_path / "dev_outputs.json")
    assert len(load_lamp(tmp_path).questions) == 4


def _write(directory: Path, questions: object, outputs: object) -> Path:
    for name, payload in (("questions.json", questions), ("outputs.json", outputs)):
        text = payload if isinstance(payload, str) else json.dumps(payload)
        (directory / name).write_text(text, encoding="utf-8")
    return directory


GOOD_Q = [{"id": "1", "input": "rate it", "profile": [{"id": "p", "text": "good", "score": "5"}]}]
GOOD_O = {"task": "LaMP_3", "golds": [{"id": "1", "output": "4"}]}


@pytest.mark.parametrize(("questions", "outputs", "message"), [
    ("[{not json", GOOD_O, r"questions\.json: not valid JSON \(line 1"),
    ([{"id": "1", "profile": []}], GOOD_O, r"questions\.json: question 0 \(id 1\): missing field 'input'"),
    ([{"id": "1", "input": "x", "profile": "none"}], GOOD_O, r"questions\.json: question 0 \(id 1\): field 'profile' must be a list"),
    ({"id": "1"}, GOOD_O, r"questions\.json: expected a list of questions"),
    (GOOD_Q, {"golds": []}, r"outputs\.json: outputs: missing field 'task'"),
    (GOOD_Q, {"task": "LaMP_3", "golds": [{"id": "1"}]}, r"outputs\.json: golds\[0\]: missing field 'output'"),
    (GOOD_Q, {"task": "LaMP_3", "golds": [{"id": "2", "output": "3"}]}, r"outputs\.json: golds: no output for question id '1'"),
])
def test_lamp_loader_names_the_file_and_field(tmp_path: Path, questions: object, outputs: object,
                                              message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_lamp(_write(tmp_path, questions, outputs))


def test_lamp_loader_without_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no LaMP task here"):
        load_lamp(tmp_path)


def test_lamp_loader_does_not_import_torch() -> None:
    import subprocess

    code = "import sys, unipgen.memory.lamp; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# -- metrics -------------------------------------------------------------------------------------


def test_rouge1_against_hand_computed_values(bench: ModuleType) -> None:
    # 6 and 6 tokens, overlap the×2 + cat + on + mat = 5: P = R = F = 5/6
    assert bench.rouge1_f1("the cat sat on the mat", "The cat is on the mat") == pytest.approx(5 / 6)
    # [dark, comedy] vs [dark, comedy, about, dark, times]: overlap 2, P = 1, R = 2/5, F = 0.8 / 1.4
    assert bench.rouge1_f1("Dark comedy!", "dark comedy about dark times") == pytest.approx(4 / 7)
    assert bench.rouge1_f1("", "anything") == 0.0


def test_answers_map_to_labels(bench: ModuleType) -> None:
    labels = ("comedy", "dark comedy", "in netflix queue", "sci-fi")
    assert bench.map_to_label("Sci-Fi", labels) == "sci-fi"
    assert bench.map_to_label('I think it is "Dark Comedy".', labels) == "dark comedy"  # the longest label
    assert bench.map_to_label("in Netflix queue", labels) == "in netflix queue"
    assert bench.map_to_label("science fiction", labels) is None
    assert bench.map_to_label("comedic", labels) is None  # whole words only


def test_f1_macro_by_hand(bench: ModuleType) -> None:
    # a: tp 1, fp 1, fn 1 -> 0.5; b: tp 1, fp 0, fn 1 -> 2/3
    assert bench.f1_macro(["a", "a", "b", None], ["a", "b", "b", "a"], ["a", "b"]) == pytest.approx((0.5 + 2 / 3) / 2)


def test_lamp3_mae_and_rmse_by_hand(bench: ModuleType, tmp_path: Path) -> None:
    questions = [{"id": str(i), "input": f"review {i}", "profile": [{"id": f"p{i}", "text": "fine", "score": "3"}]}
                 for i in range(4)]
    golds = {"task": "LaMP_3", "golds": [{"id": str(i), "output": g} for i, g in enumerate(["5", "2", "4", "1"])]}
    task = bench.load_task(_write(tmp_path, questions, golds), bench.Settings())
    assert task.kind == "rating" and [e.answer for e in task.profiles["0"]] == ["3"]
    # parsed 4, 2, none, 5; "no idea" vs gold 4 counts as 1 (farther than 5): errors -1, 0, -3, 4
    scores = bench.score_rating(task, ["4", "I'd say 2 stars", "no idea", "5 out of 5"])
    assert scores["mae"] == pytest.approx(2.0)
    assert scores["rmse"] == pytest.approx(math.sqrt((1 + 0 + 9 + 16) / 4))
    assert scores["unparsed"] == 0.25
