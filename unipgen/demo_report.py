"""The demo report: one static HTML page that shows a user's memory and what was made for them.

`write_report(directory, data)` writes `directory/index.html` and copies every file it shows into
`directory/assets/` (relative links, so the folder can be zipped or moved). The page needs no
network and no JavaScript: inline CSS, the browser's own <img>, <video> and <audio> players.

The data is a small typed model built by the caller (`unipgen demo`):

* `ReportUser`: the profile lines, preferences, subjects with their photos, face and voice;
* `ReportPair`: per modality the personalized `ReportOutput` beside the non-personalized one;
* `ReportOutput`: one file (or text) with its media type and meta (method, prompt, metrics).

A metric whose meta names its kind (`meta["score_kinds"]`, `unipgen.tiny.score_kind`) as a
mechanical check (computed with random-weight models) is shown with that label, never as a bare
quality figure.

Each output is shown by media type: image/* as <img> (GIF animates), video/* as <video controls>,
audio/* as <audio controls>, text/* inline in <pre>, model/* (GLB, PLY) as its preview image and a
link to the file. Images browsers cannot show (PGM faces, TIFF...) are converted to PNG on copy.
All text is HTML-escaped. Only the standard library and Pillow are used (no torch).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from unipgen.errors import InvalidInputError
from unipgen.tiny import MECHANICAL, MECHANICAL_NOTE, shown_score

#: File suffix per media type: store blobs have no suffix, and browsers sniff by it for file://.
SUFFIXES = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "image/x-portable-graymap": ".pgm", "image/tiff": ".tif", "image/bmp": ".bmp",
    "video/mp4": ".mp4", "video/webm": ".webm",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/flac": ".flac", "audio/mpeg": ".mp3",
    "audio/ogg": ".ogg", "model/gltf-binary": ".glb", "model/ply": ".ply",
    "text/plain": ".txt", "text/markdown": ".md", "application/json": ".json",
}
_TYPES = {suffix: media for media, suffix in reversed(SUFFIXES.items())} | {".jpeg": "image/jpeg"}
#: Image types every current browser draws; others are converted to PNG.
WEB_IMAGES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"}
_SMALL = 160  # px: images narrower than this are drawn scaled up with crisp pixels


@dataclass(frozen=True)
class ReportOutput:
    """One generated (or baseline) output.

    `path` is its file; `data` its bytes instead (e.g. a text answer from the store); `preview`
    an image shown for it (the poster frame of a video, the rendered view of a 3D mesh). `meta`
    is shown as a table, in order (method, prompt and metrics such as temporal_consistency).
    """

    modality: str
    title: str
    media_type: str
    path: Path | str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    preview: Path | str | None = None

    @classmethod
    def from_artifact(cls, modality: str, title: str, artifact: Any, meta: Mapping[str, Any] | None = None,
                      preview: Any = None) -> ReportOutput:
        """From a stored output (`GeneratedArtifact`: media_type, path, plan); plan first in meta."""
        plan = getattr(artifact, "plan", None)
        head = {"method": plan.method, "prompt": plan.prompt} if plan is not None else {}
        return cls(modality, title, artifact.media_type, artifact.path, {**head, **(meta or {})},
                   preview=getattr(preview, "path", preview))


@dataclass(frozen=True)
class ReportPair:
    """The same request answered for the user (`personalized`) and for nobody (`baseline`)."""

    personalized: ReportOutput
    baseline: ReportOutput | None = None
    request: str = ""
    note: str = ""


@dataclass(frozen=True)
class ReportPost:
    """A multi-modal post: one request's outputs, stored as one group (`unipgen.orchestrator.post`),
    with the caption its text was written from and its consistency score (and that score's kind)."""

    group: str
    request: str
    outputs: Sequence[ReportOutput]
    caption: str | None = None
    consistency: float | None = None
    score_kind: str | None = None


@dataclass(frozen=True)
class ReportSubject:
    """A personal subject (a pet, an object) with its reference photos."""

    name: str
    class_noun: str = ""
    photos: Sequence[Path | str] = ()


@dataclass(frozen=True)
class ReportUser:
    """What the memory holds about the user: `profile` is shown as label → value lines."""

    user_id: str
    profile: Mapping[str, Any] = field(default_factory=dict)
    likes: Sequence[str] = ()
    dislikes: Sequence[str] = ()
    top_items: Sequence[str] = ()
    subjects: Sequence[ReportSubject] = ()
    face: Path | str | None = None
    voice: Path | str | None = None


@dataclass(frozen=True)
class ReportData:
    """The whole page: a title, the user, one pair per modality, notes, and the console log."""

    title: str
    user: ReportUser
    pairs: Sequence[ReportPair] = ()
    subtitle: str = ""
    posts: Sequence[ReportPost] = ()
    notes: Sequence[str] = ()
    log: Sequence[str] = ()


def write_report(directory: Path | str, data: ReportData) -> Path:
    """Write `directory/index.html` and its `assets/` (replaced); return the index's path."""
    directory = Path(directory)
    assets = directory / "assets"
    shutil.rmtree(assets, ignore_errors=True)
    assets.mkdir(parents=True)
    page = _Page(assets).render(data)
    index = directory / "index.html"
    partial = index.with_suffix(".html.tmp")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, index)
    return index


