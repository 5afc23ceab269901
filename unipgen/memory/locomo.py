"""Read LoCoMo (Maharana et al., ACL 2024, "Evaluating Very Long-Term Conversational Memory of
LLM Agents") into typed records: a conversation's sessions, its turns and its annotated questions.

The release is a JSON list of samples. Each has a `sample_id`, a `conversation` (`speaker_a`,
`speaker_b`, `session_N` lists of turns with `speaker`, `dia_id`, `text` and, for a shared photo,
`blip_caption`; `session_N_date_time` such as "1:56 pm on 8 May, 2023") and `qa` (question,
answer, `evidence` dia_ids, `category` 1-5; 5 is adversarial, with `adversarial_answer`).
The LLM-written `observation` / `session_summary` / `event_summary` are not read: a memory that
writes without an LLM must not lean on them.

A few evidence lists of the release are misspelt ("D8:6; D9:17", "D:11:26", "D"): evidence ids
are normalised where the intent is plain and dropped where it is not, so a score never counts a
turn that cannot be retrieved. Parsing only: no model, no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.schema.messages import MessageIn

SESSION_KEY = re.compile(r"session_(\d+)")
DIA_ID = re.compile(r"D(\d+):(\d+)")
DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"
#: LoCoMo's question categories (the paper's numbering of the released file).
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


@dataclass(frozen=True)
class Turn:
    """One utterance: its `dia_id` key, who said it, what, in which session and when."""

    key: str
    speaker: str
    text: str
    session: int
    session_time: datetime | None
    caption: str | None = None  # the BLIP caption of a photo shared with the turn


@dataclass(frozen=True)
class Session:
    index: int
    date_time: str  # as written in the release
    ts: datetime | None


@dataclass(frozen=True)
class Question:
    question: str
    answer: str | None  # None for adversarial questions (category 5)
    evidence: tuple[str, ...]  # dia_ids of the turns that hold the answer
    category: int


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    sessions: tuple[Session, ...]
    turns: tuple[Turn, ...]  # in session order, then turn order
    questions: tuple[Question, ...]


def load_locomo(path: Path | str) -> list[Conversation]:
    """Every conversation of a LoCoMo-layout JSON file."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"LoCoMo file {path} does not exist")
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not JSON: {exc}") from exc
    return parse_locomo(samples, source=str(path))


def parse_locomo(samples: Any, source: str = "LoCoMo data") -> list[Conversation]:
    """Conversations from the release's decoded JSON (a list of samples)."""
    if not isinstance(samples, list) or not samples:
        raise InvalidInputError(f"{source}: expected a non-empty JSON list of samples")
    conversations = [parse_sample(sample, f"{source} sample #{n}") for n, sample in enumerate(samples)]
    ids = [c.sample_id for c in conversations]
    if len(set(ids)) != len(ids):
        raise InvalidInputError(f"{source}: duplicate sample_id among {sorted(ids)}")
    return conversations


def parse_sample(sample: Any, where: str) -> Conversation:
    """One sample; `where` names it in error messages."""
    _require_dict(sample, where)
    sample_id = _require_str(sample, "sample_id", where)
    where = f"{where} ({sample_id})"
    conversation = _require_dict(sample.get("conversation"), f"{where}: conversation")
    speakers = (_require_str(conversation, "speaker_a", where), _require_str(conversation, "speaker_b", where))
    sessions, turns = _sessions(conversation, where)
    if not turns:
        raise InvalidInputError(f"{where}: the conversation has no turns")
    qa = sample.get("qa", [])
    if not isinstance(qa, list):
        raise InvalidInputError(f"{where}: qa must be a list")
    known = {turn.key for turn in turns}
    questions = tuple(_question(item, known, f"{where} qa #{n}") for n, item in enumerate(qa))
    return Conversation(sample_id, speakers, sessions, turns, questions)


