"""Video, audio and 3D metrics.

Video: per-frame CLIP-I and CLIP-T (means over frames) and temporal consistency, on MP4 (PyAV)
or GIF (PIL) bytes or a list of frames. Audio: Fréchet audio distance over embedding matrices,
speaker similarity (Resemblyzer, the profile's voice encoder) and the CLAP score. 3D: Chamfer
distance, volume IoU and normal consistency between meshes (trimesh; GLB, PLY, OBJ, OFF, STL).
Encoders are configured as in `unipgen.eval.image_metrics`; nothing downloads on its own.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unipgen.core.encoders.clap import CLAP_REF, ClapEncoder
from unipgen.core.encoders.image import evenly_spaced, video_frames
from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.eval.image_metrics import (
    clip_i,
    clip_t,
    embed_images,
    frechet_distance,
    resolve_encoder,
    to_pil,
    unit_rows,
)
from unipgen.tiny import TINY_RANDOM

if TYPE_CHECKING:
    import trimesh

#: The tiny random CLAP and CLIP refs (tests only). `CLAP_REF`: the LAION CLAP of the CLAP score.
TINY = TINY_RANDOM

# ---------------------------------------------------------------- video


def read_frames(video: Any, max_frames: int | None = None) -> list[Any]:
    """RGB PIL frames of a video: MP4/WebM/... bytes or path (PyAV), GIF (PIL), or a list of images.

    `max_frames` keeps that many frames evenly spaced over the video (first and last included).
    """
    if isinstance(video, list | tuple):
        return evenly_spaced([to_pil(frame, number) for number, frame in enumerate(video)], max_frames)
    return video_frames(Path(video).read_bytes() if isinstance(video, str | Path) else bytes(video), max_frames)


def video_clip_i(video: Any, references: Sequence[Any], encoder: Any = None, max_frames: int | None = None) -> float:
    """Per-frame CLIP-I averaged over frames: mean cosine over all (frame, reference) pairs, in [-1, 1]."""
    return clip_i(read_frames(video, max_frames), references, encoder)


def video_clip_t(video: Any, prompt: str, encoder: Any = None, max_frames: int | None = None) -> float:
    """Per-frame CLIP-T averaged over frames: mean cosine of each frame and the prompt, in [-1, 1]."""
    return clip_t(read_frames(video, max_frames), prompt, encoder)


def temporal_consistency(video: Any, encoder: Any = None, max_frames: int | None = None) -> float:
    """Mean cosine of the embeddings of consecutive frames, in [-1, 1].

    1.0 = every frame embeds the same (a still video); lower = content changes between frames
    (motion, flicker, identity drift). Needs at least 2 frames.
    """
    frames = read_frames(video, max_frames)
    if len(frames) < 2:
        raise InvalidInputError("temporal consistency needs at least 2 frames")
    from unipgen.modalities.video import (
        temporal_consistency as consecutive_cosine,  # the backend's own score
    )

    return consecutive_cosine(embed_images(frames, encoder))


# ---------------------------------------------------------------- audio


def frechet_audio_distance(generated_embeddings: Any, reference_embeddings: Any) -> float:
    """FAD (Kilgour et al. 2019): the Fréchet distance of two embedding matrices (rows = clips or frames).

    ≥ 0, 0 = same Gaussian statistics. Values depend entirely on the embedding model (VGGish,
    CLAP, ...): compare only numbers computed with the same model and similar sample counts.
    """
    return frechet_distance(generated_embeddings, reference_embeddings)


def speaker_similarity(generated: Sequence[bytes], references: Sequence[bytes], encoder: Any = None) -> float:
    """Mean cosine of speaker embeddings over all (generated, reference) recording pairs, in [-1, 1].

    `encoder`: the profile's voice encoder (Resemblyzer; a profile name or None for cpu) or any
    encoder object. With Resemblyzer on LibriSpeech, one speaker's utterances average about
    0.87 and two speakers' about 0.52. Each recording needs ≥ 1 s of speech.
    """
    if not generated or not references:
        raise InvalidInputError("speaker similarity needs at least one generated and one reference recording")
    model = resolve_encoder(encoder, "voice")
    a, b = np.asarray(model.encode(list(generated)), np.float64), np.asarray(model.encode(list(references)), np.float64)
    return float(np.clip((unit_rows(a) @ unit_rows(b).T).mean(), -1.0, 1.0))


#: The CLAP of the CLAP score is the profile's ``clap`` encoder (`unipgen.core.encoders.clap`).
ClapScorer = ClapEncoder


@functools.lru_cache(maxsize=4)
def _clap(ref: str) -> ClapScorer:
    return ClapScorer(ref)


def clap_score(audio: Sequence[bytes], prompts: str | Sequence[str], scorer: Any = CLAP_REF) -> float:
    """CLAP score: mean cosine of each clip's CLAP audio embedding and its prompt's, in [-1, 1].

    Higher = the audio fits its description better. `prompts`: one for all clips or one per clip;
    `scorer`: a ClapScorer or a ref for one.
    """
    prompts = [prompts] * len(audio) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(audio):
        raise InvalidInputError(f"{len(audio)} clips but {len(prompts)} prompts")
    model = _clap(scorer) if isinstance(scorer, str) else scorer
    return float(np.clip((model.encode(audio) * model.encode_text(prompts)).sum(axis=1).mean(), -1, 1))


# ---------------------------------------------------------------- 3D

_MAGIC = {b"glTF": "glb", b"ply\n": "ply", b"ply\r": "ply", b"OFF\n": "off", b"OFF\r": "off", b"soli": "stl"}


def load_mesh(mesh: Any, file_type: str | None = None) -> trimesh.Trimesh:
    """A trimesh.Trimesh from a Trimesh, mesh file bytes (GLB, PLY, OFF, STL; else OBJ) or a path."""
    import trimesh

    loaded: trimesh.Geometry
    if isinstance(mesh, trimesh.Trimesh):
        loaded = mesh
    else:
        try:
            if isinstance(mesh, str | Path):
                loaded = trimesh.load(str(mesh), force="mesh", file_type=file_type)
            else:
                data = bytes(mesh)
                kind = file_type or _MAGIC.get(data[:4], "obj")
                loaded = trimesh.load(io.BytesIO(data), file_type=kind, force="mesh")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, OSError, NotImplementedError,
                struct.error) as exc:  # what trimesh's readers raise on bad bytes
            raise UnsupportedMediaError(f"not a readable mesh: {type(exc).__name__}: {exc}") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise InvalidInputError("the mesh has no faces")
    return loaded


def _points_and_normals(item: Any, samples: int, seed: int, need_normals: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(points, normals) from a mesh (surface samples), an (N, 3) array, or a (points, normals) pair."""
    if isinstance(item, tuple) and len(item) == 2:
        points, normals = _xyz(item[0], "points"), _xyz(item[1], "normals")
        if len(points) != len(normals):
            raise InvalidInputError(f"{len(points)} points but {len(normals)} normals")
        return points, normals
    if isinstance(item, np.ndarray | list):
        if need_normals:
            raise InvalidInputError("normal consistency needs meshes or (points, normals) pairs")
        return _xyz(item, "points"), None
    import trimesh

    mesh = load_mesh(item)
    points, faces = trimesh.sample.sample_surface(mesh, samples, seed=seed)
    return np.asarray(points, np.float64), np.asarray(mesh.face_normals[faces], np.float64)


