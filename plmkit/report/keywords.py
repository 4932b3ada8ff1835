"""What `plmkit keywords` writes: keywords.json, keywords.png and report.md / report.html."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from plmkit.io import atomic_write_json
from plmkit.report.plots import plot_keywords
from plmkit.report.tables import Report, write_report


def write_keywords(output: str | Path, groups: dict[str, Sequence[tuple[str, float]]], title: str) -> list[Path]:
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output / "keywords.json", {g: [[w, s] for w, s in kws] for g, kws in groups.items()})
    plot_keywords(groups, output / "keywords.png", title)
    depth = max(len(k) for k in groups.values())
    rows = [{"rank": i + 1} | {g: f"{kws[i][0]} {kws[i][1]:.3f}" if i < len(kws) else None for g, kws in groups.items()}
            for i in range(depth)]  # fmt: skip
    blocks = [("table", (rows, [("rank", "#")] + [(g, g) for g in groups])), ("image", ("keywords.png", "keywords"))]
    return [output / "keywords.json", output / "keywords.png", *write_report(Report(title, blocks), output)]
