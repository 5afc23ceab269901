"""Write the LaMP-3-style rating file the benchmarks measure (`unipgen.eval.lamp_data`).

    PYTHONPATH=. .venv/bin/python tools/movielens_ratings_jsonl.py ../shared/data/movielens-latest-small \
        runs/movielens-ratings.jsonl [EVERY [HISTORY]]
    .venv/bin/unipgen eval lamp-style --data runs/movielens-ratings.jsonl --profile offline --out runs/ratings

With the defaults (every 25th user id, the 100 ratings before each user's latest) the shared
latest-small gives 24 users.
"""
import sys
from pathlib import Path

from unipgen.eval.lamp_data import movielens_ratings_jsonl

folder, out, *rest = sys.argv[1:]
every, history = (int(rest[0]) if rest else 25), (int(rest[1]) if len(rest) > 1 else 100)
written = movielens_ratings_jsonl(Path(folder), Path(out), every=every, history=history)
print(f"{written}: {len(written.read_text().splitlines())} users")