def media_type_of(path: Path | str) -> str:
    """The media type for a file name's suffix ("application/octet-stream" when unknown)."""
    return _TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "file"


def _format(value: Any) -> str:
    """A meta value as short text: floats to 3 decimals, lists joined, mappings as JSON."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, Mapping):
        return json.dumps(value, default=str, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return ", ".join(_format(v) for v in value) or "—"
    return str(value)


class _Page:
    """Renders the HTML, copying each file it links into `assets` once."""

    def __init__(self, assets: Path) -> None:
        self.assets = assets
        self.copied: dict[tuple[str, str], tuple[str, str]] = {}
        self.files: dict[str, Path] = {}  # relative URL -> the copied file

    def asset(self, source: Path | str | bytes, media_type: str, name: str) -> tuple[str, str]:
        """Copy a file (or bytes) into assets/; return (relative URL, media type as written)."""
        key = (f"bytes:{hashlib.sha256(source).hexdigest()}" if isinstance(source, bytes) else str(source),
               media_type)
        if key in self.copied:
            return self.copied[key]
        if not isinstance(source, bytes) and not Path(source).is_file():
            raise InvalidInputError(f"report asset {name!r}: no file at {source}")
        written = media_type
        stem = f"{len(self.copied) + 1:02d}-{_slug(name)}"
        if media_type.startswith("image/") and media_type not in WEB_IMAGES:
            target, written = self.assets / f"{stem}.png", "image/png"
            self._to_png(source, target)
        else:
            suffix = SUFFIXES.get(media_type) or (Path(source).suffix if not isinstance(source, bytes) else "")
            target = self.assets / f"{stem}{suffix or '.bin'}"
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                shutil.copyfile(source, target)
        url = f"assets/{quote(target.name)}"
        self.copied[key], self.files[url] = (url, written), target
        return url, written

    @staticmethod
    def _to_png(source: Path | str | bytes, target: Path) -> None:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.convert("RGBA" if "A" in image.getbands() else "RGB").save(target, format="PNG")

    def image(self, source: Path | str, name: str) -> str:
        """Copy an image given by path (a suffix-less store blob too: sniffed); return its URL."""
        media_type = media_type_of(source)
        if not media_type.startswith("image/") and Path(source).is_file():
            media_type = _sniff_image(Path(source)) or media_type
        return self.asset(source, media_type, name)[0]

    def _img(self, url: str, alt: str, css: str = "") -> str:
        width = _pixel_width(self.files[url]) if css == "media" else None  # photos stay smooth
        small = " small" if width and width < _SMALL else ""
        return f'<img class="{css}{small}" src="{_e(url)}" alt="{_e(alt)}">'

    def media(self, output: ReportOutput) -> str:
        """The element for one output: player, image, text or a link with a preview."""
        kind = output.media_type.split(";")[0].strip().lower()
        name = f"{output.modality}-{output.title}"
        source = output.data if output.data is not None else output.path
        if source is None:
            raise InvalidInputError(f"report output {output.title!r} has neither a path nor data")
        url, written = self.asset(source, kind, name)
        if kind.startswith("text/") or kind == "application/json":
            text = self.files[url].read_text(encoding="utf-8", errors="replace")
            return f'<pre class="text">{_e(text)}</pre><a class="file" href="{_e(url)}">{_label(url)} file</a>'
        poster = self.image(output.preview, f"{name}-preview") if output.preview is not None else None
        if written.startswith("image/"):
            return self._img(url, output.title, "media")
        if written.startswith("video/"):
            attr = f' poster="{_e(poster)}"' if poster else ""
            return (f'<video class="media" controls loop muted playsinline preload="metadata"{attr}'
                    f' src="{_e(url)}"></video>'
                    f'<a class="file" href="{_e(url)}">{_label(url)} file</a>')
        if written.startswith("audio/"):
            return (f'<audio controls preload="metadata" src="{_e(url)}"></audio>'
                    f'<a class="file" href="{_e(url)}">{_label(url)} file</a>')
        label = "3D model" if written.startswith("model/") else "file"
        shown = self._img(poster, f"{output.title} (preview)", "media") if poster else ""
        return f'{shown}<a class="file" href="{_e(url)}" download>{label} ({_label(url)})</a>'

    def output(self, output: ReportOutput | None, heading: str) -> str:
        if output is None:
            return f'<div class="out none"><h4>{_e(heading)}</h4><p class="muted">no baseline</p></div>'
        kinds = output.meta.get("score_kinds") or {}
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_meta_value(v, kinds.get(k))}</td></tr>"
                       for k, v in output.meta.items() if k != "score_kinds")
        return (f'<div class="out"><h4>{_e(heading)} <span class="muted">{_e(output.title)}</span></h4>'
                f'{self.media(output)}<table class="meta">{rows}</table></div>')

    def pair(self, pair: ReportPair, anchor: str) -> str:
        modality = pair.personalized.modality
        request = f'<p class="request">“{_e(pair.request)}”</p>' if pair.request else ""
        note = f'<p class="muted">{_e(pair.note)}</p>' if pair.note else ""
        return (f'<section class="pair" id="{_e(anchor)}"><h3><span class="badge">{_e(modality)}'
                f'</span></h3>{request}{note}<div class="cols">'
                f'{self.output(pair.personalized, "Personalized")}'
                f'{self.output(pair.baseline, "Not personalized")}</div></section>')

    def post(self, post: ReportPost) -> str:
        score = _meta_value(post.consistency, post.score_kind) if post.consistency is not None else "not scored"
        caption = f"<p>text written from the image's caption: “{_e(post.caption)}”</p>" if post.caption else ""
        outputs = "".join(self.output(o, o.modality) for o in post.outputs)
        return (f'<section class="pair" id="{_e(post.group)}"><h3><span class="badge">post</span> '
                f'<span class="muted">group {_e(post.group)}</span></h3><p class="request">“{_e(post.request)}”</p>'
                f'{caption}<p>text-image consistency (CLIP): {score}</p><div class="cols">{outputs}</div></section>')

    def user(self, user: ReportUser) -> str:
        face = self._img(self.image(user.face, "face"), "face photo", "face") if user.face is not None else ""
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_format(v))}</td></tr>" for k, v in user.profile.items())
        voice = ""
        if user.voice is not None:
            url, _ = self.asset(user.voice, media_type_of(user.voice), "voice")
            voice = f'<div class="voice"><h4>Voice sample</h4><audio controls preload="metadata" src="{_e(url)}">' \
                    "</audio></div>"
        parts = [(f'<div class="card id">{face}<div><h3>User {_e(user.user_id)}</h3>'
                  f'<table class="meta">{rows}</table>{voice}</div></div>')]
        prefs = _chips("Likes", user.likes, "like") + _chips("Dislikes", user.dislikes, "dislike")
        if user.top_items:
            prefs += "<h4>Might enjoy next</h4><ol>" + "".join(f"<li>{_e(t)}</li>" for t in user.top_items) + "</ol>"
        if prefs:
            parts.append(f'<div class="card">{prefs}</div>')
        for subject in user.subjects:
            photos = "".join(self._img(self.image(p, f"subject-{subject.name}"), f"{subject.name} photo", "thumb")
                             for p in subject.photos)
            noun = f' <span class="muted">({_e(subject.class_noun)})</span>' if subject.class_noun else ""
            parts.append(f'<div class="card"><h4>Subject: {_e(subject.name)}{noun}</h4>'
                         f'<div class="photos">{photos}</div></div>')
        return '<section class="memory"><h2>Memory</h2><div class="grid">' + "".join(parts) + "</div></section>"

    def render(self, data: ReportData) -> str:
        anchors = _anchors([p.personalized.modality for p in data.pairs])
        nav = " ".join(f'<a href="#{_e(a)}">{_e(p.personalized.modality)}</a>' for p, a in zip(data.pairs, anchors))
        mechanical = _mechanical_note(data.pairs, [p.score_kind for p in data.posts])
        notes = "".join(f"<li>{_e(n)}</li>" for n in (*mechanical, *data.notes))
        posts = "".join(map(self.post, data.posts))
        log = (f"<details><summary>Console log</summary><pre>{_e(chr(10).join(data.log))}</pre></details>"
               if data.log else "")
        body = (f'<header><h1>{_e(data.title)}</h1><p class="muted">{_e(data.subtitle)}</p>'
                f'<nav>{nav}</nav></header><main>{self.user(data.user)}'
                f'<section><h2>Outputs</h2>{"".join(map(self.pair, data.pairs, anchors))}</section>'
                f'{f"<section><h2>One request, several modalities</h2>{posts}</section>" if posts else ""}'
                f'{f"<section><h2>Notes</h2><ul>{notes}</ul></section>" if notes else ""}{log}</main>')
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{_e(data.title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n")


def _mechanical_note(pairs: Sequence[ReportPair], kinds: Sequence[str | None] = ()) -> list[str]:
    """The page's note on mechanical checks, when any output (or other score: `kinds`) shows one."""
    outputs = [o for pair in pairs for o in (pair.personalized, pair.baseline) if o is not None]
    if MECHANICAL not in kinds and not any(MECHANICAL in (o.meta.get("score_kinds") or {}).values() for o in outputs):
        return []
    return [f"Scores marked \"{MECHANICAL}\" were {MECHANICAL_NOTE}: they are not quality figures."]