def _xyz(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3 or len(array) == 0 or not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name}: expected a non-empty finite (n, 3) array, got shape {array.shape}")
    return array


def chamfer_distance(a: Any, b: Any, samples: int = 10_000, seed: int = 0) -> float:
    """Symmetric Chamfer distance: mean squared distance from each point to the nearest point of
    the other set, summed over both directions (as PyTorch3D). ≥ 0, 0 = same points.

    `a`, `b`: (n, 3) point arrays, or meshes (`samples` surface points each, seeded). In squared
    units of the inputs: normalise scale first to compare shapes of different sizes.
    """
    from scipy.spatial import cKDTree

    p, _ = _points_and_normals(a, samples, seed, False)
    q, _ = _points_and_normals(b, samples, seed, False)
    return float((cKDTree(q).query(p)[0] ** 2).mean() + (cKDTree(p).query(q)[0] ** 2).mean())


def normal_consistency(a: Any, b: Any, samples: int = 10_000, seed: int = 0) -> float:
    """Mean |cos| between each point's normal and its nearest neighbour's in the other set, both
    directions averaged (Occupancy Networks). In [0, 1], 1 = surfaces everywhere parallel.

    `a`, `b`: meshes (`samples` surface points each, with face normals) or (points, normals) pairs.
    Orientation is ignored (|cos|), so inverted faces do not count against a shape.
    """
    from scipy.spatial import cKDTree

    p, n_p = _points_and_normals(a, samples, seed, True)
    q, n_q = _points_and_normals(b, samples, seed, True)
    assert n_p is not None and n_q is not None  # asked for (need_normals)
    n_p, n_q = unit_rows(n_p), unit_rows(n_q)

    def one_way(src: np.ndarray, src_n: np.ndarray, dst: np.ndarray, dst_n: np.ndarray) -> float:
        nearest = cKDTree(dst).query(src)[1]
        return float(np.abs((src_n * dst_n[nearest]).sum(axis=1)).mean())

    return (one_way(p, n_p, q, n_q) + one_way(q, n_q, p, n_p)) / 2


