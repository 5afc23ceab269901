"""`unipgen bench identity`: do the face and voice encoders tell people apart?

Each figure sits beside an untrained baseline computed in the same process on the same files:

- faces (`bench_faces`, one folder per person): leave-one-out nearest-neighbour
  re-identification with dlib descriptors (L2), against the same with raw downscaled pixels;
- voice (`bench_voice`, one folder per speaker): mean cosine of same- vs different-speaker
  utterance pairs with Resemblyzer, against the same on mean-MFCC vectors.

Besides the mean-similarity margin each side reports two scale-free figures, because a margin
depends on how a space spreads its cosines and cannot be compared across spaces: `top1` (the
nearest other item is the same identity) and `pair_auc` (the chance that a random same-identity
pair is closer than a random different-identity pair; 0.5 is chance).

    python benchmarks/identity_bench.py                     # ../shared/data (UNIPGEN_SHARED_DATA)
    python benchmarks/identity_bench.py FACES_DIR VOICE_DIR
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on 2 shared cores can be 10x slower

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.bench import shared_data_dir
from unipgen.errors import InvalidInputError

IMAGE_SUFFIXES = {".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".webp"}
AUDIO_SUFFIXES = {".flac", ".wav", ".ogg"}
#: The pixel baseline's image size: ORL's 92x112 shrunk 4x (a classic eigenfaces resolution).
PIXEL_SIZE = (23, 28)


def bench_faces(data_dir: Path) -> dict[str, Any]:
    """Re-identification of each photo by its nearest other photo (dlib vs raw pixels).

    `face_top1` counts photos where no face was found as misses, so it is comparable with
    `face_top1_pixels`, which embeds every photo; `face_no_face` says how many there were.
    """
    from unipgen.core.encoders.base import NoFaceFoundError
    from unipgen.core.encoders.face import DlibFaceEncoder

    paths, labels = _labelled_files(Path(data_dir), IMAGE_SUFFIXES)
    encoder = DlibFaceEncoder()
    started = time.perf_counter()
    vectors, failed = _encode_each(encoder.encode, paths, NoFaceFoundError)
    encode_s = time.perf_counter() - started

    ok = np.array([i not in failed for i in range(len(paths))])
    distances = _l2_distances(vectors[ok])
    face = _identity_stats(-distances, labels[ok])
    pixels = _identity_stats(-_l2_distances(_pixel_vectors(paths)), labels)
    return {
        "face_people": len(set(labels)),
        "face_photos": len(paths),
        "face_no_face": len(failed),
        "face_no_face_files": [str(paths[i].relative_to(data_dir)) for i in sorted(failed)],
        "face_top1": round(face["hits"] / len(paths), 4),
        "face_pair_auc": face["pair_auc"],
        "face_same_mean_l2": round(-face["same_mean"], 4),
        "face_diff_mean_l2": round(-face["diff_mean"], 4),
        "face_s_per_photo": round(encode_s / len(paths), 3),
        "face_top1_pixels": pixels["top1"],
        "face_pair_auc_pixels": pixels["pair_auc"],
        "face_pixels_config": f"grayscale {PIXEL_SIZE[0]}x{PIXEL_SIZE[1]}, L2",
    }


def bench_voice(data_dir: Path) -> dict[str, Any]:
    """Same- vs different-speaker cosine of utterance pairs (Resemblyzer vs mean MFCCs).

    Utterances the encoder refuses (too short, silent) are left out and counted.
    """
    import torch

    from unipgen.core.encoders.voice import ResemblyzerVoiceEncoder

    torch.set_num_threads(1)
    paths, labels = _labelled_files(Path(data_dir), AUDIO_SUFFIXES)
    encoder = ResemblyzerVoiceEncoder()
    started = time.perf_counter()
    vectors, failed = _encode_each(encoder.encode, paths, InvalidInputError)
    encode_s = time.perf_counter() - started

    ok = np.array([i not in failed for i in range(len(paths))])
    voice = _identity_stats(vectors[ok] @ vectors[ok].T, labels[ok])
    mfcc = _identity_stats(_cosines(_mean_mfccs([p for p, keep in zip(paths, ok) if keep])), labels[ok])
    return {
        "voice_speakers": len(set(labels[ok])),
        "voice_utterances": int(ok.sum()),
        "voice_refused": len(failed),
        "voice_same_mean": voice["same_mean"],
        "voice_diff_mean": voice["diff_mean"],
        "voice_same_vs_diff_margin": voice["margin"],
        "voice_top1": voice["top1"],
        "voice_pair_auc": voice["pair_auc"],
        "voice_s_per_utterance": round(encode_s / len(paths), 3),
        "voice_mfcc_same_mean": mfcc["same_mean"],
        "voice_mfcc_diff_mean": mfcc["diff_mean"],
        "voice_mfcc_same_vs_diff_margin": mfcc["margin"],
        "voice_mfcc_top1": mfcc["top1"],
        "voice_mfcc_pair_auc": mfcc["pair_auc"],
        "voice_mfcc_config": "mean of 20 MFCCs (librosa defaults) per utterance, cosine",
    }


def run(faces_dir: str | Path | None = None, voice_dir: str | Path | None = None) -> dict[str, Any]:
    """Both benchmarks, on the shared data sets unless other folders are given."""
    root = shared_data_dir()
    faces = Path(faces_dir) if faces_dir else root / "orl-faces"
    voice = Path(voice_dir) if voice_dir else root / "librispeech-test-other-mini"
    return {"faces_dir": str(faces), **bench_faces(faces),
            "voice_dir": str(voice), **bench_voice(voice)}


# ---- data --------------------------------------------------------------------------------------

def _labelled_files(data_dir: Path, suffixes: set[str]) -> tuple[list[Path], np.ndarray]:
    """Files of `suffixes` in each sub-folder of `data_dir`, labelled with the folder's name."""
    paths = sorted(p for p in data_dir.glob("*/*") if p.suffix.lower() in suffixes)
    if not paths:
        raise FileNotFoundError(f"no {sorted(suffixes)} files in sub-folders of {data_dir}")
    return paths, np.array([p.parent.name for p in paths])