def _meta_value(value: Any, kind: str | None) -> str:
    """A meta table cell: the value, and for a score computed with random weights its label."""
    if kind != MECHANICAL or not isinstance(value, (int, float)) or isinstance(value, bool):
        return _e(_format(value))
    return f'<span class="mechanical" title="{_e(MECHANICAL_NOTE)}">{_e(shown_score(value, kind))}</span>'


def _chips(label: str, words: Sequence[str], css: str) -> str:
    if not words:
        return ""
    return f"<h4>{_e(label)}</h4><p>" + "".join(f'<span class="chip {css}">{_e(w)}</span>' for w in words) + "</p>"


def _anchors(modalities: Sequence[str]) -> list[str]:
    """Unique in-page ids: "image", then "image-2" for a second image pair."""
    seen: dict[str, int] = {}
    anchors = []
    for modality in modalities:
        slug = _slug(modality)
        seen[slug] = seen.get(slug, 0) + 1
        anchors.append(slug if seen[slug] == 1 else f"{slug}-{seen[slug]}")
    return anchors


def _label(url: str) -> str:
    """A file link's label: its format from the suffix ("MP4", "GLB")."""
    return _e(Path(url).suffix[1:].upper() or "binary")


def _sniff_image(path: Path) -> str | None:
    """The media type of an image file by its content (Pillow), or None if it is not one."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return Image.MIME.get(image.format or "")
    except (OSError, ValueError):
        return None


def _pixel_width(path: Path) -> int | None:
    """An image's width in pixels (None if Pillow cannot read it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.width
    except (OSError, ValueError):
        return None


