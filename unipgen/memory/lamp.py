"""Read a task in the LaMP layout (Salemi et al., 2023, "LaMP: When Large Language Models Meet
Personalization"): a questions file and an outputs file.

* questions: a JSON list of ``{"id", "input", "profile": [{...}, ...]}``; each question is one
  user, and its profile holds that user's earlier records (fields depend on the task);
* outputs: ``{"task": "LaMP_2", "golds": [{"id", "output"}, ...]}``.

A folder holds them as ``questions.json`` and ``outputs.json``, or under the LaMP release's
names (``dev_questions.json`` / ``dev_outputs.json``, any ``*_questions.json`` /
``*_outputs.json`` pair).

`load_user_jsonl` reads the generic layout instead: a JSONL file, one user a line, with the
user's past items and one held-out target (see its docstring). Parsing only: no model, no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError

# The profile field a task's answer is taken from (the rest describe the record).
ANSWER_FIELDS = {"LaMP_1": None, "LaMP_2": "tag", "LaMP_3": "score", "LaMP_4": "title", "LaMP_5": "title",
                 "LaMP_6": "title", "LaMP_7": None}
# How each task is scored: a label to pick, a 1-5 rating, or free text.
TASK_KINDS = {"LaMP_1": "classification", "LaMP_2": "classification", "LaMP_3": "rating", "LaMP_4": "generation",
              "LaMP_5": "generation", "LaMP_6": "generation", "LaMP_7": "generation"}


@dataclass(frozen=True)
class LampQuestion:
    """One question: its id, the model input, the user's profile records and the gold output."""

    id: str
    input: str
    profile: tuple[dict[str, Any], ...]
    gold: str


@dataclass(frozen=True)
class LampTask:
    """A LaMP task: its name (``LaMP_2``) and its questions, each with its gold output."""

    task: str
    questions: tuple[LampQuestion, ...]

    @property
    def kind(self) -> str:
        """``classification``, ``rating`` or ``generation`` (unknown task names: generation)."""
        return TASK_KINDS.get(self.task, "generation")

    @property
    def answer_field(self) -> str | None:
        """The profile field that holds the user's answer for this task, if it has one."""
        return ANSWER_FIELDS.get(self.task)


def lamp_files(directory: Path) -> tuple[Path, Path]:
    """(questions file, outputs file) in `directory`: the plain names, else one ``*_`` pair."""
    plain = directory / "questions.json", directory / "outputs.json"
    if all(path.is_file() for path in plain):
        return plain
    questions = sorted(directory.glob("*questions.json"))
    for path in questions:
        outputs = path.with_name(path.name.removesuffix("questions.json") + "outputs.json")
        if outputs.is_file():
            return path, outputs
    raise InvalidInputError(f"{directory}: no LaMP task here: expected questions.json and outputs.json "
                            "(or a *_questions.json / *_outputs.json pair)")


def load_lamp(directory: Path) -> LampTask:
    """The task in `directory`, every question joined to its gold output."""
    questions_path, outputs_path = lamp_files(directory)
    outputs = _json(outputs_path)
    if not isinstance(outputs, dict):
        raise InvalidInputError(f"{outputs_path}: expected an object with 'task' and 'golds'")
    task = _field(outputs, "task", str, outputs_path, "outputs")
    golds = _golds(_field(outputs, "golds", list, outputs_path, "outputs"), outputs_path)
    raw = _json(questions_path)
    if not isinstance(raw, list):
        raise InvalidInputError(f"{questions_path}: expected a list of questions")
    questions = tuple(_question(row, number, questions_path, golds, outputs_path) for number, row in enumerate(raw))
    if not questions:
        raise InvalidInputError(f"{questions_path}: no questions")
    return LampTask(task=task, questions=questions)


def profile_text(record: dict[str, Any], exclude: tuple[str, ...] = ("id",)) -> str:
    """A profile record as one text: its string fields (but `exclude`), in file order."""
    return " ".join(value.strip() for key, value in record.items()
                    if key not in exclude and isinstance(value, str) and value.strip())


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None


def _field(row: dict[str, Any], name: str, kind: type, path: Path, where: str) -> Any:
    """`row[name]`, checked to be a `kind`; ids may be numbers (read as text)."""
    if name not in row:
        raise InvalidInputError(f"{path}: {where}: missing field {name!r}")
    value = row[name]
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind):
        raise InvalidInputError(f"{path}: {where}: field {name!r} must be a {kind.__name__}, "
                                f"got {type(value).__name__}")
    return value


def _golds(rows: list[Any], path: Path) -> dict[str, str]:
    golds = {}
    for number, row in enumerate(rows):
        where = f"golds[{number}]"
        if not isinstance(row, dict):
            raise InvalidInputError(f"{path}: {where}: expected an object with 'id' and 'output'")
        golds[_field(row, "id", str, path, where)] = _field(row, "output", str, path, where)
    return golds


