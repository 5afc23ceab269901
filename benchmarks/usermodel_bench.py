"""`unipgen bench usermodel`: next-item ranking on MovieLens against popularity, then the
speaker and face checks of identity_bench.

A thin wrapper over `unipgen.eval.movielens` (also `unipgen eval movielens`, which adds NDCG@k /
HR@k curves and a report), where the protocol is described: leave-last-out, users with even ids
tune the preference model, users with odd ids are reported (NDCG@10, HR@10).

    python benchmarks/usermodel_bench.py           # full data: ~3 min with the baselines (+ ~80 s once for MiniLM)
    python benchmarks/usermodel_bench.py --quick   # 150 tuning and 150 test users, ~45 s
"""

import json
import os
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # one BLAS thread (2 on these shared cores can be 10x slower);
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")  # must be set before numpy loads

from unipgen.errors import NotFoundError
from unipgen.eval.movielens import (  # noqa: F401  (re-exported for scripts that import this module)
    QUICK_USERS,
    K,
    MovieLens,
    SpaceConfig,
    Spaces,
    Split,
    bench_ranking,
    default_data_dir,
    leave_last_out,
    load_movielens,
    metrics,
    rank_of_target,
)


def run(
    quick: bool = False, data_dir: Path | None = None, voice_dir: Path | None = None, face_dir: Path | None = None,
) -> dict[str, Any]:
    """`unipgen bench usermodel`: ranking on MovieLens, then the speaker and face checks."""
    import identity_bench

    data_dir = data_dir or default_data_dir()
    if not (data_dir / "ratings.csv").is_file():
        raise NotFoundError(f"no ratings.csv in {data_dir}: pass --data or set UNIPGEN_SHARED_DATA")
    print("[1/2] ranking (leave-last-out)...", file=sys.stderr, flush=True)
    results = bench_ranking(data_dir, quick=quick)
    print("[2/2] speaker and face checks...", file=sys.stderr, flush=True)
    return results | identity_bench.run(faces_dir=face_dir, voice_dir=voice_dir)


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
