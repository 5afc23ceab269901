"""A multi-modal post (tiny models): one generation job whose spec names several modalities runs
one plan (one seed, the same preference keywords), writes the text from the image's caption, and
stores the outputs as one group (a shared group id in their meta, lineage from the group to each
member and from the text to its image) with a consistency score labelled for what it is; a spec
naming one modality is what it always was; bad requests are refused before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.conftest import SAMPLE
from unipgen.core.usermodel import UserModel
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.orchestrator import InlineExecutor
from unipgen.orchestrator.describe import instruction as caption_instruction
from unipgen.orchestrator.post import GROUP_KIND, GROUP_MEDIA_TYPE
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec, JobRecord
from unipgen.settings import Settings
from unipgen.tiny import MECHANICAL

pytest.importorskip("diffusers")

T = "t"
ASKED = "my favourite kind of film night"
OPTIONS = GenerationOptions(seed=5, steps=1, max_new_tokens=12)


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InlineExecutor]:
    """MovieLens user 2 (events with keywords, tag documents) on the tiny profile."""
    home = tmp_path_factory.mktemp("post")
    with MemoryStore.open(Settings(home=home / "home")) as store:
        store.users.create_tenant(T)
        load_movielens(store, T, SAMPLE, users=2)
        yield InlineExecutor(UserModel(store, "tiny", cache_dir=home / "cache"))


@pytest.fixture(scope="module")
def post(executor: InlineExecutor) -> JobRecord:
    spec = GenerateSpec(modality="text,image", instruction=ASKED, options=OPTIONS)
    job = executor.wait(T, executor.submit(T, "2", spec).key)
    assert job.status == "succeeded", job.error
    return job


def test_a_post_is_one_job_whose_outputs_share_a_group_seed_and_keywords(executor: InlineExecutor,
                                                                         post: JobRecord) -> None:
    store, result = executor.model.store, post.result or {}
    assert post.spec["modality"] == ["text", "image"]
    group = result["group"]
    members = {key: store.artifacts.artifact(T, key) for key in result["artifacts"]}
    by_modality = {(r.meta or {})["modality"]: r for r in members.values()}
    assert set(by_modality) == {"text", "image"} and len(members) == 2
    assert {(r.meta or {})["group"] for r in members.values()} == {group}
    assert {(r.meta or {})["seed"] for r in members.values()} == {5}
    assert {(r.meta or {})["job"] for r in members.values()} == {post.key}
    manifest = store.artifacts.artifact(T, group)
    assert manifest.kind == GROUP_KIND and manifest.media_type == GROUP_MEDIA_TYPE
    assert sorted(manifest.derived_from) == sorted(("artifact", key) for key in members)  # group -> every member
    stored = json.loads(store.artifacts.artifact_blob(T, group)[0])
    assert stored | {"job": post.key} == manifest.meta  # the meta is the manifest, plus the job that made it
    assert stored["group"] == group and stored["seed"] == 5 and stored["modalities"] == ["image", "text"]
    assert {a["key"]: a["media_type"] for a in stored["artifacts"]} == {k: r.media_type for k, r in members.items()}
    keywords = stored["keywords"]
    assert keywords  # user 2 has rated films: the lead (image) plan folds their keywords in
    assert keywords[0] in (by_modality["image"].meta or {})["prompt"]
    assert stored["plans"]["image"] == result["plan"] and stored["plans"]["text"]["modality"] == "text"


def test_the_text_is_written_from_the_images_caption_and_derives_from_the_image(executor: InlineExecutor,
                                                                               post: JobRecord) -> None:
    store, result = executor.model.store, post.result or {}
    members = [store.artifacts.artifact(T, key) for key in result["artifacts"]]
    text = next(r for r in members if (r.meta or {})["modality"] == "text")
    image = next(r for r in members if (r.meta or {})["modality"] == "image")
    caption = result["caption"]
    assert caption and (text.meta or {})["caption"] == caption
    assert (text.meta or {})["prompt"].endswith(caption_instruction(caption))  # the caption is in its instruction
    assert ASKED in (text.meta or {})["prompt"]
    assert ("artifact", image.key) in text.derived_from and ("artifact", text.key) not in image.derived_from
    # the caption is the captioner's reading of the very image stored
    from unipgen.orchestrator import Describer

    assert Describer(executor.model).read(store.artifacts.artifact_blob(T, image.key)[0])[0] == caption


def test_the_consistency_score_is_labelled_a_mechanical_check_on_random_clip(post: JobRecord) -> None:
    result = post.result or {}
    assert isinstance(result["consistency"], float) and -1.0 <= result["consistency"] <= 1.0
    assert result["score_kinds"] == {"consistency": MECHANICAL}


def test_a_post_asked_again_is_a_new_group_with_the_same_image_and_caption(executor: InlineExecutor,
                                                                           post: JobRecord) -> None:
    spec = GenerateSpec(modality=["image", "text"], instruction=ASKED, options=OPTIONS)
    again = executor.wait(T, executor.submit(T, "2", spec).key)
    assert again.status == "succeeded" and (again.result or {})["group"] != (post.result or {})["group"]
    assert (again.result or {})["caption"] == (post.result or {})["caption"]  # same seed, same image, same caption


@pytest.mark.parametrize("modality, message", [
    ("text,text", "'text' asked more than once"),
    (["image", "painting"], "painting"),
    ([], "no modality asked"),
])
def test_bad_modality_lists_are_refused(modality: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GenerateSpec(modality=modality, instruction=ASKED)


def test_best_of_is_refused_in_a_post_and_melody_needs_music(executor: InlineExecutor) -> None:
    with pytest.raises(ValidationError, match="best_of applies to one modality"):
        GenerateSpec(modality="text,image", instruction=ASKED, options=GenerationOptions(best_of=2))
    before = len(executor.model.store.artifacts.artifacts(T, "2"))
    spec = GenerateSpec(modality="text,image", instruction=ASKED, options=GenerationOptions(melody="humming"))
    job = executor.wait(T, executor.submit(T, "2", spec).key)
    assert job.status == "failed" and "melody applies to music" in (job.error or {})["message"]
    assert len(executor.model.store.artifacts.artifacts(T, "2")) == before


def test_one_modality_is_the_request_it_always_was() -> None:
    one = GenerateSpec(modality=["image"], instruction=ASKED)
    assert one == GenerateSpec(modality="image", instruction=ASKED)
    assert one.model_dump(mode="json")["modality"] == "image" and not one.is_post and one.modalities == ("image",)
    post = GenerateSpec(modality="text, image", instruction=ASKED)
    assert post.modality == ("text", "image") and post.is_post
    assert GenerateSpec.model_validate(post.model_dump(mode="json")) == post  # a stored post spec reads back


def test_the_demo_shows_a_post_made_by_the_inline_generator(executor: InlineExecutor, tmp_path: Path) -> None:
    from unipgen.demo_generation import generate_post
    from unipgen.demo_report import ReportData, ReportUser, write_report
    from unipgen.orchestrator import InlineGenerator

    said: list[str] = []
    post = generate_post(InlineGenerator(executor.model, executor), T, "2", said.append)
    group = executor.model.store.artifacts.artifact(T, post.group)
    assert group.kind == GROUP_KIND and len(group.derived_from) == len(post.outputs) == 2
    assert [o.modality for o in post.outputs] == ["image", "text"] and post.score_kind == MECHANICAL
    assert post.caption and post.caption in post.outputs[1].meta["prompt"]
    assert said and post.group in said[0] and "mechanical check" in said[0]
    page = write_report(tmp_path / "report", ReportData("t", ReportUser("2"), posts=[post])).read_text()
    assert post.group in page and "mechanical check" in page