def _question(row: Any, number: int, path: Path, golds: dict[str, str], outputs_path: Path) -> LampQuestion:
    where = f"question {number}"
    if not isinstance(row, dict):
        raise InvalidInputError(f"{path}: {where}: expected an object with 'id', 'input' and 'profile'")
    qid = _field(row, "id", str, path, where)
    profile = _field(row, "profile", list, path, f"{where} (id {qid})")
    if not all(isinstance(record, dict) for record in profile):
        raise InvalidInputError(f"{path}: {where} (id {qid}): field 'profile' must be a list of objects")
    if qid not in golds:
        raise InvalidInputError(f"{outputs_path}: golds: no output for question id {qid!r} of {path.name}")
    return LampQuestion(id=qid, input=_field(row, "input", str, path, f"{where} (id {qid})"), profile=tuple(profile),
                        gold=golds[qid])


# -- the generic JSONL layout -----------------------------------------------------------------------

#: The answer key of a JSONL target -> the task kind it makes.
JSONL_KINDS = {"label": "classification", "score": "rating", "output": "generation"}


@dataclass(frozen=True)
class HistoryItem:
    """One past item of a user: its text and the user's answer for it (label, score or output), if any."""

    text: str
    answer: str | None


@dataclass(frozen=True)
class UserHistory:
    """One JSONL line: the user, the past items, the held-out target's text and gold answer."""

    user: str
    history: tuple[HistoryItem, ...]
    input: str
    gold: str
    line: int


@dataclass(frozen=True)
class UserHistoryTask:
    """A JSONL task: its kind (``classification``, ``rating``, ``generation``) and one entry per user."""

    kind: str
    answer_key: str  # label, score or output
    users: tuple[UserHistory, ...]


def load_user_jsonl(path: Path) -> UserHistoryTask:
    """Users with past items and one held-out target each, from a JSONL file (blank lines skipped).

    Each line is ``{"user": "u1", "history": [{"text": "...", "label": "..."}, ...],
    "target": {"text": "...", "label": "..."}}``. The target's answer key sets the task for the
    whole file: ``label`` (classification), ``score`` (rating, a number from 1 to 5) or
    ``output`` (generation: the text the user wrote for the target, e.g. a headline). History
    items (at least one, oldest first) may carry the same key (their answer) or none. Errors
    name the file, the line and the field.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read ({exc})") from None
    users: list[UserHistory] = []
    seen: dict[str, int] = {}
    answer_key: str | None = None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where}: not valid JSON (column {exc.colno}: {exc.msg})") from None
        if not isinstance(row, dict):
            raise InvalidInputError(f"{where}: expected an object with 'user', 'history' and 'target'")
        user = _field(row, "user", str, path, f"line {number}")
        target = _field(row, "target", dict, path, f"line {number}")
        keys = [key for key in JSONL_KINDS if key in target]
        if len(keys) != 1:
            raise InvalidInputError(f"{where}: target needs exactly one of 'label', 'score' or 'output', got {keys}")
        if answer_key is None:
            answer_key = keys[0]
        elif keys[0] != answer_key:
            raise InvalidInputError(f"{where}: target has {keys[0]!r} but earlier lines have {answer_key!r} "
                                    "(one task per file)")
        if user in seen:
            raise InvalidInputError(f"{where}: user {user!r} already on line {seen[user]}")
        seen[user] = number
        history = _field(row, "history", list, path, f"line {number}")
        if not history:
            raise InvalidInputError(f"{where}: 'history' is empty (a user needs at least one past item)")
        items = tuple(_history_item(item, i, answer_key, where) for i, item in enumerate(history))
        users.append(UserHistory(user=user, history=items, input=_text(target, f"{where}: target"),
                                 gold=_answer(target, answer_key, f"{where}: target"), line=number))
    if answer_key is None:
        raise InvalidInputError(f"{path}: no users (expected one JSON object a line)")
    return UserHistoryTask(kind=JSONL_KINDS[answer_key], answer_key=answer_key, users=tuple(users))


def _history_item(item: Any, index: int, answer_key: str, where: str) -> HistoryItem:
    where = f"{where}: history[{index}]"
    if not isinstance(item, dict):
        raise InvalidInputError(f"{where}: expected an object with 'text'")
    other = [key for key in JSONL_KINDS if key in item and key != answer_key]
    if other:
        raise InvalidInputError(f"{where}: has {other[0]!r} but the target has {answer_key!r}")
    answer = _answer(item, answer_key, where) if item.get(answer_key) is not None else None
    return HistoryItem(text=_text(item, where), answer=answer)


def _text(row: dict[str, Any], where: str) -> str:
    value = row.get("text")
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: field 'text' must be a non-empty string")
    return value.strip()


def _answer(row: dict[str, Any], key: str, where: str) -> str:
    """The answer as text; a score must be a number (or numeric text) from 1 to 5 ("4", "4.5")."""
    value = row[key]
    if key == "score":
        try:
            score = float(value)
        except (TypeError, ValueError):
            score = math.nan
        if isinstance(value, bool) or not 1 <= score <= 5:
            raise InvalidInputError(f"{where}: 'score' must be a number from 1 to 5, got {value!r}")
        return str(int(score)) if score.is_integer() else str(score)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


__all__ = ["ANSWER_FIELDS", "JSONL_KINDS", "TASK_KINDS", "HistoryItem", "LampQuestion", "LampTask", "UserHistory",
           "UserHistoryTask", "lamp_files", "load_lamp", "load_user_jsonl", "profile_text"]
