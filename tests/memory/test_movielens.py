"""MovieLens into the store: the shipped sample always, the full data set where it is present."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.memory.models import BehaviorEvent, Item


def test_sample_loads_movies_and_ratings(store: MemoryStore) -> None:
    report = load_movielens(store, "ml", SAMPLE, users=2)
    assert (report.items_added, report.users_added, report.events_added) == (828, 2, 232 + 29)
    assert report.documents_added == 9  # user 2 tagged three movies
    first = store.events.events("ml", "1")[0]
    assert first.type == "rate" and first.value == 4.0 and first.ts.year == 2000
    with store.session() as session:
        toy_story = session.query(Item).filter_by(key="1").one()
    tag = next(d for d in store.content.documents("ml", "2") if d.text == "Tom Hardy")
    assert tag.kind == "tag" and tag.meta == {"item": "89774"} and tag.ts.year == 2015
    assert toy_story.text == "Toy Story (1995) — Adventure, Animation, Children, Comedy, Fantasy"
    assert toy_story.meta == {"title": "Toy Story (1995)", "year": 1995,
                              "genres": ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]}


def test_malformed_files_are_named(store: MemoryStore, tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (2000),Drama\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,four,5\n")
    with pytest.raises(InvalidInputError, match="malformed MovieLens file"):
        load_movielens(store, "ml", tmp_path)
    assert store.count_rows(Item) == 0


@pytest.mark.slow
@pytest.mark.shared_data
def test_full_movielens_then_forget_the_heaviest_user(sqlite_store: MemoryStore, shared_data: Path) -> None:
    report = load_movielens(sqlite_store, "ml", shared_data / "movielens-latest-small")
    assert (report.items_added, report.users_added, report.events_added) == (9742, 610, 100_836)
    assert report.documents_added == 3_683  # every tag application
    forget = sqlite_store.privacy.forget_user("ml", "414")
    assert forget.residue == [] and forget.deleted["events"] == 2698
    assert sqlite_store.count_rows(BehaviorEvent) == 100_836 - 2698
