"""Input budgets outside the service (issue 14, point 2): library use gets the same header checks
before any decoder, images reach the encoders reduced, recordings are decoded block by block, and
documents have a length limit in the store's write path."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from unipgen.bench import upload_corpus
from unipgen.errors import PayloadTooLargeError
from unipgen.memory import MemoryStore
from unipgen.memory.media import MediaLimits, sniff_audio
from unipgen.settings import Settings


@pytest.fixture
def small_store(tmp_path: Path) -> MemoryStore:
    store = MemoryStore.open(Settings(home=tmp_path, max_document_chars=50))
    store.users.create_tenant("acme")
    store.users.create_user("acme", "alice")
    yield store
    store.close()


def test_usermodel_checks_headers_before_any_encoder_in_process(small_store: MemoryStore) -> None:
    """Without a pool (library use), the 39,000,000 x 1 PNG is refused before dlib is even loaded."""
    from unipgen.core.usermodel import UserModel

    model = UserModel(small_store, "tiny")
    with pytest.raises(PayloadTooLargeError, match=r"UNIPGEN_MAX_IMAGE_SIDE"):
        model.add_face("acme", "alice", "wide", upload_corpus.png(39_000_000, 1), consent=True)
    with pytest.raises(PayloadTooLargeError, match=r"UNIPGEN_MAX_AUDIO_DECODED_BYTES"):
        model.add_voice("acme", "alice", "bomb", upload_corpus.silent_flac(192_000, 8, 119), consent=True)
    assert model.encoders.face._models is None and model.encoders.voice._model is None  # no model loaded


def test_document_length_is_limited_in_the_store_and_before_embedding(small_store: MemoryStore) -> None:
    from unipgen.core.usermodel import UserModel

    message = r"document 'long' is 51 characters, over the limit of 50 characters \(UNIPGEN_MAX_DOCUMENT_CHARS\)"
    with pytest.raises(PayloadTooLargeError, match=message):
        small_store.content.add_documents("acme", "alice", [{"key": "long", "text": "x" * 51}])
    model = UserModel(small_store, "tiny")
    with pytest.raises(PayloadTooLargeError, match=message):
        model.add_documents("acme", "alice", [{"key": "long", "text": "x" * 51}])
    assert "text" not in model.encoders._loaded  # refused before the encoder was needed
    assert small_store.content.documents("acme", "alice") == []


def test_decoded_audio_size_is_refused_from_the_header() -> None:
    data = upload_corpus.silent_flac(192_000, 8, 119)
    with pytest.raises(PayloadTooLargeError) as refused:
        sniff_audio(data, "voice sample 'v'", MediaLimits())
    assert str(refused.value) == (
        "voice sample 'v' decodes to 731136000 bytes (192000 Hz x 8 channels x 119.0 s as float32), over the limit "
        "of 67108864 bytes (UNIPGEN_MAX_AUDIO_DECODED_BYTES)")


def test_images_reach_the_encoders_reduced() -> None:
    from unipgen.core.encoders.face import _decode_rgb
    from unipgen.core.encoders.image import _to_image

    assert _decode_rgb(upload_corpus.png(6_316, 6_316, 2), 0, 1024).shape == (1024, 1024, 3)
    assert _decode_rgb(upload_corpus.big_jpeg(6_000), 0, 1024).shape == (1024, 1024, 3)
    assert _to_image(upload_corpus.png(4_000, 2_000), 0, 512).size == (512, 256)


def test_audio_is_decoded_block_by_block() -> None:
    """A 48 kHz x 8-channel recording: the decoder never holds the whole signal at that rate
    (92 MB as float32), only a block or two and the 16 kHz mono result."""
    import soundfile

    from unipgen.core.encoders.voice import _decode_mono_16k

    seconds, rate, channels = 60, 48_000, 8
    tone = np.sin(np.arange(seconds * rate, dtype=np.float32) * 0.05).astype(np.float32) * 0.5
    buffer = io.BytesIO()
    soundfile.write(buffer, np.repeat(tone[:, None], channels, axis=1), rate, format="FLAC", subtype="PCM_16")
    data = buffer.getvalue()
    tracemalloc.start()
    try:
        wave = _decode_mono_16k(data, 0, 128 * 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(wave) == pytest.approx(seconds * 16_000, abs=16)
    assert peak < seconds * rate * channels * 4 / 4  # whole-signal float32 would be 92 MB
    with pytest.raises(PayloadTooLargeError, match="UNIPGEN_MAX_AUDIO_DECODED_BYTES"):
        _decode_mono_16k(data, 0, 1_000_000)


def test_the_store_decodes_a_photo_unless_an_encoder_did(small_store: MemoryStore) -> None:
    """`decoded=True` (what `UserModel` passes after its encoder decoded the photo) checks only the
    header; without it the store decodes the photo itself and refuses a truncated one."""
    from unipgen.errors import UnsupportedMediaError

    noise = upload_corpus.noise_image(256, 256, "PNG")
    cut = noise[: len(noise) * 3 // 5]
    with pytest.raises(UnsupportedMediaError, match="not a readable image"):
        small_store.content.add_face("acme", "alice", "cut", cut, consent=True)
    small_store.content.add_face("acme", "alice", "cut", cut, consent=True, decoded=True)
    with pytest.raises(PayloadTooLargeError, match="UNIPGEN_MAX_IMAGE_SIDE"):  # the header is still checked
        small_store.content.add_face("acme", "alice", "wide", upload_corpus.png(39_000_000, 1), consent=True, decoded=True)


def test_the_settings_budgets_reach_the_encoders_unless_the_profile_sets_them() -> None:
    from unipgen.core.encoderpool import apply_input_limits
    from unipgen.schema.profiles import ComponentSpec, load_profile

    tiny = load_profile("tiny")
    own = tiny.model_copy(update={"encoders": tiny.encoders | {"face": ComponentSpec(type="dlib-face",
                                                                                      options={"max_side": 640})}})
    limited = apply_input_limits(own, Settings(encoder_image_side=800, max_audio_decoded_bytes=1234))
    assert limited.encoders["face"].options == {"max_side": 640}  # the profile's own choice wins
    assert limited.encoders["image"].options == {"max_side": 800}
    assert limited.encoders["voice"].options == {"max_decoded_bytes": 1234}
    assert limited.encoders["text"].options == {}