def _encode_each(
    encode: Callable[[list[bytes]], np.ndarray], paths: list[Path], refusal: type[Exception]
) -> tuple[np.ndarray, set[int]]:
    """One row per path (zeros where the encoder refused it) and the refused indices.

    One file at a time, so that one refusal does not lose the rest of a batch.
    """
    rows, failed = [], set()
    for index, path in enumerate(paths):
        try:
            rows.append(encode([path.read_bytes()])[0])
        except refusal:
            failed.add(index)
            rows.append(None)
    dim = next(len(row) for row in rows if row is not None)
    return np.array([np.zeros(dim) if row is None else row for row in rows], np.float32), failed


def _pixel_vectors(paths: list[Path]) -> np.ndarray:
    """Each photo as grayscale `PIXEL_SIZE` pixels in [0, 1], flattened: the untrained baseline."""
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            small = image.convert("L").resize(PIXEL_SIZE, Image.Resampling.BILINEAR)
            rows.append(np.asarray(small, np.float32).ravel() / 255)
    return np.array(rows)


def _mean_mfccs(paths: list[Path]) -> np.ndarray:
    """Each recording (mono, 16 kHz) as the mean of its 20 MFCC frames: the untrained baseline."""
    import librosa
    import soundfile

    rows = []
    for path in paths:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        if rate != 16_000:
            mono = librosa.resample(mono, orig_sr=rate, target_sr=16_000)
        rows.append(librosa.feature.mfcc(y=mono, sr=16_000, n_mfcc=20).mean(axis=1))
    return np.array(rows)


# ---- statistics --------------------------------------------------------------------------------

def _l2_distances(vectors: np.ndarray) -> np.ndarray:
    squared = (vectors**2).sum(axis=1)
    return np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * vectors @ vectors.T, 0))


def _cosines(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def _identity_stats(similarity: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Identity figures from an (n, n) similarity matrix (higher = closer) and item labels.

    `hits`: items whose most similar other item has the same identity (`top1` = hits / n);
    `same_mean` / `diff_mean`: mean similarity over pairs of distinct items of one identity /
    of two, and `margin` their difference; `pair_auc`: the chance that a same-identity pair
    outranks a different-identity pair (Mann-Whitney, ties counting half; 0.5 is chance).
    """
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    same_scores, diff_scores = similarity[same & upper], similarity[~same & upper]
    others = similarity.astype(np.float64).copy()
    np.fill_diagonal(others, -np.inf)
    hits = int((labels[others.argmax(axis=1)] == labels).sum())
    return {
        "hits": hits,
        "same_mean": round(float(same_scores.mean()), 4),
        "diff_mean": round(float(diff_scores.mean()), 4),
        "margin": round(float(same_scores.mean() - diff_scores.mean()), 4),
        "top1": round(hits / len(labels), 4),
        "pair_auc": round(_auc(same_scores, diff_scores), 4),
    }


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive scores above a negative), ties half: the Mann-Whitney U statistic, scaled."""
    negatives = np.sort(negatives)
    below = np.searchsorted(negatives, positives, side="left")
    tied = np.searchsorted(negatives, positives, side="right") - below
    return float((below + tied / 2).sum() / (len(positives) * len(negatives)))


if __name__ == "__main__":
    import json

    print(json.dumps(run(*sys.argv[1:3]), indent=2))
