"""`unipgen eval lamp-style` (`unipgen.eval.lamp.run_lamp`): the harness end to end with the tiny random
LM (its answers mean nothing: task building, prompts, adapters, scoring and the report are under
test) on the shared MovieLens and on generic JSONL files made here; the JSONL loader's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval import lamp
from unipgen.eval.environment import shared_data_dir
from unipgen.eval.lamp_data import movielens_ratings_jsonl, whole_stars
from unipgen.memory.lamp import load_user_jsonl

METHODS = lamp.METHODS
SCORED = ("nonpersonal", "rag", "lora", "usermodel", "rag_usermodel", "lora_usermodel")


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n",
                    encoding="utf-8")
    return path


def _user(user: str, history: list[tuple[str, object]], target: tuple[str, object], key: str = "label") -> dict:
    return {"user": user, "history": [{"text": text, key: answer} for text, answer in history],
            "target": {"text": target[0], key: target[1]}}


# Two users who tag alike items differently: user_majority is right for both, majority for one.
LABELLED = [
    _user("ana", [("a rocket to mars", "space"), ("moon landing film", "space"), ("a sad farewell", "drama")],
          ("astronauts on a comet", "space")),
    _user("bo", [("a rocket to mars", "drama"), ("family quarrel", "drama"), ("a rocket crash", "drama"),
                 ("a starship", "space")], ("orbit station", "drama")),
]


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _jsonl(tmp_path_factory.mktemp("jsonl") / "tags.jsonl", LABELLED)


def test_quick_run_on_shared_movielens(tmp_path: Path) -> None:
    if not (shared_data_dir() / "movielens-latest-small" / "tags.csv").is_file():
        pytest.skip(f"shared MovieLens absent ({shared_data_dir()}/movielens-latest-small; set UNIPGEN_SHARED_DATA)")
    result = lamp.run_lamp(quick=True, out=tmp_path / "report")
    assert (result["profile"], result["kind"], result["settings"]["ref"]) == ("tiny", "classification", "tiny-random")
    assert result["data"] == "../shared/data/movielens-latest-small" and result["methods"] == list(SCORED)
    assert result["n_users"] == 3 and result["n_questions"] == 6 and len(result["labels"]) == 15
    for method in (*METHODS, "majority", "user_majority"):
        assert 0.0 <= result[f"acc_{method}"] <= 1.0 and 0.0 <= result[f"f1_macro_{method}"] <= 1.0
    for method in SCORED:  # scored: every answer is a label
        assert result[f"unmapped_{method}"] == 0.0 and all(a[method] in result["labels"] for a in result["answers"])
    assert set(result["sources"]) == set(SCORED) and result["sources"]["usermodel"]["model"] == 0.0
    how = result["answers"][0]["rag_usermodel_how"]
    assert sum(how["sources"].values()) == pytest.approx(1.0, abs=1e-3) and how["fitted_on"] == 3
    report = result["report"]
    assert Path(report["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert json.loads(Path(report["json"]).read_text())["acc_lora"] == result["acc_lora"]
    markdown = Path(report["markdown"]).read_text()
    assert "| user_majority |" in markdown and "lamp-metrics.png" in Path(report["html"]).read_text()
    assert "Where the scored answers came from" in markdown and "intervals: over questions, over users" in markdown


def test_quick_run_on_a_jsonl_label_task(labelled_file: Path, tmp_path: Path) -> None:
    result = lamp.run_lamp(labelled_file, quick=True, out=tmp_path)
    assert (result["task"], result["kind"], result["labels"]) == ("jsonl (tags.jsonl)", "classification",
                                                                   ["drama", "space"])
    assert (result["n_questions"], result["n_users"], result["jsonl_users_in_file"]) == (2, 2, 2)
    assert result["acc_user_majority"] == 1.0  # ana: space (2 of 3), bo: drama (3 of 4)
    assert result["acc_majority"] == 0.5  # drama 4, space 3 overall: right for bo only
    assert result["f1_macro_majority"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-4)  # drama: tp 1, fp 1; space: tp 0
    assert set(result["acc_gain_ci95"]) == {f"{m}_vs_{b}" for m in SCORED for b in ("nonpersonal", "majority",
                                                                                    "user_majority") if m != b}
    assert set(result["acc_gain_ci95_users"]) == set(result["acc_gain_ci95"])
    for gain, low, high in result["acc_gain_ci95"].values():
        assert low <= gain <= high
    assert result["acc_usermodel"] == 1.0  # each user's prior and neighbours name their habit
    assert result["answers"][0]["subject"] == "astronauts on a comet"
    assert set(SCORED) <= result["answers"][0].keys()
    assert (tmp_path / "lamp.md").is_file() and (tmp_path / "lamp-metrics.png").is_file()
    assert result["score_kind"] == "mechanical check"  # the tiny random LM answered
    assert "Every figure here is a mechanical check" in (tmp_path / "lamp.md").read_text()


def test_jsonl_prompts_and_rag(labelled_file: Path) -> None:
    task = lamp.load_task(labelled_file, lamp.QUICK)
    question = task.questions[0]
    assert question.prompt.endswith("labels: [drama, space] item: astronauts on a comet")
    assert [e.answer for e in task.profiles["ana"]] == ["space", "space", "drama"]
    prompt = lamp.rag_prompt(task, question, [task.profiles["ana"][0]])
    assert prompt == f'the label for "a rocket to mars" is "space". {question.prompt}'
    custom = lamp.load_task(labelled_file, lamp.QUICK, template="Tag it ({labels}): {text}")
    assert custom.questions[1].prompt == "Tag it (drama, space): orbit station"
    with pytest.raises(InvalidInputError, match=r"must contain \{text\}"):
        lamp.load_task(labelled_file, lamp.QUICK, template="no placeholder")


def test_generation_jsonl_is_scored_by_rouge_and_bleu(tmp_path: Path) -> None:
    rows = [_user("u1", [("an article on rain", "Rain Again")], ("an article on storms", "Storms hit the coast"),
                  "output"),
            _user("u2", [("a piece on cats", "Cats Rule")], ("a piece on dogs", "Dogs rule the park"), "output")]
    path = _jsonl(tmp_path / "heads.jsonl", rows)
    task = lamp.load_task(path, lamp.QUICK)
    assert task.kind == "generation" and task.questions[0].prompt == ("Generate a title for the following text: "
                                                                      "an article on storms")
    scores = lamp.score_generation(task, ["storms hit the coast", "the park"])
    # u1 identical; u2: [the, park] vs [dogs, rule, the, park]: P 1, R 1/2 -> F 2/3 (also the LCS)
    assert scores["rouge1"] == pytest.approx((1 + 2 / 3) / 2) and scores["rougeL"] == pytest.approx((1 + 2 / 3) / 2)
    assert 0.0 < scores["bleu"] <= 100.0
    result = lamp.run_lamp(path, quick=True, methods=("rag", "usermodel"))
    assert {"rouge1_rag", "rougeL_rag", "bleu_rag", "seconds_rag"} <= result.keys() and result["methods"] == ["rag"]
    assert result["methods_skipped"] == {"usermodel": "scored methods apply to label and rating tasks"}
    assert "rouge1_nonpersonal" not in result and "acc_gain_ci95" not in result and "majority" not in str(result)


def test_rating_jsonl_mae_by_hand(tmp_path: Path) -> None:
    rows = [_user(f"u{i}", [("fine", 3)], (f"review {i}", gold), "score") for i, gold in enumerate([5, "2", 4.5, 1])]
    task = lamp.load_task(_jsonl(tmp_path / "stars.jsonl", rows), lamp.Settings())
    assert task.kind == "rating" and [q.golds for q in task.questions] == [("5",), ("2",), ("4.5",), ("1",)]
    # parsed 4, 2, none (gold 4.5: 1 is farther, counts as 1), 5: errors -1, 0, -3.5, 4
    scores = lamp.score_rating(task, ["4", "I'd say 2 stars", "no idea", "5 out of 5"])
    assert scores["mae"] == pytest.approx(8.5 / 4)
    assert scores["rmse"] == pytest.approx(math.sqrt((1 + 0 + 12.25 + 16) / 4))
    assert scores["unparsed"] == 0.25
    by_user = lamp.scores_by_user(task, {"x": ["5", "2", "1", "5"]})  # MAE per user: 0, 0, 3.5, 4
    assert [row["x"] for row in by_user.values()] == [0.0, 0.0, 3.5, 4.0]
    assert all(math.copysign(1.0, row["x"]) == 1.0 for row in by_user.values())  # never -0.0


def test_a_rating_task_from_movielens_is_scored_beside_the_users_mean(tmp_path: Path) -> None:
    """The LaMP-3-style file built from the shipped MovieLens sample (8 users), answered by score."""
    path = movielens_ratings_jsonl(SAMPLE, tmp_path / "ratings.jsonl", every=2, history=12)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["user"] for r in rows] == ["2", "4", "6", "8"] and all(len(r["history"]) == 12 for r in rows)
    assert {h["score"] for r in rows for h in r["history"]} <= {1, 2, 3, 4, 5}
    result = lamp.run_lamp(path, quick=True, methods=("nonpersonal", "usermodel", "rag_usermodel"),
                           max_questions=4)
    assert result["kind"] == "rating" and result["baselines"] == ["majority", "user_majority", "user_mean"]
    for method in ("nonpersonal", "usermodel", "rag_usermodel"):
        assert result[f"unparsed_{method}"] == 0.0 and 0.0 <= result[f"mae_{method}"] <= 4.0
        assert all(a[method] in "12345" for a in result["answers"])
    assert set(result["mae_gain_ci95"]) == {f"{m}_vs_{b}" for m in ("nonpersonal", "usermodel", "rag_usermodel")
                                            for b in ("nonpersonal", "majority", "user_majority", "user_mean")
                                            if m != b}
    means = [int(sum(h["score"] for h in r["history"]) / 12 + 0.5) for r in rows]  # rounded half up
    errors = [abs(m - r["target"]["score"]) for m, r in zip(means, rows, strict=True)]
    assert result["mae_user_mean"] == pytest.approx(sum(errors) / 4, abs=1e-4)
    gain, low, high = result["mae_gain_ci95"]["usermodel_vs_user_majority"]
    assert gain == pytest.approx(result["mae_user_majority"] - result["mae_usermodel"], abs=1e-3) and low <= high


def test_movielens_ratings_round_half_stars_up() -> None:
    assert [whole_stars(r) for r in (0.5, 1.0, 1.5, 3.5, 4.5, 5.0)] == [1, 1, 2, 4, 5, 5]
    with pytest.raises(InvalidInputError, match="no user has an id divisible by 1000"):
        movielens_ratings_jsonl(SAMPLE, Path("unused.jsonl"), every=1000)


# -- bad input -----------------------------------------------------------------------------------


def test_missing_data_and_bad_options(tmp_path: Path, labelled_file: Path) -> None:
    with pytest.raises(NotFoundError, match=r"nope\.jsonl not found"):
        lamp.run_lamp(tmp_path / "nope.jsonl", quick=True)
    with pytest.raises(InvalidInputError, match="methods must be distinct names"):
        lamp.run_lamp(labelled_file, quick=True, methods=("rag", "dreambooth"))
    with pytest.raises(NotFoundError, match="unknown model profile 'huge'"):
        lamp.run_lamp(labelled_file, profile="huge")


GOOD = _user("a", [("x", "l1")], ("y", "l2"))


@pytest.mark.parametrize(("rows", "message"), [
    ([GOOD, '{"user": "b", "history": [}'], r"bad\.jsonl: line 2: not valid JSON"),
    ([GOOD, "", "[1, 2]"], r"line 3: expected an object"),
    ([{"history": [], "target": {"text": "y", "label": "l"}}], r"line 1: missing field 'user'"),
    ([{"user": "a", "history": [], "target": {"text": "y"}}], r"line 1: target needs exactly one of"),
    ([GOOD, _user("b", [], ("y", 3), "score")], r"line 2: target has 'score' but earlier lines have 'label'"),
    ([GOOD, GOOD], r"line 2: user 'a' already on line 1"),
    ([_user("a", [("x", 7)], ("y", 3), "score")], r"line 1: history\[0\]: 'score' must be a number from 1 to 5"),
    ([{"user": "a", "history": [{"text": "x", "score": 2}], "target": {"text": "y", "label": "l"}}],
     r"line 1: history\[0\]: has 'score' but the target has 'label'"),
    ([{"user": "a", "history": "none", "target": {"text": "y", "label": "l"}}], r"line 1: field 'history' must be"),
    ([{"user": "a", "history": [], "target": {"text": "y", "label": "l"}}], r"line 1: 'history' is empty"),
    ([{"user": "a", "history": [{"label": "l"}], "target": {"text": "y", "label": "l"}}],
     r"line 1: history\[0\]: field 'text' must be a non-empty string"),
    (["", "  "], r"no users"),
])
def test_jsonl_loader_names_the_line(tmp_path: Path, rows: list[object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        load_user_jsonl(_jsonl(tmp_path / "bad.jsonl", rows))


def test_history_answers_are_optional(tmp_path: Path) -> None:
    rows = [{"user": 7, "history": [{"text": "old post"}, {"text": "older", "output": "Hi"}],
             "target": {"text": "new", "output": "Hello"}}]
    data = load_user_jsonl(_jsonl(tmp_path / "g.jsonl", rows))
    assert data.kind == "generation" and data.users[0].user == "7"
    assert [(i.text, i.answer) for i in data.users[0].history] == [("old post", None), ("older", "Hi")]


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = "import sys, unipgen.eval.lamp; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
