"""Labels and ratings through the product's one generation path (a job: context, scoring plan,
the tiny text model's scores, the user model's mix, an artifact with lineage), on two MovieLens
sample users: user 2 rated 29 movies and tagged three of them "funny", "MMA" and "drugs"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import movielens_model
from unipgen.core.context import SNAPSHOT_SPACES
from unipgen.core.label_history import history, on_scale
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.orchestrator import InlineGenerator
from unipgen.schema.generation import GenerationOptions

RATE = "How would I rate Heat (1995) — Action, Crime, Thriller?"
TAGS = ("funny", "mma", "drugs")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("labels")


@pytest.fixture(scope="module")
def generator(root: Path) -> Iterator[InlineGenerator]:
    with movielens_model(root) as model:
        yield InlineGenerator(model)


def _made(generator: InlineGenerator, user: str, instruction: str, **options: object) -> tuple[str, dict, list]:
    [made] = generator.generate("ml", user, "text", instruction, GenerationOptions(**options))
    store = generator.model.store
    record = store.artifacts.artifact("ml", made.key)
    return store.artifacts.artifact_blob("ml", made.key)[0].decode(), record.meta, record.derived_from


def test_a_rating_is_scored_and_mixed_with_the_users_own(generator: InlineGenerator) -> None:
    answer, meta, lineage = _made(generator, "2", RATE, scale=(1, 5))
    label = meta["label"]
    assert answer == label["answer"] and answer in {"1", "2", "3", "4", "5"}
    assert meta["scored"] is True and label["mode"] == "mixed" and label["history"] == 29
    assert label["fitted_on"] == 16 and label["scored_prompts"] == 17  # the question and 16 items, leave-one-out
    assert sum(label["sources"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(label["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(label["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert len(label["examples"]) == 4 and set(label["examples"]) <= set(label["neighbours"])
    assert meta["prompt"].startswith("Ratings this user gave to similar items:\nitem: ") and RATE in meta["prompt"]
    rated = {("item", key.removeprefix("item:")) for key in label["neighbours"]}
    assert rated <= set(lineage) and len([kind for kind, _ in lineage if kind == "item"]) >= 29


def test_the_history_maps_ratings_to_the_scale_and_tags_to_labels(generator: InlineGenerator) -> None:
    snapshot = generator.model.store.reads.user_snapshot("ml", "2", SNAPSHOT_SPACES)
    ratings = history(snapshot, ["1", "2", "3", "4", "5"], (1, 5))
    values = {e.item: e.value for e in snapshot.events if e.type == "rate"}
    assert len(ratings.items) == 29 and all(i.vector is not None for i in ratings.items)
    assert all(item.answers == (on_scale(values[item.key.removeprefix("item:")], 1, 5) - 1,)
               for item in ratings.items)
    tags = history(snapshot, list(TAGS), None)
    assert [i.answers for i in tags.items] == [(0,), (2,), (1,)]  # funny, drugs, MMA: oldest first
    assert "document:tag:60756:funny" in tags.sources and "item:60756" in tags.sources
    assert (on_scale(3.5, 1, 5), on_scale(0.5, 1, 5), on_scale(7, 1, 5), on_scale(2.49, 1, 5)) == (4, 1, 5, 2)


def test_a_label_answer_is_forgotten_with_a_tag_it_read(generator: InlineGenerator) -> None:
    answer, meta, lineage = _made(generator, "2", "Which tag fits The Fighter (2010)?", labels=TAGS)
    assert answer in TAGS and meta["label"]["history"] == 3 and meta["label"]["fitted_on"] == 3
    assert ("document", "tag:60756:funny") in lineage
    store = generator.model.store
    keys = {a.key for a in store.artifacts.artifacts("ml", "2") if (a.meta or {}).get("label")}
    store.privacy.forget_item("ml", "document", "tag:60756:funny", user="2")
    left = {a.key for a in store.artifacts.artifacts("ml", "2") if (a.meta or {}).get("label")}
    assert left < keys and all(store.artifacts.artifact("ml", k).meta["label"]["history"] == 29 for k in left)


def test_without_history_the_model_answers_alone(generator: InlineGenerator) -> None:
    answer, meta, _ = _made(generator, "1", "Is this a yes?", labels=("yes", "no"))
    assert answer in {"yes", "no"} and meta["label"]["mode"] == "model"
    assert meta["label"]["sources"] == {"model": 1.0, "prior": 0.0, "neighbours": 0.0}
    assert meta["label"]["scored_prompts"] == 1


def test_labels_are_for_text_only_and_checked(generator: InlineGenerator) -> None:
    with pytest.raises(InvalidInputError, match="labels and scale apply to text requests, not 'image'"):
        generator.generate("ml", "2", "image", "a poster", GenerationOptions(labels=("a", "b")))
    with pytest.raises(ValueError, match="labels 'Funny' and 'funny ' are the same label|no space at either end"):
        GenerationOptions(labels=("Funny", "funny "))
    with pytest.raises(ValueError, match="labels 'Funny' and 'funny' are the same label"):
        GenerationOptions(labels=("Funny", "funny"))
    with pytest.raises(ValueError, match="give labels or scale, not both"):
        GenerationOptions(labels=("a", "b"), scale=(1, 5))
    with pytest.raises(ValueError, match="low < high"):
        GenerationOptions(scale=(5, 1))
    with pytest.raises(ValueError, match="num_outputs and best_of must be 1"):
        GenerationOptions(scale=(1, 5), num_outputs=2)
    with pytest.raises(ValueError, match="2 to 64 labels"):
        GenerationOptions(labels=("only",))
    with pytest.raises(NotFoundError):
        generator.generate("ml", "nobody", "text", "x", GenerationOptions(labels=("a", "b")))


def test_the_users_text_adapter_scores_the_answers(generator: InlineGenerator) -> None:
    from unipgen.orchestrator.training import train

    trained = train(generator.model, "ml", "2", "text-lora", steps=2)
    [made] = generator.generate("ml", "2", "text", RATE, GenerationOptions(scale=(1, 5)))
    record = generator.model.store.artifacts.artifact("ml", made.key)
    assert made.plan.method == "lora" and record.meta["adapters"] == [trained.key]
    assert ("artifact", trained.key) in record.derived_from


def test_the_command_line_answers_a_rating(generator: InlineGenerator, root: Path) -> None:
    from unipgen.cli import app

    home = str(root / "home")
    outcome = CliRunner().invoke(app, ["--home", home, "generate", "2", "-i", RATE, "--scale", "1", "5", "--tenant",
                                       "ml", "--json"])
    assert outcome.exit_code == 0, outcome.output
    [artifact] = json.loads(outcome.stdout)["artifacts"]
    assert artifact["label"]["answer"] in {"1", "2", "3", "4", "5"} and set(artifact["label"]["sources"]) == {
        "model", "prior", "neighbours"}
    plain = CliRunner().invoke(app, ["--home", home, "generate", "2", "-i", "Which?", "--label", "funny", "--label",
                                     "drugs", "--tenant", "ml"])
    assert plain.exit_code == 0 and "answer: " in plain.stdout and "(from model " in plain.stdout
    refused = CliRunner().invoke(app, ["--home", home, "generate", "2", "-i", "x", "--label", "a", "--tenant", "ml"])
    assert isinstance(refused.exception, InvalidInputError) and "2 to 64 labels" in str(refused.exception)
