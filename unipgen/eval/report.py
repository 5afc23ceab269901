"""Write a benchmark's result as JSON, Markdown and HTML, with matplotlib plots as PNG.

A report is a title and a list of blocks (`Heading`, `Paragraph`, `Table`, `Image`); the same
blocks render to Markdown and to a self-contained HTML page whose images are linked files beside
it. Harnesses build the blocks, draw plots with `scatter_png`, `bars_png` or `histogram_png`, and
call `write_report`. Plots use matplotlib's Agg canvas directly (no pyplot, no display, no global
backend switch).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]  # floats are printed with `digits` decimals, None as "–"
    digits: int = 3


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report's folder
    caption: str = ""
    width: int | None = None  # HTML display width in pixels


Block = Heading | Paragraph | Table | Image


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    lines = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.headers) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            lines += ["| " + " | ".join(_cell(v, block.digits) for v in row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{block.caption}]({block.path})", ""]
    return "\n".join(lines)


_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
          "th{background:#eee}td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:4px}"
          "figcaption{font-size:small;color:#555}")


def render_html(title: str, blocks: Sequence[Block]) -> str:
    esc = html.escape
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
    parts = [f"{head}<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            parts.append(f"<h{level}>{esc(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
            body = "".join("<tr>" + "".join(f"<td>{esc(_cell(v, block.digits))}</td>" for v in row) + "</tr>"
                           for row in block.rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            width = f" width='{block.width}'" if block.width else ""
            parts.append(f"<figure><a href='{esc(block.path)}'><img src='{esc(block.path)}'{width} "
                         f"alt='{esc(block.caption)}'></a><figcaption>{esc(block.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    html: Path

    def as_dict(self) -> dict[str, str]:
        return {"json": str(self.json), "markdown": str(self.markdown), "html": str(self.html)}


def write_report(out_dir: Path, stem: str, title: str, blocks: Sequence[Block], result: Mapping[str, Any]) -> ReportFiles:
    """Write `<stem>.json` (the result), `<stem>.md` and `<stem>.html` (the blocks) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if isinstance(block, Image) and not (out_dir / block.path).is_file():
            raise InvalidInputError(f"report image {block.path!r} is not a file in {out_dir}")
    files = ReportFiles(out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.html")
    files.json.write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    files.markdown.write_text(render_markdown(title, blocks), encoding="utf-8")
    files.html.write_text(render_html(title, blocks), encoding="utf-8")
    return files


@dataclass(frozen=True)
class Series:
    """Points of one kind on a scatter plot; `mean` adds a larger marker at their centroid."""

    label: str
    points: Sequence[tuple[float, float]]
    marker: str = "o"
    mean: bool = True


@dataclass(frozen=True)
class Panel:
    x_label: str
    y_label: str
    series: Sequence[Series]
    title: str = ""
    #: label → (x, y) drawn as stars, e.g. published numbers
    references: Mapping[str, tuple[float, float]] = field(default_factory=dict)


def scatter_png(path: Path, panels: Sequence[Panel], title: str = "") -> Path:
    """Draw `panels` side by side as scatter plots and save a PNG at `path` (matplotlib, Agg)."""
    figure, _canvas = _figure(len(panels), height=4.6)
    colors = [f"C{i}" for i in range(10)]
    for number, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), number + 1)
        for index, series in enumerate(panel.series):
            color = colors[index % len(colors)]
            if series.points:
                xs, ys = zip(*series.points, strict=True)
                axes.scatter(xs, ys, marker=series.marker, color=color, alpha=0.55, label=series.label)
                if series.mean and len(series.points) > 1:
                    axes.scatter([sum(xs) / len(xs)], [sum(ys) / len(ys)], marker=series.marker, color=color,
                                 s=160, edgecolors="black", linewidths=1.2)
        for label, (x, y) in panel.references.items():
            axes.scatter([x], [y], marker="*", s=180, color="gold", edgecolors="black", linewidths=0.8)
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
        axes.set_xlabel(panel.x_label)
        axes.set_ylabel(panel.y_label)
        axes.set_title(panel.title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    return _save(figure, path, title)


@dataclass(frozen=True)
class BarPanel:
    """Grouped bars: one group per `groups` entry, one bar per series (label → one value per group)."""

    y_label: str
    groups: Sequence[str]
    series: Mapping[str, Sequence[float]]
    title: str = ""


@dataclass(frozen=True)
class HistogramPanel:
    """Overlaid histograms of several samples (label → values) on shared bins, normalised to densities."""

    x_label: str
    series: Mapping[str, Iterable[float]]  # lists or arrays
    title: str = ""
    bins: int = 30


def _figure(count: int, height: float = 4.2) -> tuple[Any, Any]:
    """A figure of `count` panels side by side, with its Agg canvas (kept: the figure draws on it)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not count:
        raise InvalidInputError("no panels to plot")
    figure = Figure(figsize=(5.5 * count, height), dpi=110)
    return figure, FigureCanvasAgg(figure)


def _save(figure: Any, path: Path, title: str) -> Path:
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def bars_png(path: Path, panels: Sequence[BarPanel], title: str = "") -> Path:
    """Draw `panels` side by side as grouped bar charts and save a PNG at `path` (matplotlib, Agg)."""
    figure, _canvas = _figure(len(panels))
    for number, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), number + 1)
        width = 0.8 / max(len(panel.series), 1)
        for index, (label, values) in enumerate(panel.series.items()):
            if len(values) != len(panel.groups):
                raise InvalidInputError(f"series {label!r} has {len(values)} values for {len(panel.groups)} groups")
            xs = [g + (index - (len(panel.series) - 1) / 2) * width for g in range(len(panel.groups))]
            axes.bar(xs, values, width=width, label=label, color=f"C{index % 10}")
        axes.set_xticks(range(len(panel.groups)), list(panel.groups))
        axes.set_ylabel(panel.y_label)
        axes.set_title(panel.title, fontsize=10)
        axes.grid(alpha=0.3, axis="y")
        axes.legend(fontsize=7, loc="best")
    return _save(figure, path, title)


def histogram_png(path: Path, panels: Sequence[HistogramPanel], title: str = "") -> Path:
    """Draw `panels` side by side as overlaid density histograms and save a PNG at `path`."""
    figure, _canvas = _figure(len(panels))
    for number, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), number + 1)
        samples = [list(map(float, v)) for v in panel.series.values()]
        pooled = [x for sample in samples for x in sample]
        low, high = (min(pooled), max(pooled)) if pooled else (0.0, 1.0)
        edges = [low + (high - low) * i / panel.bins for i in range(panel.bins + 1)] if high > low else panel.bins
        for index, (label, sample) in enumerate(zip(panel.series, samples, strict=True)):
            if sample:
                axes.hist(sample, bins=edges, density=True, alpha=0.5, label=f"{label} (n={len(sample)})",
                          color=f"C{index % 10}")
        axes.set_xlabel(panel.x_label)
        axes.set_ylabel("density")
        axes.set_title(panel.title, fontsize=10)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="best")
    return _save(figure, path, title)
