"""Every modality, end to end through the job executor, for one sample user of the tiny profile.

One MovieLens user with a face, a voice recording and a subject (the persona sample) asks for
text, an image, a video, music (following the tune of their recording), speech and a 3D model.
Each job must succeed with the personalization the router picked, store its outputs with
lineage to the memory it used, and go away when the user is forgotten.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from tests.helpers import movielens_model
from unipgen.core.usermodel import UserModel
from unipgen.demo import PERSONA_SAMPLE, attach_persona
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.orchestrator import InlineExecutor
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec

pytest.importorskip("diffusers")

USER = "2"
#: modality → (instruction, options, the plan the router must choose, media types of the outputs)
REQUESTS = {
    "text": ("Recommend me a film for tonight", {"max_new_tokens": 8}, "rag_prompt", ["text/plain; charset=utf-8"]),
    "image": ("a photo of my dog on the beach", {}, "ip_adapter", ["image/png"]),
    "video": ("a video of my dog running on the beach", {}, "ip_adapter", ["video/mp4"]),
    "audio": ("music for my evening", {"melody": "greeting"}, "prompt_only", ["audio/wav"]),
    "speech": ("Good evening, here is my pick for tonight.", {}, "speaker_embedding", ["audio/wav"]),
    "3d": ("a 3d model of my dog", {}, "image_to_3d", ["model/gltf-binary", "image/png"]),
}
#: The memory each modality's outputs must name in their lineage (kind of source).
SOURCES = {"image": "subject", "video": "subject", "audio": "voice", "speech": "voice", "3d": "subject"}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserModel]:
    with movielens_model(tmp_path_factory.mktemp("modalities")) as user_model:
        attach_persona(user_model, "ml", USER)
        yield user_model


@pytest.fixture(scope="module")
def done(model: UserModel) -> dict:
    """Each modality's job, run by the inline executor (models loaded once, kept)."""
    executor = InlineExecutor(model, backoff_s=0.0)
    jobs = {}
    for modality, (instruction, options, _, _) in REQUESTS.items():
        spec = GenerateSpec(modality=modality, instruction=instruction, options=GenerationOptions(seed=3, **options))
        jobs[modality] = executor.wait("ml", executor.submit("ml", USER, spec, key=f"all-{modality}").key)
    return jobs


@pytest.mark.parametrize("modality", list(REQUESTS))
def test_each_modality_is_generated_personalized_and_stored_with_lineage(model: UserModel, done: dict,
                                                                          modality: str) -> None:
    job = done[modality]
    assert job.status == "succeeded", job.error
    _, _, method, media_types = REQUESTS[modality]
    assert job.result["plan"]["method"] == method
    artifacts = [model.store.artifacts.artifact("ml", key) for key in job.result["artifacts"]]
    assert [a.media_type for a in artifacts] == media_types
    for artifact in artifacts:
        data, _ = model.store.artifacts.artifact_blob("ml", artifact.key)
        assert data, f"{modality} output {artifact.key} is empty"
        if modality in SOURCES:
            assert SOURCES[modality] in {kind for kind, _ in artifact.derived_from}, artifact.derived_from


def test_outputs_are_what_they_claim(model: UserModel, done: dict) -> None:
    import soundfile
    import trimesh
    from PIL import Image

    def blob(modality: str, index: int = 0) -> bytes:
        return model.store.artifacts.artifact_blob("ml", done[modality].result["artifacts"][index])[0]

    assert Image.open(io.BytesIO(blob("image"))).size[0] > 0
    assert blob("video")[4:8] == b"ftyp"  # an MP4 container
    assert soundfile.info(io.BytesIO(blob("audio"))).duration > 0
    assert soundfile.info(io.BytesIO(blob("speech"))).duration > 0.5
    mesh = trimesh.load(io.BytesIO(blob("3d")), file_type="glb", force="mesh")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert Image.open(io.BytesIO(blob("3d", 1))).format == "PNG"


def test_melody_of_an_unknown_recording_or_for_images_is_refused(model: UserModel) -> None:
    from unipgen.orchestrator import prepare_generation

    with pytest.raises(NotFoundError, match="no voice recording 'humming'.*greeting"):
        prepare_generation(model, "ml", USER, "audio", "music", GenerationOptions(melody="humming"))
    with pytest.raises(InvalidInputError, match="melody applies to music"):
        prepare_generation(model, "ml", USER, "image", "a poster", GenerationOptions(melody="greeting"))


def test_forgetting_the_user_removes_every_output(model: UserModel, done: dict) -> None:
    keys = [key for job in done.values() for key in (job.result or {}).get("artifacts", [])]
    assert len(keys) == len(REQUESTS) + 1  # one output per modality, and the 3D preview
    report = model.store.privacy.forget_user("ml", USER)
    assert report.residue == []
    for key in keys:
        with pytest.raises(NotFoundError):
            model.store.artifacts.artifact_blob("ml", key)
    assert PERSONA_SAMPLE.is_dir()  # the sample itself is untouched
