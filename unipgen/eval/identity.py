"""Do the face and voice encoders tell people apart? (`unipgen eval faces` / `unipgen eval voice`)

Each figure sits beside an untrained baseline computed in the same process on the same files:

- faces (`run_faces`, one sub-folder of photos per person): leave-one-out nearest-neighbour
  re-identification with dlib descriptors (L2), against the same with raw downscaled pixels;
- voice (`run_voice`, one sub-folder of FLAC/WAV/OGG recordings per speaker): cosine of same- vs
  different-speaker utterance pairs with Resemblyzer, against the same on mean-MFCC vectors.

Besides the mean-similarity margin each side reports two scale-free figures, because a margin
depends on how a space spreads its similarities and cannot be compared across spaces: `top1`
(the nearest other item is the same identity) and `pair_auc` (the chance that a random
same-identity pair is closer than a random different-identity pair; 0.5 is chance, 1 perfect).
`unipgen bench usermodel` (`unipgen.bench.usermodel`) calls `face_figures` and `voice_figures`
on whole folders.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval.environment import machine, shared_data_dir, shown_data_path

if TYPE_CHECKING:
    from unipgen.core.encoders.base import Encoder

IMAGE_SUFFIXES = {".pgm", ".png", ".jpg", ".jpeg", ".bmp", ".webp"}
AUDIO_SUFFIXES = {".flac", ".wav", ".ogg"}
#: The pixel baseline's image size: ORL's 92x112 shrunk 4x (a classic eigenfaces resolution).
PIXEL_SIZE = (23, 28)
#: Quick runs: the first identities (sorted by folder name) and the first files of each.
QUICK_FACES = {"identities": 6, "per_identity": 5}
QUICK_VOICE = {"identities": 4, "per_identity": 4}


# ---- the figures -------------------------------------------------------------------------------

def face_figures(paths: list[Path], labels: np.ndarray, root: Path,
                 encoder: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Re-identification of each photo by its nearest other photo (dlib vs raw pixels), and the
    same- / different-person pair distances of both spaces (for the histograms).

    `face_top1` counts photos where no face was found as misses, so it is comparable with
    `face_top1_pixels`, which embeds every photo; `face_no_face` says how many there were.
    """
    from unipgen.core.encoders.base import NoFaceFoundError
    from unipgen.core.encoders.face import DlibFaceEncoder

    encoder = encoder or DlibFaceEncoder()
    vectors, failed, ok, encode_s = _encode_usable(encoder.encode, paths, NoFaceFoundError, labels, root,
                                                   "photos with a face")
    distances = _l2_distances(vectors[ok])
    face = _identity_stats(-distances, labels[ok])
    pixel_distances = _l2_distances(_pixel_vectors(paths))
    pixels = _identity_stats(-pixel_distances, labels)
    figures = {
        "face_people": len(set(labels)),
        "face_photos": len(paths),
        "face_no_face": len(failed),
        "face_no_face_files": [str(paths[i].relative_to(root)) for i in sorted(failed)],
        "face_top1": round(face["hits"] / len(paths), 4),
        "face_pair_auc": face["pair_auc"],
        "face_same_mean_l2": round(-face["same_mean"], 4),
        "face_diff_mean_l2": round(-face["diff_mean"], 4),
        "face_s_per_photo": round(encode_s / len(paths), 3),
        "face_top1_pixels": pixels["top1"],
        "face_pair_auc_pixels": pixels["pair_auc"],
        "face_pixels_config": f"grayscale {PIXEL_SIZE[0]}x{PIXEL_SIZE[1]}, L2",
    }
    same, diff = _pair_scores(distances, labels[ok])
    pixel_same, pixel_diff = _pair_scores(pixel_distances, labels)
    return figures, {"dlib_same": same, "dlib_diff": diff, "pixels_same": pixel_same, "pixels_diff": pixel_diff}