def volume_iou(a: Any, b: Any, resolution: int = 32) -> float:
    """Volume intersection over union of two closed meshes, in [0, 1], 1 = same solid.

    Occupancy is tested at the centres of a resolution³ grid over both meshes' joint bounding
    box, by the parity of surface crossings along a vertical ray (no ray-casting library
    needed). Meshes must be closed (watertight); holes make the occupancy of their columns
    wrong. Cost ~ resolution² × faces × resolution: 32 and 10k faces take about a second.
    """
    if resolution < 2:
        raise InvalidInputError("resolution must be >= 2")
    mesh_a, mesh_b = load_mesh(a), load_mesh(b)
    low = np.minimum(mesh_a.bounds[0], mesh_b.bounds[0])
    high = np.maximum(mesh_a.bounds[1], mesh_b.bounds[1])
    axes = [low[i] + (np.arange(resolution) + 0.5) * (high[i] - low[i]) / resolution for i in range(3)]
    inside_a, inside_b = _inside(mesh_a, axes), _inside(mesh_b, axes)
    union = np.count_nonzero(inside_a | inside_b)
    return float(np.count_nonzero(inside_a & inside_b) / union) if union else 0.0


def _inside(mesh: Any, axes: list[np.ndarray]) -> np.ndarray:
    """(nx, ny, nz) occupancy of the grid `axes`: an odd number of surface crossings above a point."""
    triangles = np.asarray(mesh.triangles, np.float64)
    xs, ys, zs = axes
    # Nudge the rays off the grid so that they do not run exactly through edges or vertices.
    extent = max(float(np.ptp(mesh.bounds[:, 0])), float(np.ptp(mesh.bounds[:, 1])), 1e-12)
    columns = np.stack(np.meshgrid(xs + 1.234567e-7 * extent, ys + 2.718281e-7 * extent, indexing="ij"), -1)
    columns = columns.reshape(-1, 2)
    a, e1, e2 = triangles[:, 0], triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    denominator = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    flat = np.abs(denominator) < 1e-15  # triangles seen edge-on from above: no crossing
    denominator = np.where(flat, 1.0, denominator)
    parity = np.zeros((len(columns), len(zs)), dtype=bool)
    chunk = max(1, 4_000_000 // (len(triangles) * len(zs)))
    for start in range(0, len(columns), chunk):
        d = columns[start:start + chunk, None, :] - a[None, :, :2]  # (c, f, 2)
        u = (d[..., 0] * e2[:, 1] - e2[:, 0] * d[..., 1]) / denominator
        v = (e1[:, 0] * d[..., 1] - d[..., 0] * e1[:, 1]) / denominator
        hit = (u >= 0) & (v >= 0) & (u + v <= 1) & ~flat
        z = a[:, 2] + u * e1[:, 2] + v * e2[:, 2]  # (c, f) height of each crossing
        above = hit[..., None] & (z[..., None] > zs[None, None, :])
        parity[start:start + chunk] = above.sum(axis=1) % 2 == 1
    return parity.reshape(len(xs), len(ys), len(zs))


__all__ = ["CLAP_REF", "ClapScorer", "chamfer_distance", "clap_score", "frechet_audio_distance", "load_mesh",
           "normal_consistency", "read_frames", "speaker_similarity", "temporal_consistency", "video_clip_i",
           "video_clip_t", "volume_iou"]
