"""The AnimateDiff video backend on the tiny random pipeline: MP4/GIF output that decodes, bytes
the same per seed, personalization (IP-Adapter, LoRA, textual inversion) applied and undone,
the temporal-consistency metric, and clear errors for bad inputs."""

from __future__ import annotations

import functools
import io

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
av = pytest.importorskip("av")

from tests.helpers import fetch, put
from tests.modalities.test_image import NOW, PROMPT, check_textual_inversion_is_undone, make_embedding, make_lora, photo
from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.modalities.video import (
    AnimateDiffVideoBackend,
    FrameEncoder,
    encode_mp4,
    temporal_consistency,
)
from unipgen.schema.context import (
    AdapterRef,
    Conditioning,
    PersonalizationPlan,
    SubjectAsset,
    UserContext,
)
from unipgen.schema.generation import GenerationOptions, GenerationRequest

SIZE = 32  # frames of 32x32: the tiny pipeline is fastest there


@functools.cache
def context() -> UserContext:
    """A user with a subject (two photos, a LoRA, a token), a subject with no photos, one with a broken photo."""
    rex = SubjectAsset(key="rex", name="Rex", class_noun="dog", image_shas=[put(photo(1)), put(photo(2))],
                       adapters=[AdapterRef(key="rex-lora", method="lora", blob_sha=put(make_lora(1))),
                                 AdapterRef(key="rex-ti", method="textual_inversion",
                                            blob_sha=put(make_embedding("<rex>", 3)), meta={"token": "<rex>"})])
    empty = SubjectAsset(key="ghost", name="Ghost", class_noun="cat", image_shas=[])
    broken = SubjectAsset(key="blob", name="Blob", class_noun="toy", image_shas=[put(b"not an image at all")])
    return UserContext(tenant="t", user="u", modality="video", instruction=PROMPT, profile={},
                       conditioning=Conditioning(subjects=[rex, empty, broken], face_embeddings=[[0.1] * 128]),
                       built_at=NOW)


def request(method: str = "prompt_only", prompt: str = PROMPT, adapters: tuple[str, ...] = (),
            subject: str | None = None, **options: object) -> GenerationRequest:
    plan = PersonalizationPlan(modality="video", method=method, prompt=prompt, reasons=["test"], subject=subject,
                               adapters=list(adapters), budget_tokens=77, used_tokens=8)
    return GenerationRequest(context=context(), plan=plan, options=GenerationOptions(**options))


def one(backend: AnimateDiffVideoBackend, req: GenerationRequest) -> bytes:
    [[output]] = backend.generate([req], fetch)
    return output.data


