"""What `plmkit evaluate` writes beside its numbers: metrics.json, a confusion matrix (classes) or
per-type precision/recall/F1 bars (entity types), and report.md / report.html showing them. The
pictures sit next to the page, which needs no network to open."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plmkit.io import atomic_write_json
from plmkit.report.plots import plot_confusion, plot_per_type
from plmkit.report.tables import Report, write_report


def write_evaluation(output: str | Path, metrics: dict[str, Any], labels: Sequence[str], title: str) -> list[Path]:
    """The files of one evaluation in `output`, each written atomically; returns their paths."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    blocks: list[tuple[str, Any]] = [("table", ([scalars], [(k, k.replace("_", " ")) for k in scalars]))]
    written = [output / "metrics.json"]
    if metrics.get("confusion"):
        plot_confusion(metrics["confusion"], labels, output / "confusion.png", f"{title}: confusion matrix")
        rows = [{"gold": g} | {p: c for p, c in zip(labels, row)} for g, row in zip(labels, metrics["confusion"])]
        blocks += [
            ("heading", "Confusion matrix"),
            ("text", "Gold class by row, predicted class by column."),
            ("table", (rows, [("gold", "gold \\ predicted")] + [(p, p) for p in labels])),
            ("image", ("confusion.png", "confusion matrix")),
        ]
        written.append(output / "confusion.png")
    if metrics.get("per_type"):
        per_type = metrics["per_type"]
        plot_per_type(per_type, output / "per_type.png", f"{title}: by type")
        rows = [{"type": t} | per_type[t] for t in sorted(per_type)]
        columns = [("type", "type"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("support", "n")]
        blocks += [("heading", "By type"), ("table", (rows, columns)), ("image", ("per_type.png", "scores by type"))]
        written.append(output / "per_type.png")
    atomic_write_json(output / "metrics.json", metrics)
    return written + list(write_report(Report(title, blocks), output))
