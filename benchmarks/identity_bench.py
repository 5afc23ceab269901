"""`unipgen bench identity`: do the face and voice encoders tell people apart?

A thin wrapper over `unipgen.eval.identity` (also `unipgen eval faces` / `unipgen eval voice`,
which add quick subsets and a report with histograms). Each figure sits beside an untrained
baseline computed in the same process on the same files:

- faces (`bench_faces`, one folder per person): leave-one-out nearest-neighbour
  re-identification with dlib descriptors (L2), against the same with raw downscaled pixels;
- voice (`bench_voice`, one folder per speaker): mean cosine of same- vs different-speaker
  utterance pairs with Resemblyzer, against the same on mean-MFCC vectors.

`top1` (the nearest other item is the same identity) and `pair_auc` (the chance that a random
same-identity pair is closer than a random different-identity pair; 0.5 is chance) compare
across spaces; mean-similarity margins do not.

    python benchmarks/identity_bench.py                     # ../shared/data (UNIPGEN_SHARED_DATA)
    python benchmarks/identity_bench.py FACES_DIR VOICE_DIR
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 threads on 2 shared cores can be 10x slower

import sys
from pathlib import Path
from typing import Any

from unipgen.bench import shared_data_dir
from unipgen.eval.identity import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    face_figures,
    labelled_files,
    voice_figures,
)


def bench_faces(data_dir: Path) -> dict[str, Any]:
    """Re-identification of each photo by its nearest other photo (dlib vs raw pixels)."""
    data_dir = Path(data_dir)
    return face_figures(*labelled_files(data_dir, IMAGE_SUFFIXES), data_dir)[0]


def bench_voice(data_dir: Path) -> dict[str, Any]:
    """Same- vs different-speaker cosine of utterance pairs (Resemblyzer vs mean MFCCs)."""
    data_dir = Path(data_dir)
    return voice_figures(*labelled_files(data_dir, AUDIO_SUFFIXES), data_dir)[0]


def run(faces_dir: str | Path | None = None, voice_dir: str | Path | None = None) -> dict[str, Any]:
    """Both benchmarks, on the shared data sets unless other folders are given."""
    root = shared_data_dir()
    faces = Path(faces_dir) if faces_dir else root / "orl-faces"
    voice = Path(voice_dir) if voice_dir else root / "librispeech-test-other-mini"
    return {"faces_dir": str(faces), **bench_faces(faces),
            "voice_dir": str(voice), **bench_voice(voice)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(*sys.argv[1:3]), indent=2))
