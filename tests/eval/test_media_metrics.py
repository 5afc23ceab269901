"""Video, audio and 3D metrics against hand-computed cases and brute-force references."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unipgen.errors import InvalidInputError, UnsupportedMediaError
from unipgen.eval import image_metrics as im
from unipgen.eval import media_metrics as mm


@pytest.fixture(scope="module")
def clip():
    return im.resolve_encoder("tiny")


def _frames(count: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def _mp4(frames: list[Image.Image]) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _gif(frames: list[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=125, loop=0)
    return buffer.getvalue()


def _wav(seconds: float, rate: int = 16_000, seed: int = 0) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    wave = np.random.default_rng(seed).standard_normal(int(seconds * rate)).astype(np.float32) * 0.1
    soundfile.write(buffer, wave, rate, format="WAV")
    return buffer.getvalue()


# ---------------------------------------------------------------- video


def test_read_frames_decodes_mp4_and_gif() -> None:
    frames = _frames(6)
    mp4, gif = mm.read_frames(_mp4(frames)), mm.read_frames(_gif(frames))
    assert len(mp4) == len(gif) == 6 and mp4[0].size == (32, 32)
    picked = mm.read_frames(frames, max_frames=3)
    assert [np.asarray(f).tobytes() for f in picked] == [np.asarray(frames[i]).tobytes() for i in (0, 2, 5)]
    with pytest.raises(UnsupportedMediaError):
        mm.read_frames(b"\x00\x00\x00\x18ftypmp42garbage")
    with pytest.raises(InvalidInputError, match="no frames"):
        mm.read_frames([])


def test_video_clip_scores_and_temporal_consistency_by_hand(clip) -> None:
    frames, references = _frames(4, seed=1), _frames(2, seed=2)
    video = _gif(frames)
    decoded = mm.read_frames(video)
    vectors = clip.encode(decoded).astype(np.float64)
    refs = clip.encode(references).astype(np.float64)
    assert mm.video_clip_i(video, references, clip) == pytest.approx(float(np.mean(vectors @ refs.T)), abs=1e-5)
    text = clip.encode_text(["a photo of a dog"])[0]
    assert mm.video_clip_t(video, "a photo of a dog", clip) == pytest.approx(float(np.mean(vectors @ text)), abs=1e-5)
    by_hand = np.mean([vectors[i] @ vectors[i + 1] for i in range(3)])
    assert mm.temporal_consistency(video, clip) == pytest.approx(by_hand, abs=1e-5)
    still = _mp4([frames[0]] * 4)
    assert mm.temporal_consistency(still, clip) == pytest.approx(1.0, abs=1e-5)
    assert mm.temporal_consistency(still, clip) > mm.temporal_consistency(_mp4(frames), clip)
    with pytest.raises(InvalidInputError, match="at least 2 frames"):
        mm.temporal_consistency(frames[:1], clip)


# ---------------------------------------------------------------- audio


def test_frechet_audio_distance_is_the_frechet_formula() -> None:
    assert mm.frechet_audio_distance([[0.0], [2.0]], [[5.0], [9.0]]) == pytest.approx(38.0)
    with pytest.raises(InvalidInputError, match="sizes differ"):
        mm.frechet_audio_distance(np.ones((3, 2)), np.ones((3, 4)))


def test_clap_score_with_the_tiny_clap() -> None:
    scorer = mm.ClapScorer(mm.TINY)
    clips = [_wav(1.0, 24_000, seed=0), _wav(3.0, seed=1)]  # resampled; cropped to the 2 s window
    audio, text = scorer.encode(clips), scorer.encode_text(["a dog barking", "rain on a roof"])
    assert audio.shape == (2, 16) and np.allclose(np.linalg.norm(audio, axis=1), 1)
    expected = float(np.mean((audio * text).sum(axis=1)))
    state = np.random.get_state()[1].copy()
    assert mm.clap_score(clips, ["a dog barking", "rain on a roof"], scorer) == pytest.approx(expected, abs=1e-9)
    assert np.array_equal(np.random.get_state()[1], state)  # the global RNG is left alone
    assert mm.frechet_audio_distance(audio, audio) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InvalidInputError, match="2 clips but 1 prompts"):
        mm.clap_score(clips, ["a dog"], scorer)
    with pytest.raises(UnsupportedMediaError, match="audio #0"):
        scorer.encode([b"not audio"])


@pytest.mark.shared_data
def test_speaker_similarity_separates_speakers_with_resemblyzer(shared_data: Path) -> None:
    data = shared_data / "librispeech-test-other-mini"
    if not data.is_dir():
        pytest.skip(f"LibriSpeech mini set not found at {data}")
    speakers = sorted(p for p in data.iterdir() if p.is_dir())[:2]
    utterances = [sorted(s.glob("*.flac"))[:2] for s in speakers]
    (a1, a2), (b1, _) = [[path.read_bytes() for path in pair] for pair in utterances]
    encoder = im.resolve_encoder("tiny", "voice")
    same = mm.speaker_similarity([a1], [a2], encoder)
    other = mm.speaker_similarity([a1], [b1], encoder)
    vectors = encoder.encode([a1, a2, b1])
    assert same == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5)
    assert same > other


def test_speaker_similarity_needs_recordings_on_both_sides() -> None:
    with pytest.raises(InvalidInputError, match="at least one"):
        mm.speaker_similarity([], [_wav(1.0)], "tiny")


# ---------------------------------------------------------------- 3D


def _cubes():
    import trimesh

    a = trimesh.creation.box(extents=(1, 1, 1))
    b = a.copy()
    b.apply_translation((0.5, 0, 0))
    return a, b


def test_volume_iou_of_offset_unit_cubes_is_one_third() -> None:
    a, b = _cubes()
    assert mm.volume_iou(a, b, resolution=30) == pytest.approx(1 / 3)
    assert mm.volume_iou(a.export(file_type="glb"), b.export(file_type="ply"), resolution=30) == pytest.approx(1 / 3)
    assert mm.volume_iou(a, a, resolution=8) == 1.0
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2)
    box = trimesh.creation.box(extents=(2, 2, 2))
    assert mm.volume_iou(sphere, box, resolution=24) == pytest.approx(sphere.volume / 8, abs=0.02)
    with pytest.raises(UnsupportedMediaError):
        mm.volume_iou(b"glTF garbage", a)


def test_chamfer_distance_by_hand_and_brute_force() -> None:
    # a→b: (0.25 + 1.25) / 2, b→a: 0.25
    assert mm.chamfer_distance([[0, 0, 0], [1, 0, 0]], [[0, 0, 0.5]]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(50, 3)), rng.normal(size=(40, 3))
    squared = ((p[:, None] - q[None]) ** 2).sum(-1)
    assert mm.chamfer_distance(p, q) == pytest.approx(squared.min(1).mean() + squared.min(0).mean())
    a, b = _cubes()
    assert mm.chamfer_distance(a, a, samples=500) == 0.0
    assert mm.chamfer_distance(a, b, samples=500) > 0.05
    with pytest.raises(InvalidInputError, match=r"\(n, 3\)"):
        mm.chamfer_distance(np.zeros((0, 3)), q)


def test_normal_consistency_by_hand() -> None:
    s = 1 / np.sqrt(2)
    a = (np.array([[0, 0, 0], [1, 0, 0]]), np.array([[0, 0, 1], [1, 0, 0]]))
    b = (np.array([[0, 0, 0.1]]), np.array([[0, s, s]]))
    # a→b: both points' nearest is b's: |cos| = s and 0; b→a: nearest a[0], |cos| = s
    assert mm.normal_consistency(a, b) == pytest.approx(((s + 0) / 2 + s) / 2)
    assert mm.normal_consistency(a, (a[0], -a[1])) == pytest.approx(1.0)  # orientation is ignored
    cube, shifted = _cubes()
    assert mm.normal_consistency(cube, cube, samples=300) == pytest.approx(1.0)
    assert mm.normal_consistency(cube, shifted, samples=300) < 0.9
    with pytest.raises(InvalidInputError, match="normals"):
        mm.normal_consistency(np.zeros((2, 3)), b)
