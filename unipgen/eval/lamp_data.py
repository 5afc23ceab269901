"""A LaMP-3-style rating task from a MovieLens folder, written as the harness's JSONL layout.

No LaMP release is on this machine, and none may be downloaded; MovieLens ratings are real,
public and already here. Each chosen user is one line: their latest rating is the target, the
ratings before it (at most `history`, oldest first) the history; an item's text is the movie as
`unipgen.memory.loaders.movie_item` writes it ("Title (Year) — Genres"), its score the rating
rounded up to a whole star (0.5 -> 1, 3.5 -> 4: LaMP-3's scale is 1-5). Users are taken every
`every`-th by id (users 25, 50, ... with the default), so the file is the same on every run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from unipgen.errors import InvalidInputError


def whole_stars(rating: float) -> int:
    """A MovieLens rating (0.5-5 in half stars) as whole stars 1-5, halves rounded up."""
    return min(max(math.ceil(rating), 1), 5)


def movielens_ratings_jsonl(directory: Path, out: Path, every: int = 25, history: int = 100,
                            min_ratings: int = 10) -> Path:
    """Write the rating task of `directory` (movies.csv, ratings.csv) to `out`; returns `out`.

    `every`: take users whose numeric id is a multiple of it (1: every user); `history`: at most
    this many earlier ratings per user; `min_ratings`: users with fewer ratings are left out.
    """
    from unipgen.memory.loaders import movie_item, read_movielens

    if every < 1 or history < 1:
        raise InvalidInputError(f"every and history must be at least 1, got {every} and {history}")
    movies = {row["movieId"]: movie_item(row).text for row in read_movielens(directory, "movies.csv")}
    by_user: dict[str, list[tuple[int, str, float]]] = {}
    for row in read_movielens(directory, "ratings.csv"):
        if row["movieId"] in movies:
            by_user.setdefault(row["userId"], []).append((int(row["timestamp"]), row["movieId"], float(row["rating"])))
    chosen = sorted((u for u in by_user if u.isdigit() and int(u) % every == 0 and len(by_user[u]) >= min_ratings),
                    key=int)
    if not chosen:
        raise InvalidInputError(f"{directory}: no user has an id divisible by {every} and {min_ratings} ratings")
    lines = []
    for user in chosen:
        rows = sorted(by_user[user], key=lambda r: (r[0], int(r[1]) if r[1].isdigit() else 0, r[1]))
        *past, last = rows
        lines.append(json.dumps({"user": user, "history": [{"text": movies[m], "score": whole_stars(r)}
                                                           for _, m, r in past[-history:]],
                                 "target": {"text": movies[last[1]], "score": whole_stars(last[2])}}))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


__all__ = ["movielens_ratings_jsonl", "whole_stars"]