def _sessions(conversation: dict[str, Any], where: str) -> tuple[tuple[Session, ...], tuple[Turn, ...]]:
    numbers = sorted(int(m.group(1)) for key in conversation if (m := SESSION_KEY.fullmatch(key)))
    sessions, turns, seen = [], [], set()
    for number in numbers:
        raw_turns = conversation[f"session_{number}"]
        if not isinstance(raw_turns, list):
            raise InvalidInputError(f"{where}: session_{number} must be a list of turns")
        date_time = conversation.get(f"session_{number}_date_time")
        if not isinstance(date_time, str):
            raise InvalidInputError(f"{where}: session_{number}_date_time is missing or not a string")
        session = Session(number, date_time, parse_date_time(date_time))
        sessions.append(session)
        for position, raw in enumerate(raw_turns):
            turn = _turn(raw, session, f"{where} session_{number} turn #{position}")
            if turn.key in seen:
                raise InvalidInputError(f"{where}: dia_id {turn.key!r} appears twice")
            seen.add(turn.key)
            turns.append(turn)
    return tuple(sessions), tuple(turns)


def _turn(raw: Any, session: Session, where: str) -> Turn:
    _require_dict(raw, where)
    caption = raw.get("blip_caption")
    if caption is not None and not isinstance(caption, str):
        raise InvalidInputError(f"{where}: blip_caption must be a string")
    text = raw.get("text")
    if not isinstance(text, str):
        raise InvalidInputError(f"{where}: text must be a string")
    if not text.strip() and not caption:
        raise InvalidInputError(f"{where}: a turn needs a text or a photo caption")
    return Turn(_require_str(raw, "dia_id", where), _require_str(raw, "speaker", where), text, session.index,
                session.ts, caption or None)


def _question(item: Any, known: set[str], where: str) -> Question:
    _require_dict(item, where)
    question = _require_str(item, "question", where)
    category = item.get("category")
    if category not in CATEGORIES:
        raise InvalidInputError(f"{where}: category must be one of {sorted(CATEGORIES)}, got {category!r}")
    evidence = item.get("evidence", [])
    if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
        raise InvalidInputError(f"{where}: evidence must be a list of dia_id strings")
    answer = item.get("answer")
    return Question(question, None if answer is None else str(answer), normalize_evidence(evidence, known), category)


def normalize_evidence(evidence: list[str], known: set[str]) -> tuple[str, ...]:
    """The evidence's dia_ids that name turns of the conversation, in order, without repeats:
    "D8:6; D9:17" is two ids, "D:11:26" is D11:26, "D30:05" is D30:5; anything else is dropped."""
    found: list[str] = []
    for entry in evidence:
        for part in re.split(r"[;,\s]+", entry):
            match = DIA_ID.fullmatch(part.replace("D:", "D"))
            key = f"D{int(match.group(1))}:{int(match.group(2))}" if match else None
            if key in known and key not in found:
                found.append(key)
    return tuple(found)


def parse_date_time(text: str) -> datetime | None:
    """A session's "1:56 pm on 8 May, 2023" as a datetime; None if it does not parse."""
    try:
        return datetime.strptime(text.strip(), DATE_FORMAT)
    except ValueError:
        return None


def _require_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _require_str(record: dict[str, Any], field: str, where: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: {field!r} is missing or not a non-empty string")
    return value


def as_messages(conversation: Conversation) -> list[MessageIn]:
    """The conversation's turns as messages of the user it is stored under, in order (a turn
    that only shares a photo says so, its caption carrying what it shows). LoCoMo's times have
    no zone: they are read as UTC."""
    return [MessageIn(key=turn.key, speaker=turn.speaker, text=turn.text if turn.text.strip() else "(a photo)",
                      session=str(turn.session), caption=turn.caption,
                      ts=turn.session_time.replace(tzinfo=UTC) if turn.session_time is not None
                      and turn.session_time.tzinfo is None else turn.session_time)
            for turn in conversation.turns]
