"""Documents, faces, subjects, voices and artifacts; uploads that are not what they claim."""

from __future__ import annotations

import io

import numpy as np
import pytest

from tests.helpers import png_bytes, unit, wav_bytes
from unipgen.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from unipgen.memory import MemoryStore
from unipgen.memory.models import Blob, Face, Lineage, VoiceSample


def _blob_files(store: MemoryStore) -> set[str]:
    return set(store.blobs.list())


def test_face_voice_subject_are_stored_with_their_blobs(populated: MemoryStore) -> None:
    rng = np.random.default_rng(0)
    populated.content.add_face("acme", "alice", "f1", png_bytes(), consent=True, embedding=unit(rng.normal(size=128)))
    populated.content.add_voice("acme", "alice", "v1", wav_bytes(0.5), consent=True, embedding=unit(rng.normal(size=256)))
    populated.content.add_subject("acme", "alice", "rex", name="Rex", class_noun="dog",
                          images=[png_bytes("red"), png_bytes("blue")])
    with populated.session() as session:
        voice = session.query(VoiceSample).one()
        assert voice.duration_s == pytest.approx(0.5) and voice.sample_rate == 16_000
    assert len(_blob_files(populated)) == 3  # the red png is shared by the face and a subject image
    assert populated.count_rows(Blob) == 3


def test_same_key_twice_is_a_conflict(populated: MemoryStore) -> None:
    populated.content.add_document("acme", "alice", "d1", "first")
    with pytest.raises(ConflictError, match="document 'd1' already exists"):
        populated.content.add_document("acme", "alice", "d1", "second")
    populated.content.add_document("acme", "bob", "d1", "bob may use the same key")


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda s: s.content.add_face("acme", "alice", "f", b"GIF89a not really", consent=True), UnsupportedMediaError,
         "face 'f' is not a readable image"),
        (lambda s: s.content.add_face("acme", "alice", "f", wav_bytes(), consent=True), UnsupportedMediaError,
         "not a readable image"),
        (lambda s: s.content.add_face("acme", "alice", "f", png_bytes(), consent=False), InvalidInputError,
         "needs consent=True"),
        (lambda s: s.content.add_face("acme", "alice", "f", b"", consent=True), InvalidInputError, "face 'f' is empty"),
        (lambda s: s.content.add_face("acme", "alice", "f", png_bytes(size=(600, 600)) + b"\0" * 300_000, consent=True),
         PayloadTooLargeError, "over the limit of 200000 bytes"),
        (lambda s: s.content.add_voice("acme", "alice", "v", png_bytes(), consent=True), UnsupportedMediaError,
         "voice sample 'v' is not a readable audio file"),
        (lambda s: s.content.add_subject("acme", "alice", "s", name="S", class_noun="dog", images=[png_bytes(), b"junk"]),
         UnsupportedMediaError, "image 1 of subject 's'"),
        (lambda s: s.content.add_subject("acme", "alice", "s", name="S", class_noun="dog", images=[]),
         InvalidInputError, "at least one reference image"),
        (lambda s: s.content.add_face("acme", "zed", "f", png_bytes(), consent=True), NotFoundError, "unknown user 'zed'"),
        (lambda s: s.content.add_face("acme", "alice", "f", png_bytes(), consent=True, embedding=np.full(4, np.nan)),
         InvalidInputError, "NaN"),
    ],
)
def test_bad_uploads_are_refused_and_change_nothing(populated: MemoryStore, call, error, message) -> None:
    with pytest.raises(error, match=message):
        call(populated)
    assert _blob_files(populated) == set()
    assert populated.count_rows(Blob) == 0 and populated.count_rows(Face) == 0


def test_decompression_bomb_is_refused(populated: MemoryStore) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(buffer, "PNG")  # tiny file, 100 Mpixel when decoded
    with pytest.raises(PayloadTooLargeError, match=r"over the limit of 40000000 pixels \(UNIPGEN_MAX_IMAGE_PIXELS\)"):
        populated.content.add_face("acme", "alice", "bomb", buffer.getvalue(), consent=True)


def test_artifact_records_lineage(populated: MemoryStore) -> None:
    populated.content.add_document("acme", "alice", "d1", "I love westerns")
    populated.artifacts.add_artifact("acme", "a1", kind="output", media_type="text/plain", data=b"hi", user="alice",
                           derived_from=[("document", "d1"), ("item", "m1"), ("user", "alice")])
    assert populated.artifacts.artifact_blob("acme", "a1") == (b"hi", "text/plain")
    assert populated.count_rows(Lineage) == 3
    with pytest.raises(NotFoundError, match="unknown document 'nope'"):
        populated.artifacts.add_artifact("acme", "a2", kind="output", media_type="text/plain", data=b"x", user="alice",
                               derived_from=[("document", "nope")])
    with pytest.raises(InvalidInputError, match="unknown kind 'song'"):
        populated.artifacts.add_artifact("acme", "a3", kind="output", media_type="text/plain", user="alice",
                               derived_from=[("song", "x")])
    assert populated.count_rows(Lineage) == 3
    assert _blob_files(populated) == {__import__("hashlib").sha256(b"hi").hexdigest()}


def test_documents_in_bulk_are_all_or_nothing(populated: MemoryStore) -> None:
    from unipgen.memory.models import Document

    docs = [{"key": f"d{i}", "text": f"post {i}", "kind": "post", "ts": "2024-05-01T12:00:00+02:00"}
            for i in range(50)]
    assert populated.content.add_documents("acme", "alice", docs) == 50
    with pytest.raises(InvalidInputError, match="document #2 is invalid: text"):
        populated.content.add_documents("acme", "alice", [{"key": "x", "text": "a"}, {"key": "y", "text": "b"},
                                                  {"key": "z", "text": "   "}])
    with pytest.raises(InvalidInputError, match="document #0 is invalid: ts"):
        populated.content.add_documents("acme", "alice", [{"key": "x", "text": "a", "ts": "last tuesday"}])
    with pytest.raises(ConflictError, match="document 'd7' already exists"):
        populated.content.add_documents("acme", "alice", [{"key": "new", "text": "a"}, {"key": "d7", "text": "b"}])
    assert populated.count_rows(Document) == 50
    with populated.session() as session:
        stored = session.query(Document).filter_by(key="d0").one()
    assert stored.ts.isoformat() == "2024-05-01T10:00:00+00:00"
