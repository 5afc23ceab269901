"""`unipgen bench usermodel`: next-item ranking on MovieLens against popularity, then the
speaker and face checks.

The protocols live in `unipgen.eval`, which `unipgen eval movielens|voice|faces` run with
curves and reports; this benchmark reports their headline figures in one result:

- ranking (`unipgen.eval.movielens.bench_ranking`): leave-last-out, users with even ids tune
  the preference model, users with odd ids are reported (NDCG@10, HR@10);
- faces (`unipgen.eval.identity.face_figures`, one folder per person): leave-one-out
  nearest-neighbour re-identification with dlib descriptors (L2), against raw downscaled pixels;
- voice (`unipgen.eval.identity.voice_figures`, one folder per speaker): mean cosine of same- vs
  different-speaker utterance pairs with Resemblyzer, against mean-MFCC vectors.

`top1` (the nearest other item is the same identity) and `pair_auc` (the chance that a random
same-identity pair is closer than a random different-identity pair; 0.5 is chance) compare
across spaces; mean-similarity margins do not.

    unipgen bench usermodel           # full data: ~3 min with the baselines (+ ~80 s once for MiniLM)
    unipgen bench usermodel --quick   # 150 tuning and 150 test users, ~45 s
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from unipgen.errors import NotFoundError
from unipgen.eval.environment import shared_data_dir
from unipgen.eval.identity import (
    AUDIO_SUFFIXES,
    IMAGE_SUFFIXES,
    face_figures,
    labelled_files,
    voice_figures,
)
from unipgen.eval.movielens import bench_ranking
from unipgen.eval.movielens_data import default_data_dir


def run(
    quick: bool = False, data_dir: Path | None = None, voice_dir: Path | None = None, face_dir: Path | None = None,
) -> dict[str, Any]:
    """`unipgen bench usermodel`: ranking on MovieLens, then the speaker and face checks."""
    data_dir = data_dir or default_data_dir()
    if not (data_dir / "ratings.csv").is_file():
        raise NotFoundError(f"no ratings.csv in {data_dir}: pass --data or set UNIPGEN_SHARED_DATA")
    print("[1/2] ranking (leave-last-out)...", file=sys.stderr, flush=True)
    results = bench_ranking(data_dir, quick=quick)
    print("[2/2] speaker and face checks...", file=sys.stderr, flush=True)
    return results | identity(faces_dir=face_dir, voice_dir=voice_dir)


def identity(faces_dir: str | Path | None = None, voice_dir: str | Path | None = None) -> dict[str, Any]:
    """The face and voice checks, on the shared data sets unless other folders are given."""
    root = shared_data_dir()
    faces = Path(faces_dir) if faces_dir else root / "orl-faces"
    voice = Path(voice_dir) if voice_dir else root / "librispeech-test-other-mini"
    return {"faces_dir": str(faces), **face_figures(*labelled_files(faces, IMAGE_SUFFIXES), faces)[0],
            "voice_dir": str(voice), **voice_figures(*labelled_files(voice, AUDIO_SUFFIXES), voice)[0]}