def voice_figures(paths: list[Path], labels: np.ndarray, root: Path,
                  encoder: Any = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Same- vs different-speaker cosine of utterance pairs (Resemblyzer vs mean MFCCs), and the
    pair cosines of both spaces (for the histograms).

    Utterances the encoder refuses (too short, silent) are left out and counted.
    """
    import torch

    from unipgen.core.encoders.voice import ResemblyzerVoiceEncoder

    torch.set_num_threads(1)  # 2 threads on 2 shared cores can be 10x slower
    encoder = encoder or ResemblyzerVoiceEncoder()
    vectors, failed, ok, encode_s = _encode_usable(encoder.encode, paths, InvalidInputError, labels, root,
                                                   "usable recordings")
    cosines = vectors[ok] @ vectors[ok].T
    voice = _identity_stats(cosines, labels[ok])
    mfcc_cosines = _cosines(_mean_mfccs([p for p, keep in zip(paths, ok, strict=True) if keep]))
    mfcc = _identity_stats(mfcc_cosines, labels[ok])
    figures = {
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
    same, diff = _pair_scores(cosines, labels[ok])
    mfcc_same, mfcc_diff = _pair_scores(mfcc_cosines, labels[ok])
    return figures, {"resemblyzer_same": same, "resemblyzer_diff": diff, "mfcc_same": mfcc_same,
                     "mfcc_diff": mfcc_diff}


# ---- the harnesses -----------------------------------------------------------------------------

def profile_encoder(profile: str, role: str) -> Encoder:
    """The encoder a model profile names for `role` (built, not yet loaded)."""
    from unipgen.core.encoders import load_encoder
    from unipgen.schema.profiles import load_profile

    specs = load_profile(profile).encoders
    if role not in specs:
        raise InvalidInputError(f"profile {profile!r} names no {role!r} encoder")
    return load_encoder(specs[role])


def run_faces(data: Path | str | None = None, *, out: Path | str | None = None, quick: bool = False,
              identities: int | None = None, per_identity: int | None = None, profile: str | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Face re-identification on `data` (default: the shared orl-faces); with `out`, writes
    `faces.json`, `.md`, `.html` and `faces-distances.png` there.

    `quick`: the first 6 people, 5 photos each. `identities` / `per_identity` keep the first
    that many sub-folders (sorted by name) / files of each (either overrides `quick`). Returns
    `face_figures`' keys plus `settings`, `machine`, `seconds` and `report` (paths).
    """
    directory = Path(data) if data is not None else shared_data_dir() / "orl-faces"
    return _run("faces", directory, out, quick, identities, per_identity, log, profile)


def run_voice(data: Path | str | None = None, *, out: Path | str | None = None, quick: bool = False,
              identities: int | None = None, per_identity: int | None = None, profile: str | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Speaker separation on `data` (default: the shared librispeech-test-other-mini); with `out`,
    writes `voice.json`, `.md`, `.html` and `voice-cosines.png` there.

    `quick`: the first 4 speakers, 4 recordings each. `identities` / `per_identity` as in
    `run_faces`. Returns `voice_figures`' keys plus `settings`, `machine`, `seconds`, `report`.
    """
    directory = Path(data) if data is not None else shared_data_dir() / "librispeech-test-other-mini"
    return _run("voice", directory, out, quick, identities, per_identity, log, profile)


def _run(kind: str, directory: Path, out: Path | str | None, quick: bool, identities: int | None,
         per_identity: int | None, log: Callable[[str], None] | None, profile: str | None = None) -> dict[str, Any]:
    """One harness; `profile` names the model profile whose face / voice encoder is measured
    (default: dlib / Resemblyzer, which every shipped profile names)."""
    started = time.perf_counter()
    quick_sizes = QUICK_FACES if kind == "faces" else QUICK_VOICE
    identities = identities if identities is not None else quick_sizes["identities"] if quick else None
    per_identity = per_identity if per_identity is not None else quick_sizes["per_identity"] if quick else None
    suffixes = IMAGE_SUFFIXES if kind == "faces" else AUDIO_SUFFIXES
    paths, labels = labelled_files(directory, suffixes, identities, per_identity)
    (log or (lambda _message: None))(f"{kind}: {len(paths)} files of {len(set(labels))} identities in {directory}")
    figures_of = face_figures if kind == "faces" else voice_figures
    encoder = profile_encoder(profile, "face" if kind == "faces" else "voice") if profile else None
    figures, scores = figures_of(paths, labels, directory, encoder)
    result = {"benchmark": kind, "settings": {"data": shown_data_path(directory), "quick": quick, "identities": identities,
                                              "per_identity": per_identity, "profile": profile},
              **figures, "machine": machine("numpy"), "seconds": round(time.perf_counter() - started, 2)}
    if out is not None:
        result["report"] = write_identity_report(Path(out), kind, result, scores)
    return result


# ---- the report --------------------------------------------------------------------------------

def write_identity_report(out_dir: Path, kind: str, result: dict[str, Any],
                          scores: dict[str, np.ndarray]) -> dict[str, str]:
    """`<kind>.json`, `.md`, `.html` and the same- vs different-identity histogram PNG."""
    from unipgen.eval import report
    from unipgen.eval.report import Heading, HistogramPanel, Image, Paragraph, Table

    faces = kind == "faces"
    spaces = ("dlib", "pixels") if faces else ("resemblyzer", "mfcc")
    names = {"dlib": "dlib descriptors", "pixels": f"raw pixels {PIXEL_SIZE[0]}x{PIXEL_SIZE[1]}",
             "resemblyzer": "Resemblyzer", "mfcc": "mean MFCCs"}
    unit, who, whom = (("L2 distance (lower = closer)", "person", "people") if faces
                       else ("cosine (higher = closer)", "speaker", "speakers"))
    panels = [HistogramPanel(unit, {f"same {who}": scores[f"{s}_same"], f"different {whom}": scores[f"{s}_diff"]},
                             title=names[s]) for s in spaces]
    plot = report.histogram_png(out_dir / f"{kind}-{'distances' if faces else 'cosines'}.png", panels,
                                title=f"{kind}: same- vs different-{who} pairs")
    if faces:
        rows = [[names["dlib"], result["face_top1"], result["face_pair_auc"], result["face_same_mean_l2"],
                 result["face_diff_mean_l2"]],
                [names["pixels"], result["face_top1_pixels"], result["face_pair_auc_pixels"],
                 float(scores["pixels_same"].mean()), float(scores["pixels_diff"].mean())]]
        headers = ["space", "top1", "pair AUC", "same-person mean L2", "different-person mean L2"]
        counts = (f"{result['face_photos']} photos of {result['face_people']} people; no face found in "
                  f"{result['face_no_face']} (counted as top1 misses){': ' if result['face_no_face'] else ''}"
                  f"{', '.join(result['face_no_face_files'][:10])}. dlib: {result['face_s_per_photo']} s per photo.")
    else:
        rows = [[names[s], result[f"voice{p}_top1"], result[f"voice{p}_pair_auc"], result[f"voice{p}_same_mean"],
                 result[f"voice{p}_diff_mean"], result[f"voice{p}_same_vs_diff_margin"]]
                for s, p in (("resemblyzer", ""), ("mfcc", "_mfcc"))]
        headers = ["space", "top1", "pair AUC", "same-speaker mean cosine", "different-speaker mean cosine", "margin"]
        counts = (f"{result['voice_utterances']} recordings of {result['voice_speakers']} speakers; "
                  f"{result['voice_refused']} refused by the encoder (too short or silent) and left out. "
                  f"Resemblyzer: {result['voice_s_per_utterance']} s per recording.")
    machine_info = result["machine"]
    blocks: list[Any] = [
        Paragraph(f"{result['settings']['data']}: {counts} {result['seconds']} s on {machine_info['cpu']} "
                  f"({machine_info['cores']} cores)."),
        Paragraph(f"top1: share of items whose nearest other item is the same {who} (leave-one-out "
                  f"re-identification). Pair AUC: chance that a same-{who} pair is closer than a different-{who} "
                  "pair (0.5 = chance, 1 = the two histograms do not overlap). Mean similarities depend on how a "
                  "space spreads them: compare top1 and AUC across spaces, not the means. The second row is an "
                  "untrained baseline on the same files."),
        Heading("Results"),
        Table(headers, rows, digits=4),
        Image(plot.name, f"Same- vs different-{who} pairs in each space"),
    ]
    title = "Face re-identification" if faces else "Speaker separation"
    files = report.write_report(out_dir, kind, title, blocks,
                                result | {"report": {"plot": str(plot), "json": str(out_dir / f"{kind}.json"),
                                                     "markdown": str(out_dir / f"{kind}.md"),
                                                     "html": str(out_dir / f"{kind}.html")}})
    return {**files.as_dict(), "plot": str(plot)}


# ---- data --------------------------------------------------------------------------------------

def labelled_files(data_dir: Path, suffixes: set[str], identities: int | None = None,
                   per_identity: int | None = None) -> tuple[list[Path], np.ndarray]:
    """Files of `suffixes` in each sub-folder of `data_dir`, labelled with the folder's name;
    optionally the first `identities` sub-folders and the first `per_identity` files of each.

    A missing folder is NotFoundError; no such files in its sub-folders, or fewer than two
    identities, is InvalidInputError (both name the folder).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotFoundError(f"folder {data_dir} not found (pass data=, or set UNIPGEN_SHARED_DATA)")
    for name, value in (("identities", identities), ("per_identity", per_identity)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    paths = sorted(p for p in data_dir.glob("*/*") if p.suffix.lower() in suffixes and p.is_file())
    if not paths:
        raise InvalidInputError(f"no {sorted(suffixes)} files in sub-folders of {data_dir}: expected one sub-folder "
                                "per identity")
    folders = sorted({p.parent.name for p in paths})[:identities]
    kept = [p for folder in folders for p in [q for q in paths if q.parent.name == folder][:per_identity]]
    labels = np.array([p.parent.name for p in kept])
    _check_pairs(labels, data_dir, "files")
    return kept, labels


def _check_pairs(labels: np.ndarray, data_dir: Path, what: str) -> None:
    """Identity figures need two identities and one identity with two items."""
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2 or counts.max() < 2:
        raise InvalidInputError(f"{data_dir}: {len(labels)} {what} in {len(names)} sub-folder(s); need at least two "
                                "identities (sub-folders) and one with two or more")


def _encode_usable(
    encode: Callable[[list[bytes]], np.ndarray], paths: Sequence[Path], refusal: type[Exception],
    labels: np.ndarray, root: Path, what: str,
) -> tuple[np.ndarray, set[int], np.ndarray, float]:
    """`_encode_each`, timed (seconds), with the mask of the rows not refused; the kept rows must
    still hold pairs of `what` (`_check_pairs`) for the identity figures to mean anything."""
    started = time.perf_counter()
    vectors, failed = _encode_each(encode, paths, refusal)
    encode_s = time.perf_counter() - started
    ok = np.array([i not in failed for i in range(len(paths))])
    _check_pairs(labels[ok], root, what)
    return vectors, failed, ok, encode_s


def _encode_each(
    encode: Callable[[list[bytes]], np.ndarray], paths: Sequence[Path], refusal: type[Exception]
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
    dim = next((len(row) for row in rows if row is not None), 1)
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


def _pair_scores(similarity: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scores of same-identity and of different-identity pairs of distinct items (upper triangle)."""
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), k=1)
    return similarity[same & upper], similarity[~same & upper]


def _identity_stats(similarity: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Identity figures from an (n, n) similarity matrix (higher = closer) and item labels.

    `hits`: items whose most similar other item has the same identity (`top1` = hits / n);
    `same_mean` / `diff_mean`: mean similarity over pairs of distinct items of one identity /
    of two, and `margin` their difference; `pair_auc`: the chance that a same-identity pair
    outranks a different-identity pair (Mann-Whitney, ties counting half; 0.5 is chance).
    """
    same_scores, diff_scores = _pair_scores(similarity, labels)
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
