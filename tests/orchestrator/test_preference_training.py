"""From feedback to a served DPO adapter: pairs from judgements, lineage, routing, forget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.orchestrator import InlineGenerator
from unipgen.orchestrator.training import preference_pairs, train
from unipgen.settings import Settings

PROMPT = "Suggest a film for tonight"


@pytest.fixture
def model(tmp_path: Path) -> Iterator[UserModel]:
    """ann has four text outputs of one prompt (a..d), one of another prompt (x) and an image."""
    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("t")
        store.users.create_users("t", ["ann", "bob"])
        answers = {"a": "A calm drama.", "b": "Loud action.", "c": "A quiet documentary.", "d": "A horror film."}
        for key, text in answers.items():
            store.artifacts.add_artifact("t", key, kind="output", media_type="text/plain; charset=utf-8", data=text.encode(),
                               user="ann", meta={"prompt": PROMPT, "modality": "text"})
        store.artifacts.add_artifact("t", "x", kind="output", media_type="text/plain", data=b"Read a poem.", user="ann",
                           meta={"prompt": "What should I read?"})
        store.artifacts.add_artifact("t", "img", kind="output", media_type="image/png", data=b"png", user="ann",
                           meta={"prompt": PROMPT})
        yield UserModel(store, "tiny", cache_dir=tmp_path / "cache")


def judge(model: UserModel, *rows: dict) -> None:
    model.store.events.add_feedback("t", [{"user": "ann", **row} for row in rows])


def test_pairs_come_from_choices_and_from_ups_against_downs_of_the_same_prompt(model: UserModel) -> None:
    judge(model,
          {"type": "pairwise", "output": "a", "rejected": "b", "ts": 1},
          {"type": "pairwise", "output": "a", "rejected": "x", "ts": 2},    # different prompts: no pair
          {"type": "thumbs_up", "output": "c", "ts": 3},
          {"type": "thumbs_down", "output": "d", "ts": 4},
          {"type": "thumbs_down", "output": "x", "ts": 5},                  # no up of its prompt
          {"type": "thumbs_up", "output": "img", "ts": 6})                  # not text
    pairs, used = preference_pairs(model, "t", "ann")
    assert [(p.chosen, p.rejected) for p in pairs] == [("A calm drama.", "Loud action."),
                                                        ("A quiet documentary.", "A horror film.")]
    assert all(p.prompt == PROMPT for p in pairs) and used == ["a", "b", "c", "d"]


def test_the_latest_thumb_of_an_output_counts(model: UserModel) -> None:
    judge(model, {"type": "thumbs_up", "output": "c", "ts": 1}, {"type": "thumbs_down", "output": "d", "ts": 2},
          {"type": "thumbs_down", "output": "c", "ts": 3})  # changed their mind: two downs, no pair
    with pytest.raises(InvalidInputError, match=r"no preference pair on text outputs \(3 judgements found\)"):
        train(model, "t", "ann", "dpo")


def test_dpo_adapter_is_served_and_forgotten_with_the_outputs_it_learned_from(model: UserModel) -> None:
    judge(model, {"type": "pairwise", "output": "a", "rejected": "b"})
    trained = train(model, "t", "ann", "dpo", steps=3)
    store = model.store
    record = next(a for a in store.artifacts.artifacts("t", "ann") if a.key == trained.key)
    assert record.meta["method"] == "dpo" and record.meta["pairs"] == 1
    assert record.derived_from == [("artifact", "a"), ("artifact", "b")]
    [made] = InlineGenerator(model).generate("t", "ann", "text", PROMPT)
    assert made.plan.method == "lora" and made.plan.adapters == [trained.key]
    assert InlineGenerator(model).generate("t", "bob", "text", PROMPT)[0].plan.adapters == []  # ann's only
    report = store.privacy.forget_item("t", "artifact", "b")  # an output it learned from
    assert report.residue == [] and report.deleted["feedback"] == 1
    assert {trained.key, made.key}.isdisjoint(a.key for a in store.artifacts.artifacts("t", "ann"))
