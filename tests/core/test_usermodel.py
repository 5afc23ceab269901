"""UserModel writes: encode first, then store rows and vectors together (or nothing)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import png_bytes
from unipgen.core.encoders import NoFaceFoundError
from unipgen.core.usermodel import UserModel
from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore
from unipgen.memory.blobs import sha256_hex
from unipgen.memory.models import Blob, Embedding, Face, VoiceSample

needs_identity = pytest.mark.skipif(find_spec("dlib") is None or find_spec("resemblyzer") is None,
                                    reason="face/voice encoders need the 'identity' extra")


@pytest.fixture
def model(sqlite_store: MemoryStore, tmp_path: Path) -> UserModel:
    sqlite_store.users.create_tenant("t")
    sqlite_store.users.create_users("t", ["alice", "bob"])
    return UserModel(sqlite_store, "tiny", cache_dir=tmp_path / "cache")


def persona(*parts: str) -> bytes:
    return PERSONA_SAMPLE.joinpath(*parts).read_bytes()


@needs_identity
def test_faces_are_matched_by_identity(model: UserModel) -> None:
    model.add_face("t", "alice", "a1", persona("faces", "s1-1.pgm"), consent=True)
    model.add_face("t", "bob", "b1", persona("faces", "s2-1.pgm"), consent=True)
    assert model.store.content.spaces("t")["face"] == (128, "l2")
    probe = model.encoders.face.encode([persona("faces", "s1-2.pgm")])[0]  # another photo of alice
    # scores in an l2 space are squared distances; dlib's same-person threshold is 0.6
    assert model.store.content.search("t", "face", probe, k=1, user="alice")[0].score < 0.6**2
    assert model.store.content.search("t", "face", probe, k=1, user="bob")[0].score > 0.6**2


@needs_identity
def test_photo_without_a_face_writes_nothing(model: UserModel) -> None:
    with pytest.raises(NoFaceFoundError, match="no face found in image #0"):
        model.add_face("t", "alice", "wall", png_bytes("gray", (120, 120)), consent=True)
    for table in (Face, Embedding, Blob):
        assert model.store.count_rows(table) == 0
    assert list(model.store.blobs.list()) == []


@needs_identity
def test_voice_is_embedded_and_forgotten(model: UserModel) -> None:
    model.add_voice("t", "alice", "hello", persona("voice", "1688-142285-0002.flac"), consent=True)
    context = model.context("t", "alice", "speech", "Good morning")
    assert context.conditioning.voice_embedding is not None and "voice:hello" in context.provenance
    sample = persona("voice", "1688-142285-0002.flac")
    assert context.conditioning.voice_samples == {"hello": sha256_hex(sample)}
    assert model.plan(context).method == "speaker_embedding"
    image = model.context("t", "alice", "image", "a poster", for_generation=True)  # voices are not an image's
    assert image.conditioning.voice_embedding is None and "voice:hello" not in image.provenance
    assert model.store.privacy.forget_item("t", "voice", "hello", user="alice").residue == []
    assert model.store.count_rows(VoiceSample) == 0 and model.store.count_rows(Embedding) == 0


def test_documents_are_embedded_with_their_rows(model: UserModel) -> None:
    model.add_documents("t", "alice", [{"key": "d1", "text": "I keep bees"}, {"key": "d2", "text": "Jazz at night"}])
    vectors = model.store.content.vectors("t", "text", "document", user="alice")
    assert set(vectors) == {"d1", "d2"}
    expected = model.encoders.text.encode(["I keep bees"])[0]
    assert np.allclose(vectors["d1"], expected, atol=1e-5)
    with pytest.raises(InvalidInputError, match="document #1 is invalid: text"):
        model.add_documents("t", "alice", [{"key": "d3", "text": "fine"}, {"key": "d4", "text": " "}])
    assert model.embed_documents("t", "alice") == 0
