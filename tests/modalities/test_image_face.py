"""IP-Adapter FaceID in the diffusers image backend, on the tiny pipeline and its tiny random
FaceID weights: a self-portrait conditioned on the user's face embedding, per user, undone after."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tests.modalities.test_image import NOW, PROMPT, fetch, make_lora, one, photo, put
from unipgen.errors import InvalidInputError
from unipgen.modalities.image import DiffusersImageBackend, tiny_face_adapter_dir, tiny_sd_dir
from unipgen.modalities.image_tiny import TINY_FACE_ID_DIM, TINY_FACE_WEIGHT_NAME
from unipgen.schema.context import (
    AdapterRef,
    Conditioning,
    PersonalizationPlan,
    SubjectAsset,
    UserContext,
)
from unipgen.schema.generation import GenerationOptions, GenerationRequest


def faces(seed: int, count: int = 2, size: int = TINY_FACE_ID_DIM) -> list[list[float]]:
    """`count` L2-normalised face embeddings of one person, as the dlib face encoder stores them."""
    generator = torch.Generator().manual_seed(seed)
    identity = torch.randn(size, generator=generator)
    shots = [identity + 0.1 * torch.randn(size, generator=generator) for _ in range(count)]
    return [torch.nn.functional.normalize(shot, dim=0).tolist() for shot in shots]


def context(user: str, embeddings: list[list[float]], subjects: tuple[SubjectAsset, ...] = (),
            adapters: tuple[AdapterRef, ...] = ()) -> UserContext:
    return UserContext(tenant="t", user=user, modality="image", instruction="a portrait of me", profile={},
                       conditioning=Conditioning(face_embeddings=embeddings, subjects=list(subjects),
                                                 adapters=list(adapters)), built_at=NOW)


ALICE, BOB = context("alice", faces(1)), context("bob", faces(2))
NOBODY = context("nobody", [])


def request(ctx: UserContext, method: str = "ip_adapter", subject: str | None = None,
            adapters: tuple[str, ...] = (), **options: object) -> GenerationRequest:
    """What the router plans for "a portrait of me" (method ip_adapter, no subject)."""
    plan = PersonalizationPlan(modality="image", method=method, prompt=PROMPT, reasons=["test"], subject=subject,
                               adapters=list(adapters), budget_tokens=77, used_tokens=8)
    return GenerationRequest(context=ctx, plan=plan, options=GenerationOptions(**options))


@pytest.fixture(scope="module")
def backend() -> DiffusersImageBackend:
    torch.set_num_threads(1)
    return DiffusersImageBackend()


@pytest.fixture(scope="module")
def fresh() -> bytes:
    """The plain image for PROMPT, seed 0, from a pipeline that never saw an adapter."""
    torch.set_num_threads(1)
    return one(DiffusersImageBackend(), request(NOBODY, "prompt_only"))


@pytest.fixture(scope="module")
def alice(backend: DiffusersImageBackend) -> bytes:
    return one(backend, request(ALICE))


def test_self_portrait_is_conditioned_on_the_face(backend: DiffusersImageBackend, fresh: bytes, alice: bytes) -> None:
    [[output]] = backend.generate([request(ALICE)], fetch)
    assert output.data == alice != fresh  # same seed, same bytes; the face changes the image
    assert output.meta["method"] == "ip_adapter" and "requested_method" not in output.meta
    assert (output.meta["conditioning"], output.meta["face_embeddings"], output.meta["subject"],
            output.meta["ip_adapter_scale"]) == ("face", 2, None, 0.6)
    assert one(backend, request(ALICE, seed=1)) != alice
    # Without faces the same plan falls back to the prompt, as before.
    [[plain]] = backend.generate([request(NOBODY)], fetch)
    assert plain.data == fresh and (plain.meta["method"], plain.meta["requested_method"]) == ("prompt_only",
                                                                                                "ip_adapter")


def test_two_faces_two_images_and_the_scale_matters(backend: DiffusersImageBackend, fresh: bytes,
                                                    alice: bytes) -> None:
    assert one(backend, request(BOB)) not in (alice, fresh)
    assert one(backend, request(ALICE, ip_adapter_scale=1.2)) != alice
    # The mean of the embeddings is re-normalised: the same face at another length is the same face.
    longer = context("alice2", [[2 * x for x in e] for e in faces(1)])
    assert one(backend, request(longer)) == alice


def same_image(a: bytes, b: bytes) -> bool:
    """The same picture up to one level in a few values: a batch of another size may take
    another CPU kernel path (seen on some machines: at most 1 level in ~0.02% of values)."""
    import io

    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(io.BytesIO(d)), dtype=np.int16) for d in (a, b))
    return x.shape == y.shape and int(np.abs(x - y).max()) <= 1 and float(np.mean(x != y)) < 0.001


def test_batched_with_other_users_gives_the_same_image_as_alone(backend: DiffusersImageBackend, fresh: bytes,
                                                                alice: bytes) -> None:
    bob_alone = backend.generate([request(BOB, seed=3, num_outputs=2)], fetch)[0]
    results = backend.generate([request(BOB, seed=3, num_outputs=2), request(ALICE), request(NOBODY, "prompt_only"),
                                request(ALICE, seed=1)], fetch)
    assert all(same_image(o.data, a.data) for o, a in zip(results[0], bob_alone, strict=True))
    assert same_image(results[1][0].data, alice) and same_image(results[2][0].data, fresh)
    assert same_image(results[3][0].data, one(backend, request(ALICE, seed=1)))
    assert not same_image(results[1][0].data, results[2][0].data)  # the check tells different images apart


def test_the_base_pipeline_is_unchanged_afterwards(backend: DiffusersImageBackend, fresh: bytes,
                                                   alice: bytes) -> None:
    assert one(backend, request(ALICE)) == alice
    unet = backend.pipeline.unet
    assert unet.encoder_hid_proj is None and backend.pipeline.image_encoder is None
    assert not getattr(unet, "peft_config", None)  # FaceID's own LoRA ("faceid_0") was deleted too
    assert one(backend, request(NOBODY, "prompt_only")) == fresh


def test_subject_ip_adapter_and_loras_still_work_around_faces(backend: DiffusersImageBackend, alice: bytes) -> None:
    rex = SubjectAsset(key="rex", name="Rex", class_noun="dog", image_shas=[put(photo(1))])
    style = AdapterRef(key="style", method="lora", blob_sha=put(make_lora(2)))
    ctx = context("carol", faces(3), subjects=(rex,), adapters=(style,))
    subject = one(backend, request(ctx, subject="rex"))
    encoder = backend.personalizer.subject.image_encoder  # the subject IP-Adapter's image encoder, kept across unloads
    face = one(backend, request(ctx))
    assert face != subject and backend.personalizer.subject.image_encoder is encoder
    assert one(backend, request(ctx, subject="rex")) == subject
    # A user LoRA loaded (and switched off for the next request) leaves FaceID's own LoRA alone.
    assert one(backend, request(ctx, "lora", adapters=("style",))) not in (face, subject)
    assert one(backend, request(ctx)) == face
    assert one(backend, request(ALICE)) == alice


def test_without_guidance_there_is_no_negative_embedding(backend: DiffusersImageBackend) -> None:
    plain = one(backend, request(NOBODY, "prompt_only", guidance_scale=1.0))
    assert one(backend, request(ALICE, guidance_scale=1.0)) != plain


def test_a_wrong_embedding_size_is_a_clear_error(backend: DiffusersImageBackend, fresh: bytes) -> None:
    arcface = context("dave", faces(4, size=512))
    with pytest.raises(InvalidInputError, match=r"size 512.*takes 128-d.*ArcFace"):
        backend.generate([request(ALICE), request(arcface)], fetch)
    mixed = context("erin", [*faces(5), *faces(5, count=1, size=512)])
    with pytest.raises(InvalidInputError, match="size 128/512"):
        backend.generate([request(mixed)], fetch)
    assert backend.face_id_dim() == TINY_FACE_ID_DIM
    assert one(backend, request(NOBODY, "prompt_only")) == fresh  # still serving


def test_configured_weights_and_the_fallback_without_them(fresh: bytes, alice: bytes) -> None:
    from unipgen.modalities import load_backend
    from unipgen.schema.profiles import ComponentSpec

    folder = str(tiny_sd_dir())  # the tiny pipeline by path: no built-in adapters
    configured = load_backend(ComponentSpec(type="diffusers-sd", ref=folder, options={
        "face_adapter": f"{tiny_face_adapter_dir()}::{TINY_FACE_WEIGHT_NAME}"}))
    assert one(configured, request(ALICE)) == alice
    [[output]] = DiffusersImageBackend(folder).generate([request(ALICE)], fetch)
    assert (output.meta["method"], output.meta["requested_method"], output.data) == ("prompt_only", "ip_adapter",
                                                                                     fresh)


def test_face_adapter_option_syntax() -> None:
    from unipgen.modalities import load_backend
    from unipgen.schema.profiles import load_profile

    gpu = load_backend(load_profile("gpu").backends["image"])  # parsed, nothing loaded
    assert gpu.face_adapter == "h94/IP-Adapter-FaceID::ip-adapter-faceid_sd15.bin"
    assert gpu.ip_adapter == "h94/IP-Adapter:models:ip-adapter_sd15.safetensors"
    for bad in ("h94/IP-Adapter-FaceID", "h94/IP-Adapter-FaceID::", "h94/IP-Adapter-FaceID::w.bin:image_encoder"):
        with pytest.raises(InvalidInputError, match="face_adapter .*repo:subfolder:weight_name"):
            DiffusersImageBackend(face_adapter=bad)


def test_tiny_face_weights_load_in_plain_diffusers() -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.models.embeddings import IPAdapterFaceIDImageProjection

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir())
    pipe.load_ip_adapter(str(tiny_face_adapter_dir()), subfolder="", weight_name=TINY_FACE_WEIGHT_NAME,
                         image_encoder_folder=None)
    [projection] = pipe.unet.encoder_hid_proj.image_projection_layers
    assert isinstance(projection, IPAdapterFaceIDImageProjection)
    assert projection.ff.net[0].proj.in_features == TINY_FACE_ID_DIM and "faceid_0" in pipe.unet.peft_config
