"""DreamBench into the store: one user per subject, with its class noun and photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_dreambench


def _mini_dreambench(root: Path) -> Path:
    (root / "dog").mkdir(parents=True)
    for photo in sorted((PERSONA_SAMPLE / "subject").iterdir()):
        shutil.copy(photo, root / "dog" / photo.name)
    (root / "prompts_and_classes.txt").write_text("Classes\n\nsubject_name,class\ndog,dog\nvase,vase\n\nPrompts\n")
    return root


def test_subject_folders_become_users(store: MemoryStore, tmp_path: Path) -> None:
    report = load_dreambench(store, "db", _mini_dreambench(tmp_path / "db"))
    assert (report.users_added, report.images_added) == (1, 2)  # vase is listed but has no folder
    [subject] = store.content.subjects("db", "dog")
    assert (subject.key, subject.class_noun, len(subject.image_shas)) == ("dog", "dog", 2)
    assert load_dreambench(store, "db", tmp_path / "db").users_skipped == 1


def test_missing_class_list_is_named(store: MemoryStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="prompts_and_classes.txt not found"):
        load_dreambench(store, "db", tmp_path)


@pytest.mark.shared_data
def test_full_dreambench(sqlite_store: MemoryStore, shared_data: Path) -> None:
    report = load_dreambench(sqlite_store, "db", shared_data / "dreambench")
    assert report.users_added == 20 and report.images_added >= 80
    assert sqlite_store.content.subjects("db", "bear_plushie")[0].class_noun == "stuffed animal"
