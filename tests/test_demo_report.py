"""The demo report (unipgen.demo_report): files copied, links relative, text escaped, and in headless
Chromium every image, video and audio file really loads (not just exists)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from tests.browser import CHROMEDRIVER, CHROMIUM, NO_BROWSER, assert_page_loads
from unipgen.demo_report import (
    ReportData,
    ReportOutput,
    ReportPair,
    ReportSubject,
    ReportUser,
    media_type_of,
    write_report,
)
from unipgen.errors import InvalidInputError

PERSONA = Path(__file__).resolve().parents[1] / "unipgen" / "data" / "persona-sample"
HOSTILE = 'Dog <script>alert("x")</script> & co'


def _frames(n: int, size: int = 64) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return [Image.fromarray(np.roll(base, 4 * i, axis=1)) for i in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> ReportData:
    """A report over small real files; generated outputs are suffix-less, like store blobs."""
    sf = pytest.importorskip("soundfile")
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("av")
    from unipgen.modalities.video import encode_gif, encode_mp4

    folder = tmp_path_factory.mktemp("blobs")

    def blob(name: str, payload: bytes) -> Path:
        (folder / name).write_bytes(payload)
        return folder / name

    frames = _frames(8)
    frames[0].save(folder / "frame.png")
    mp4 = blob("video-blob", encode_mp4(frames, 8))
    gif = blob("gif-blob", encode_gif(frames, 8))
    sf.write(folder / "music.wav", 0.3 * np.sin(np.arange(16000) / 8.0), 16000, subtype="PCM_16")
    glb = blob("mesh-blob", trimesh.creation.box().export(file_type="glb"))
    Image.new("RGB", (256, 256), (200, 120, 40)).save(folder / "mesh-preview.png")
    text = blob("text-blob", "Watch « Memento » tonight — <b>not bold</b>.\n".encode())
    user = ReportUser(
        user_id="2", profile={"ratings": 29, "tags": 9, "active": "2015-10-24 to 2015-10-24"},
        likes=["thriller", "twist <ending>"], dislikes=["musical"], top_items=["Memento (2000)"],
        subjects=[ReportSubject(HOSTILE, "dog", [PERSONA / "subject" / f"dog-0{i}.jpg" for i in range(2)])],
        face=PERSONA / "faces" / "s1-1.pgm", voice=PERSONA / "voice" / "1688-142285-0002.flac")
    pairs = [
        ReportPair(ReportOutput("text", "offline", "text/plain", text, {"method": "prompt_only"}),
                   ReportOutput("text", "baseline", "text/plain", data=b"A generic answer."),
                   request="recommend a movie"),
        ReportPair(ReportOutput("image", HOSTILE, "image/png", folder / "frame.png",
                                {"method": "ip_adapter", "clip_score": 0.31234, "tags": ["a", "b"]}),
                   ReportOutput("image", "baseline", "image/gif", gif)),
        ReportPair(ReportOutput("image", "portrait", "image/x-portable-graymap", PERSONA / "faces" / "s1-2.pgm")),
        ReportPair(ReportOutput("video", "mp4", "video/mp4", mp4, {"temporal_consistency": 0.97},
                                preview=folder / "frame.png"),
                   ReportOutput("video", "gif", "image/gif", gif)),
        ReportPair(ReportOutput("audio", "music", "audio/wav", folder / "music.wav")),
        ReportPair(ReportOutput("3d", "mesh", "model/gltf-binary", glb, {"vertices": 8},
                                preview=folder / "mesh-preview.png")),
    ]
    return ReportData(title=f"Report for {HOSTILE}", user=user, pairs=pairs, subtitle="tiny profile",
                      notes=["tiny random models"], log=["1. loaded <3 things"])


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id" and v]
        self.links += [v for k, v in attrs if k in ("src", "href", "poster") and v]


def test_report_is_self_contained_and_escaped(tmp_path: Path, data: ReportData) -> None:
    index = write_report(tmp_path / "report", data)
    page = index.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(page)
    local = [link for link in parser.links if not link.startswith("#")]
    assert local and all(link.startswith("assets/") for link in local), local
    for link in local:
        assert (index.parent / unquote(link)).is_file(), link
    # every copied file is used, and nothing else is in assets/
    assert {unquote(link) for link in local} == {f"assets/{p.name}" for p in (index.parent / "assets").iterdir()}
    assert "script" not in parser.tags and "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "« Memento »" in page  # text is shown, not parsed
    assert "http://" not in page and "https://" not in page
    suffixes = sorted(Path(link).suffix for link in set(local))  # the GIF is shown twice, copied once
    assert suffixes == [".flac", ".gif", ".glb", ".jpg", ".jpg", ".mp4", ".png", ".png", ".png", ".png", ".txt",
                        ".txt", ".wav"], suffixes
    assert parser.ids == ["text", "image", "image-2", "video", "audio", "3d"]
    assert {link[1:] for link in parser.links if link.startswith("#")} == set(parser.ids)
    face = next(p for p in (index.parent / "assets").iterdir() if "face" in p.name)
    with Image.open(face) as image:  # the PGM face was converted for browsers
        assert image.format == "PNG" and image.size == (92, 112)
    assert "0.312" in page and "a, b" in page  # meta formatted
    for tag in ("<video", "<audio", "<pre", "<img"):
        assert tag in page


def test_rewrite_replaces_assets_and_bad_input_names_the_file(tmp_path: Path, data: ReportData) -> None:
    directory = tmp_path / "report"
    write_report(directory, data)
    (directory / "assets" / "stale.txt").write_text("old")
    write_report(directory, data)
    assert not (directory / "assets" / "stale.txt").exists()
    missing = ReportData("x", ReportUser("u", face=tmp_path / "nope.png"))
    with pytest.raises(InvalidInputError, match="nope.png"):
        write_report(directory, missing)
    assert media_type_of("a.GLB") == "model/gltf-binary" and media_type_of("a.xyz") == "application/octet-stream"


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason=NO_BROWSER)
def test_every_asset_loads_in_headless_chromium(tmp_path: Path, data: ReportData) -> None:
    state = assert_page_loads(write_report(tmp_path / "report", data))
    assert len(state["media"]) == 3 and len(state["images"]) >= 6


def test_from_artifact_puts_the_plan_first(tmp_path: Path) -> None:
    from unipgen.orchestrator import GeneratedArtifact
    from unipgen.schema.context import PersonalizationPlan

    plan = PersonalizationPlan(modality="3d", method="ip_adapter", prompt="a <dog>", reasons=["subject"],
                               budget_tokens=10, used_tokens=2)
    mesh = GeneratedArtifact("k1", "model/gltf-binary", "0" * 64, str(tmp_path / "blob"), plan)
    preview = GeneratedArtifact("k2", "image/png", "1" * 64, str(tmp_path / "preview"), plan)
    (tmp_path / "blob").write_bytes(b"glTF")
    Image.new("RGB", (8, 8)).save(tmp_path / "preview", format="PNG")
    output = ReportOutput.from_artifact("3d", "mesh", mesh, {"vertices": 8}, preview=preview)
    assert list(output.meta) == ["method", "prompt", "vertices"] and output.preview == str(tmp_path / "preview")
    page = write_report(tmp_path / "r", ReportData("t", ReportUser("u"), [ReportPair(output)])).read_text()
    assert 'download>3D model (GLB)</a>' in page and "a &lt;dog&gt;" in page and ".png" in page


def test_scores_from_random_weights_are_labelled_mechanical_checks(tmp_path: Path) -> None:
    """The tiny CLIP's "clip_i 0.990" beside noise images reads as a mechanical check, never a
    quality figure; a score from trained weights is shown plain, and the page notes which is which."""
    from unipgen.demo_generation import summary_line
    from unipgen.tiny import MEASURE, MECHANICAL

    Image.new("RGB", (8, 8)).save(tmp_path / "noise.png")
    tiny = ReportOutput("image", "tiny", "image/png", tmp_path / "noise.png",
                        {"clip_i": 0.99, "clip_t": 0.5, "score_kinds": {"clip_i": MECHANICAL, "clip_t": MECHANICAL}})
    real = ReportOutput("speech", "kokoro", "image/png", tmp_path / "noise.png",
                        {"speaker_similarity": 0.61, "score_kinds": {"speaker_similarity": MEASURE}})
    page = write_report(tmp_path / "r", ReportData("t", ReportUser("u"), [ReportPair(tiny, real)])).read_text()
    assert "0.990 (mechanical check: random weights)</span>" in page and "<td>0.990</td>" not in page
    assert "<td>0.610</td>" in page and "score_kinds" not in page  # the kinds label the scores, not a row
    assert 'were computed with random-weight models' in page
    assert summary_line(tiny).startswith("clip i 0.990 (mechanical check: random weights): ")
    assert summary_line(real).startswith("speaker similarity 0.610: ")
    plain = write_report(tmp_path / "p", ReportData("t", ReportUser("u"), [ReportPair(real)])).read_text()
    assert "mechanical check" not in plain and "random-weight" not in plain


def test_a_multi_modal_post_is_shown_as_one_group_with_its_labelled_consistency(tmp_path: Path) -> None:
    from unipgen.demo_report import ReportPost
    from unipgen.tiny import MECHANICAL

    Image.new("RGB", (8, 8)).save(tmp_path / "noise.png")
    post = ReportPost("post-abc", "my film night <tonight>",
                      [ReportOutput("image", "image", "image/png", tmp_path / "noise.png", {"group": "post-abc"}),
                       ReportOutput("text", "text", "text/plain", data=b"A <cosy> night in.", meta={"group": "post-abc"})],
                      caption="a dark <room>", consistency=0.0812, score_kind=MECHANICAL)
    page = write_report(tmp_path / "r", ReportData("t", ReportUser("u"), posts=[post])).read_text()
    assert "One request, several modalities" in page and 'id="post-abc"' in page
    assert "my film night &lt;tonight&gt;" in page and "a dark &lt;room&gt;" in page and "A &lt;cosy&gt; night" in page
    assert "0.081 (mechanical check: random weights)" in page and "random-weight models" in page
    assert "several modalities" not in write_report(tmp_path / "p", ReportData("t", ReportUser("u"))).read_text()