_CSS = """
:root{--fg:#1d2330;--muted:#6b7385;--line:#e3e6ee;--bg:#f6f7fb;--card:#fff;--accent:#3b5bdb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:24px 32px 12px;background:var(--card);border-bottom:1px solid var(--line)}
h1{margin:0 0 4px;font-size:24px}h2{font-size:19px;margin:28px 0 12px}h3{margin:0 0 8px}
h4{margin:12px 0 6px;font-size:14px}
nav a{margin-right:12px;color:var(--accent);text-decoration:none;font-weight:600}
main{max-width:1180px;margin:0 auto;padding:0 24px 48px}
.muted{color:var(--muted);font-weight:normal}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
.card,.pair{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px}
.pair{margin-bottom:16px}
.id{display:flex;gap:16px;align-items:flex-start}
.face{width:112px;border-radius:8px}
.photos{display:flex;gap:8px;flex-wrap:wrap}.thumb{width:132px;height:132px;object-fit:cover;border-radius:6px}
.chip{display:inline-block;padding:2px 10px;margin:0 6px 6px 0;border-radius:12px;font-size:13px}
.like{background:#e6f4ea;color:#1e6b34}.dislike{background:#fdecea;color:#8a1c1c}
.badge{background:var(--accent);color:#fff;border-radius:6px;padding:2px 10px;font-size:14px;text-transform:uppercase}
.request{font-style:italic;margin:4px 0 12px}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media (max-width:760px){.cols{grid-template-columns:1fr}}
.out{border-top:3px solid var(--accent);padding-top:8px}.out.none{border-top-color:var(--line)}
.out:nth-child(2){border-top-color:#adb5bd}
.media{display:block;width:100%;max-width:420px;border-radius:6px;background:#000}
img.media{background:none}
.small{image-rendering:pixelated}
audio{display:block;width:100%;max-width:420px}
pre{white-space:pre-wrap;font-size:13px;word-wrap:break-word;margin:0}
pre{background:var(--bg);padding:10px;border-radius:6px}
.file{display:inline-block;font-size:13px;margin:4px 0;color:var(--accent)}
table.meta{border-collapse:collapse;font-size:13px;margin-top:8px}
.meta th{text-align:left;color:var(--muted);font-weight:600;padding:2px 12px 2px 0;vertical-align:top}
.meta th{white-space:nowrap}
.meta td{padding:2px 0;word-break:break-word}
pre.text{font:inherit}
details{margin-top:24px}summary{cursor:pointer;font-weight:600}
.mechanical{color:var(--muted);font-style:italic}
"""

__all__ = ["ReportData", "ReportOutput", "ReportPair", "ReportSubject", "ReportUser", "media_type_of",
           "write_report"]
