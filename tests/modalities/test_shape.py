"""The Shap-E 3D backend on the tiny random pipelines: meshes (GLB, PLY) with previews, determinism,
image-to-3D from a subject's photo, and the inputs it refuses."""

from __future__ import annotations

import functools
import io
from datetime import UTC, datetime

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
trimesh = pytest.importorskip("trimesh")

from PIL import Image

from tests.helpers import fetch, put
from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.modalities.shape import ShapEBackend
from unipgen.modalities.shape_tiny import marching_cubes_table
from unipgen.schema.context import Conditioning, PersonalizationPlan, SubjectAsset, UserContext
from unipgen.schema.generation import GeneratedOutput, GenerationOptions, GenerationRequest

NOW = datetime(2024, 1, 1, tzinfo=UTC)
PROMPT = "a red toy robot"
FRAME = 32  # preview size of the test backends: small, cheap




def photo(seed: int, mode: str = "RGB") -> bytes:
    """A random 40x40 PNG standing in for a subject's photo."""
    channels = len(mode)
    pixels = torch.randint(0, 256, (40, 40, channels), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def context() -> UserContext:
    """Subjects: rex (two photos), rex-other (another first photo), ghost (RGBA), empty (none), broken."""
    subjects = [
        SubjectAsset(key="rex", name="Rex", class_noun="toy", image_shas=[put(photo(1)), put(photo(2))]),
        SubjectAsset(key="rex-other", name="Rex", class_noun="toy", image_shas=[put(photo(3)), put(photo(2))]),
        SubjectAsset(key="ghost", name="Ghost", class_noun="toy", image_shas=[put(photo(4, "RGBA"))]),
        SubjectAsset(key="empty", name="Empty", class_noun="toy", image_shas=[]),
        SubjectAsset(key="broken", name="Broken", class_noun="toy", image_shas=[put(b"not an image")]),
    ]
    return UserContext(tenant="t", user="u", modality="3d", instruction=PROMPT, profile={},
                       conditioning=Conditioning(subjects=subjects), built_at=NOW)


def request(method: str = "prompt_only", prompt: str = PROMPT, subject: str | None = None,
            **options: object) -> GenerationRequest:
    plan = PersonalizationPlan(modality="3d", method=method, prompt=prompt, reasons=["test"], subject=subject,
                               budget_tokens=77, used_tokens=4)
    return GenerationRequest(context=context(), plan=plan, options=GenerationOptions(**options))


@pytest.fixture(scope="module")
def backend() -> ShapEBackend:
    torch.set_num_threads(1)
    return ShapEBackend(frame_size=FRAME)


@pytest.fixture(scope="module")
def ply_backend(backend: ShapEBackend) -> ShapEBackend:
    ply = ShapEBackend(frame_size=FRAME, mesh_format="ply")
    ply._text = backend.pipeline  # the same tiny weights: skip a second load
    return ply


def run(backend: ShapEBackend, req: GenerationRequest) -> list[GeneratedOutput]:
    [outputs] = backend.generate([req], fetch)
    return outputs


def load_mesh(output: GeneratedOutput, file_type: str):
    return trimesh.load(io.BytesIO(output.data), file_type=file_type, force="mesh")


def test_registry_builds_the_backend_and_checks_its_config() -> None:
    from unipgen.modalities import load_backend
    from unipgen.modalities.base import Backend
    from unipgen.schema.profiles import ComponentSpec

    backend = load_backend(ComponentSpec(type="diffusers-shap-e", options={"steps": 3, "mesh_format": "ply"}))
    assert isinstance(backend, ShapEBackend) and isinstance(backend, Backend)
    assert (backend.modality, backend.ref, backend.image_ref, backend.steps, backend.grid_size) == (
        "3d", "tiny-random", "tiny-random", 3, 32)
    real = ShapEBackend(ref="openai/shap-e")  # nothing loads until setup
    assert (real.image_ref, real.steps, real.grid_size) == ("openai/shap-e-img2img", 64, 128)
    for bad in ({"mesh_format": "obj"}, {"grid_size": 4}, {"frame_size": 8}, {"steps": 1000}):
        with pytest.raises(InvalidInputError):
            ShapEBackend(**bad)


def test_marching_cubes_table_closes_a_sphere_with_outward_faces() -> None:
    from diffusers.pipelines.shap_e.renderer import MeshDecoder

    decoder = MeshDecoder()
    decoder.cases, decoder.masks = marching_cubes_table()
    axis = torch.linspace(-1, 1, 24)
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    out = decoder(0.6 - (x**2 + y**2 + z**2).sqrt(), torch.tensor([-1.0] * 3), torch.tensor([2.0] * 3))
    sphere = trimesh.Trimesh(out.verts.numpy(), out.faces.numpy())
    assert sphere.is_watertight
    assert sphere.volume == pytest.approx(4 / 3 * torch.pi * 0.6**3, rel=0.05)  # positive: normals point out


def test_glb_meshes_alternate_with_their_previews(backend: ShapEBackend) -> None:
    outputs = run(backend, request(num_outputs=2, seed=5))
    assert [o.media_type for o in outputs] == ["model/gltf-binary", "image/png"] * 2
    for position in (0, 2):
        mesh_out, preview = outputs[position], outputs[position + 1]
        assert preview.meta == {"role": "preview", "of": position, "width": FRAME, "height": FRAME}
        assert Image.open(io.BytesIO(preview.data)).size == (FRAME, FRAME)
        assert mesh_out.data[:4] == b"glTF"
        mesh = load_mesh(mesh_out, "glb")
        assert (len(mesh.vertices), len(mesh.faces)) == (mesh_out.meta["vertices"], mesh_out.meta["faces"]) > (0, 0)
        low, high = mesh.bounds
        assert low[1] == pytest.approx(0.0, abs=1e-6)  # resting on y = 0 (y-up)
        assert max(high - low) == pytest.approx(1.0, abs=1e-6)  # longest side 1
        assert (low[0] + high[0], low[2] + high[2]) == pytest.approx((0.0, 0.0), abs=1e-6)
    assert outputs[0].meta == {"model": "tiny-random", "method": "prompt_only", "prompt": PROMPT, "seed": 5,
                               "index": 0, "vertices": outputs[0].meta["vertices"],
                               "faces": outputs[0].meta["faces"], "format": "glb", "steps": 2,
                               "guidance_scale": 15.0, "grid_size": 32, "up_axis": "y"}
    assert outputs[0].data != outputs[2].data  # two objects, not one twice


def test_ply_holds_the_same_geometry(backend: ShapEBackend, ply_backend: ShapEBackend) -> None:
    glb, ply = run(backend, request(seed=5))[0], run(ply_backend, request(seed=5))[0]
    assert ply.media_type == "model/ply" and ply.data.startswith(b"ply") and ply.meta["format"] == "ply"
    a, b = load_mesh(glb, "glb"), load_mesh(ply, "ply")
    assert len(b.faces) == ply.meta["faces"] == glb.meta["faces"]
    assert abs(a.vertices - b.vertices).max() < 1e-5


def test_same_seed_same_bytes_other_seed_or_prompt_other_mesh(backend: ShapEBackend) -> None:
    first = run(backend, request(seed=5))
    assert [o.data for o in run(backend, request(seed=5))] == [o.data for o in first]
    assert run(backend, request(seed=6))[0].data != first[0].data
    assert run(backend, request(prompt="a blue vase", seed=5))[0].data != first[0].data


def test_options_set_steps_guidance_and_preview_size(backend: ShapEBackend) -> None:
    mesh, preview = run(backend, request(seed=5, steps=3, guidance_scale=1.0, width=40, height=24))
    assert (mesh.meta["steps"], mesh.meta["guidance_scale"]) == (3, 1.0)
    assert mesh.data != run(backend, request(seed=5))[0].data
    assert Image.open(io.BytesIO(preview.data)).size == (40, 24)
    with pytest.raises(InvalidInputError, match="preview size"):
        run(backend, request(width=2048))
    with pytest.raises(InvalidInputError, match="limit"):
        run(backend, request(steps=300))


def test_image_to_3d_follows_the_subjects_first_photo(backend: ShapEBackend) -> None:
    mesh, preview = run(backend, request("image_to_3d", subject="rex", seed=5))
    assert mesh.meta["method"] == "image_to_3d" and mesh.meta["subject"] == "rex"
    assert mesh.meta["reference_image"] == context().conditioning.subjects[0].image_shas[0]
    assert mesh.meta["guidance_scale"] == 3.0  # the image default
    assert load_mesh(mesh, "glb").faces.shape[0] == mesh.meta["faces"] > 0
    assert preview.meta["of"] == 0
    assert run(backend, request("image_to_3d", subject="rex", seed=5))[0].data == mesh.data
    assert mesh.data != run(backend, request(seed=5))[0].data  # not the text-to-3D object
    assert mesh.data != run(backend, request("image_to_3d", subject="rex-other", seed=5))[0].data
    assert run(backend, request("image_to_3d", subject="ghost"))[0].meta["faces"] > 0  # RGBA on white


@pytest.mark.parametrize(("method", "subject", "error", "message"), [
    ("lora", None, InvalidInputError, "cannot apply 'lora'"),
    ("image_to_3d", None, InvalidInputError, "needs plan.subject"),
    ("image_to_3d", "nobody", InvalidInputError, "not in the request's context"),
    ("image_to_3d", "empty", InvalidInputError, "no reference images"),
    ("image_to_3d", "broken", UnsupportedMediaError, "not an image"),
])
def test_bad_inputs_are_refused_before_any_work(backend: ShapEBackend, method: str, subject: str | None,
                                                error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        backend.generate([request(), request(method, subject=subject)], fetch)


def test_a_latent_with_no_surface_is_a_clear_error() -> None:
    from unipgen.errors import UnipgenError

    empty = ShapEBackend(frame_size=FRAME)
    with torch.no_grad():  # an SDF negative everywhere: nothing is inside, marching cubes finds no faces
        empty.pipeline.shap_e_renderer.mlp.mlp[-1].bias[0] = -100.0
    with pytest.raises(UnipgenError, match="no surface"):
        run(empty, request())
