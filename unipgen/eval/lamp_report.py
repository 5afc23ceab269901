"""The LaMP-style harness's report: `lamp.json`, `lamp.md`, `lamp.html` and a bar plot of the
headline metric of every method beside the baselines, the gains with their intervals, where the
scored answers came from (the user model's sources), and the first answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unipgen.tiny import MECHANICAL

METRICS = {"classification": ("acc", "f1_macro", "rouge1", "unmapped"), "rating": ("mae", "rmse", "unparsed"),
           "generation": ("rouge1", "rougeL", "bleu")}
HEADLINE = {"classification": ("acc", "f1_macro"), "rating": ("mae", "rmse"), "generation": ("rouge1", "rougeL")}
MEANING = {"classification": "acc: share of answers naming a gold label; f1_macro: mean F1 over the label set; "
                             "unmapped: share of answers naming no label.",
           "rating": "mae / rmse: error of the rating in stars (no digit: the worst rating); "
                     "unparsed: share with no digit.",
           "generation": "rouge1 / rougeL: ROUGE-1 / ROUGE-L F1 with the user's own text (0-1); "
                         "bleu: corpus BLEU (0-100)."}


def write_lamp_report(out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
    """`lamp.json`, `.md`, `.html` and the bar plot `lamp-metrics.png` (headline metrics per method) in `out_dir`."""
    from unipgen.eval import report
    from unipgen.eval.report import Heading, Image, Paragraph, Table

    kind = result["kind"]
    metrics = METRICS[kind]
    rows = [name for name in (*result["methods"], *result["baselines"]) if f"{HEADLINE[kind][0]}_{name}" in result]
    panel = report.BarPanel("lower is better" if kind == "rating" else "higher is better", list(HEADLINE[kind]),
                            {name: [result[f"{m}_{name}"] for m in HEADLINE[kind]] for name in rows})
    plot = report.bars_png(out_dir / "lamp-metrics.png", [panel],
                           title=f"{result['task']}: {result['n_questions']} questions, profile {result['profile']!r}")
    blocks: list[Any] = [Paragraph(
        f"{result['task']} from {result['data']}: {result['n_questions']} questions, {result['n_users']} users, "
        f"model {result['settings']['ref']} (profile {result['profile']!r}), {result['settings']['decoding']}; "
        f"{result['seconds']} s on {result['machine']['cpu']}."), Paragraph(MEANING[kind])]
    if result.get("score_kind") == MECHANICAL:
        blocks.append(Paragraph(f"Every figure here is a {MECHANICAL}: the answers come from a random-weight LM, so "
                                "these numbers check the harness and say nothing about the methods."))
    blocks += [Heading("Scores"),
               Table(["method", *metrics, "seconds"],
                     [[name, *(result.get(f"{m}_{name}") for m in metrics), result.get(f"seconds_{name}")]
                      for name in rows]),
               Image(plot.name, "Headline metrics per method (the baselines need no model)")]
    for key, title in (("acc_gain_ci95", "Accuracy gains"), ("mae_gain_ci95", "MAE reductions")):
        if key in result:
            by_user = result.get(f"{key}_users", {})
            blocks += [Heading(f"{title} (paired bootstrap 95% intervals: over questions, over users)"),
                       Table(["comparison", "gain", "low", "high", "low (users)", "high (users)"],
                             [[name, *values, *by_user.get(name, [None, None, None])[1:]]
                              for name, values in result[key].items()])]
    if result.get("sources"):
        blocks += [Heading("Where the scored answers came from (mean share of the answer's probability)"),
                   Table(["method", "model", "prior", "neighbours"],
                         [[name, *(shares.get(s) for s in ("model", "prior", "neighbours"))]
                          for name, shares in result["sources"].items()])]
    shown = result["answers"][:10]
    blocks += [Heading(f"Answers (first {len(shown)})"),
               Table(["question", "gold", *result["methods"]],
                     [[a["question"], _cell(", ".join(a["golds"])), *(_cell(a[m]) for m in result["methods"])]
                      for a in shown])]
    files = report.write_report(out_dir, "lamp", f"LaMP-style evaluation: {result['task']}", blocks,
                                result | {"report": {"plot": str(plot), **{k: str(out_dir / f"lamp.{e}") for k, e in
                                          (("json", "json"), ("markdown", "md"), ("html", "html"))}}})
    return {**files.as_dict(), "plot": str(plot)}


def _cell(text: str, width: int = 80) -> str:
    """An answer as one table cell: one line, no pipes (Markdown), at most `width` characters."""
    return " ".join(text.split()).replace("|", "/")[:width]


__all__ = ["HEADLINE", "METRICS", "write_lamp_report"]