def decode(data: bytes) -> tuple[list, object]:
    """The RGB frames of an MP4 and its video stream."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream


@pytest.fixture(scope="module")
def backend() -> AnimateDiffVideoBackend:
    torch.set_num_threads(1)
    return AnimateDiffVideoBackend(width=SIZE, height=SIZE)


@pytest.fixture(scope="module")
def fresh() -> bytes:
    """The plain video for PROMPT, seed 0, from a pipeline that never saw an adapter."""
    torch.set_num_threads(1)
    return one(AnimateDiffVideoBackend(width=SIZE, height=SIZE), request())


def test_registry_builds_the_backend_from_a_profile_entry() -> None:
    from unipgen.modalities import load_backend
    from unipgen.modalities.base import Backend
    from unipgen.schema.profiles import ComponentSpec

    built = load_backend(ComponentSpec(type="diffusers-animatediff", options={"fps": 12, "num_frames": 4}))
    assert isinstance(built, AnimateDiffVideoBackend) and isinstance(built, Backend)
    assert (built.ref, built.fps, built.num_frames, built.modality) == ("tiny-random", 12, 4, "video")


def test_mp4_decodes_with_its_frames_rate_size_and_meta(backend: AnimateDiffVideoBackend, fresh: bytes) -> None:
    [[output]] = backend.generate([request()], fetch)
    assert output.data == fresh and output.media_type == "video/mp4"
    frames, stream = decode(output.data)
    assert len(frames) == 8 and frames[0].shape == (SIZE, SIZE, 3)
    assert (stream.codec_context.name, stream.average_rate) == ("h264", 8)
    meta = output.meta
    assert {key: meta[key] for key in ("model", "method", "prompt", "seed", "fps", "num_frames", "seconds", "width",
                                       "height", "format")} == {
        "model": "tiny-random", "method": "prompt_only", "prompt": PROMPT, "seed": 0, "fps": 8, "num_frames": 8,
        "seconds": 1.0, "width": SIZE, "height": SIZE, "format": "mp4"}
    assert isinstance(meta["temporal_consistency"], float) and -1.0 <= meta["temporal_consistency"] <= 1.0
    assert meta["score_kinds"] == {"temporal_consistency": "mechanical check"}  # the tiny CLIP's: not a quality figure
    assert one(backend, request(seed=1)) != fresh


def test_outputs_do_not_depend_on_the_batch(backend: AnimateDiffVideoBackend, fresh: bytes) -> None:
    results = backend.generate([request(prompt="a red cube", num_outputs=2), request()], fetch)
    assert [len(outputs) for outputs in results] == [2, 1]
    assert results[0][0].data != results[0][1].data  # output 1 has its own seed
    assert [o.meta["output_index"] for o in results[0]] == [0, 1]
    assert results[1][0].data == fresh


def test_gif_option_and_frame_rate() -> None:
    from PIL import Image

    gif = AnimateDiffVideoBackend(width=SIZE, height=SIZE, num_frames=4, fps=10, video_format="gif", frame_encoder=None)
    [[output]] = gif.generate([request()], fetch)
    assert output.media_type == "image/gif" and output.data.startswith(b"GIF8")
    image = Image.open(io.BytesIO(output.data))
    assert (image.n_frames, image.size, image.info["duration"], image.info["loop"]) == (4, (SIZE, SIZE), 100, 0)
    assert (output.meta["fps"], output.meta["seconds"], output.meta["temporal_consistency"]) == (10, 0.4, None)
    assert "score_kinds" not in output.meta  # no score, no kind
    assert gif.generate([request()], fetch)[0][0].data == output.data


def test_ip_adapter_conditions_on_the_subject_and_is_undone(backend: AnimateDiffVideoBackend, fresh: bytes) -> None:
    [[output]] = backend.generate([request("ip_adapter", subject="rex")], fetch)
    assert output.data != fresh
    meta = output.meta
    assert (meta["method"], meta["subject"], meta["ip_adapter_scale"], meta["conditioning"]) == (
        "ip_adapter", "rex", 0.6, "subject")
    assert one(backend, request("ip_adapter", subject="rex")) == output.data  # reloads the same way
    assert backend.pipeline.image_encoder is None  # unloaded after use
    assert one(backend, request()) == fresh


def test_faceid_conditions_on_the_face_on_image_layers_and_is_undone(
        backend: AnimateDiffVideoBackend, fresh: bytes) -> None:
    [[output]] = backend.generate([request("ip_adapter")], fetch)  # the router's "of me" plan: no subject
    assert (output.meta["method"], output.meta["conditioning"]) == ("ip_adapter", "face")
    assert output.data != fresh
    # FaceID's LoRA went onto the image layers it was made for, none onto motion modules.
    backend.personalizer.face.load(0.6, ())
    try:
        lora_layers = [name for name, _ in backend.pipeline.unet.named_modules() if name.endswith("lora_A.faceid_0")]
    finally:
        backend.personalizer.face.unload()
    assert len(lora_layers) == 4 * 8  # q, k, v, out of the tiny UNet's 8 attention layers
    assert not [name for name in lora_layers if "motion_modules" in name]
    assert one(backend, request()) == fresh


def test_a_face_plan_without_face_weights_falls_back_to_the_prompt(fresh: bytes) -> None:
    plain = AnimateDiffVideoBackend(width=SIZE, height=SIZE)
    plain.setup()
    plain.personalizer.face.tiny = False  # a base model with no FaceID weights configured
    [[output]] = plain.generate([request("ip_adapter")], fetch)
    assert (output.meta["method"], output.meta["requested_method"]) == ("prompt_only", "ip_adapter")
    assert output.data == fresh


def test_lora_changes_the_video_and_is_undone(backend: AnimateDiffVideoBackend, fresh: bytes) -> None:
    lora = one(backend, request("lora", adapters=("rex-lora",), subject="rex"))
    assert lora != fresh
    assert one(backend, request()) == fresh
    assert one(backend, request("lora", adapters=("rex-lora",), subject="rex")) == lora


def test_textual_inversion_token_is_added_then_removed(backend: AnimateDiffVideoBackend) -> None:
    check_textual_inversion_is_undone(backend, request)


def test_temporal_consistency_metric() -> None:
    assert temporal_consistency(torch.ones(5, 4)) == 1.0
    assert temporal_consistency(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])) == 0.0
    assert temporal_consistency(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == -1.0
    assert temporal_consistency(torch.ones(1, 4)) == 1.0
    with pytest.raises(InvalidInputError, match="frames, dim"):
        temporal_consistency(torch.ones(4))
    # On real frames through the tiny CLIP: a still video scores 1, noise frames less.
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    noise = [Image.fromarray(torch.randint(0, 256, (SIZE, SIZE, 3), generator=generator, dtype=torch.uint8).numpy())
             for _ in range(6)]
    encoder = FrameEncoder()
    still = encoder.consistency([noise[0]] * 6)
    moving = encoder.consistency(noise)
    assert still == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= moving < still - 0.01


def test_mp4_encoding_is_reproducible_and_faithful() -> None:
    from PIL import Image

    generator = torch.Generator().manual_seed(1)
    frames = [Image.fromarray(torch.randint(0, 256, (16, 24, 3), generator=generator, dtype=torch.uint8).numpy())
              for _ in range(3)] + [Image.new("RGB", (24, 16), (200, 40, 90))]
    data = encode_mp4(frames, 8)
    assert encode_mp4(frames, 8) == data
    decoded, _ = decode(data)
    assert len(decoded) == 4 and decoded[0].shape == (16, 24, 3)
    assert abs(decoded[3].astype(int) - [200, 40, 90]).max() <= 6  # a flat colour survives YUV 4:2:0 + H.264
    with pytest.raises(InvalidInputError, match="even"):
        encode_mp4([Image.new("RGB", (15, 16))], 8)


def test_bad_requests_are_clear_errors(backend: AnimateDiffVideoBackend, fresh: bytes) -> None:
    with pytest.raises(InvalidInputError, match="speaker_embedding"):
        backend.generate([request("speaker_embedding")], fetch)
    with pytest.raises(InvalidInputError, match="'ghost' has no reference images"):
        backend.generate([request("ip_adapter", subject="ghost")], fetch)
    with pytest.raises(InvalidInputError, match="'nobody' is not in the request"):
        backend.generate([request("ip_adapter", subject="nobody")], fetch)
    with pytest.raises(UnsupportedMediaError, match="not an image"):
        backend.generate([request("ip_adapter", subject="blob")], fetch)
    with pytest.raises(NotFoundError, match="nope"):
        backend.generate([request("lora", adapters=("nope",))], fetch)
    assert one(backend, request()) == fresh  # still serving, nothing left loaded


@pytest.mark.parametrize(("options", "message"), [
    ({"num_frames": 1}, "num_frames 1"), ({"num_frames": 1000}, "num_frames 1000"), ({"fps": 0}, "fps 0"),
    ({"fps": 500}, "fps 500"), ({"fps": "8"}, "fps '8'"), ({"num_frames": True}, "num_frames True"),
    ({"video_format": "avi"}, "video_format 'avi'"),
    ({"ref": "runwayml/stable-diffusion-v1-5"}, "motion_adapter"), ({"ip_adapter": "h94"}, "repo:subfolder")])
def test_bad_profile_options_fail_when_built(options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        AnimateDiffVideoBackend(**options)


def test_more_frames_than_the_motion_adapter_takes() -> None:
    with pytest.raises(InvalidInputError, match="num_frames 40 is more than motion adapter"):
        AnimateDiffVideoBackend(num_frames=40, frame_encoder=None).setup()
