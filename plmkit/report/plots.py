"""Plots people would rather look at than read.

Every plot is a PNG written atomically: a failing plot leaves neither a file nor a
temporary behind, and an older plot at the same path stays as it was.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plmkit.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _cjk_font(plt)
    return plt


@functools.cache
def _cjk_font(plt) -> str | None:
    """Chinese labels (classes, keywords, entity types) drawn in Noto Sans CJK (OFL, the noto-cjk-sans-otc
    package), Latin text still in DejaVu Sans; without the package, matplotlib's default font."""
    try:
        from noto_cjk_sans_otc import FONT_PATH
    except ImportError:
        return None
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(FONT_PATH))
    name = font_manager.FontProperties(fname=str(FONT_PATH)).get_name()
    plt.rcParams["font.family"] = [name, "DejaVu Sans"]
    return name


@contextmanager
def _figure(**subplots_kw: Any) -> Iterator[tuple[Any, Any]]:
    """(figure, axes) from plt.subplots; the figure is closed however the block ends."""
    plt = _pyplot()
    fig, axes = plt.subplots(**subplots_kw)
    try:
        yield fig, axes
    finally:
        plt.close(fig)


def _save_png(fig: Any, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def layer_labels(n: int) -> list[str]:
    """Tick labels for n hidden states: the embedding output, then layers 1..n-1."""
    return ["emb"] + [str(i) for i in range(1, n)] if n > 0 else []


def _as_value(v: Any) -> float | None:
    """A plottable float, or None for a missing value (None or NaN); other junk raises."""
    if v is None:
        return None
    x = float(v)
    return None if math.isnan(x) else x


def best_index(values: Sequence[float | None], higher_is_better: bool = True) -> int | None:
    """Index of the best non-missing value (the first on ties), or None if all are missing."""
    present = [(i, x) for i, x in enumerate(map(_as_value, values)) if x is not None]
    if not present:
        return None
    pick = max if higher_is_better else min
    return pick(present, key=lambda p: p[1])[0]


def min_max_scale(values: Sequence[float | None], higher_is_better: bool = True) -> list[float | None]:
    """Scale to [0, 1] with 1 at the series' best; a constant series is all 1.0; None stays None."""
    xs = [_as_value(v) for v in values]
    present = [x for x in xs if x is not None]
    if not present:
        return xs
    lo, hi = min(present), max(present)
    if hi == lo:
        return [None if x is None else 1.0 for x in xs]
    return [None if x is None else ((x - lo) if higher_is_better else (hi - x)) / (hi - lo) for x in xs]


def plot_loss_curve(
    losses: Sequence[Sequence[float]],
    path: str | Path,
    title: str = "pretraining loss",
    dev: Sequence[Sequence[float]] = (),
) -> None:
    """losses: [step, training loss] rows; dev: [step, dev loss] rows."""
    with _figure(figsize=(6, 3.5)) as (fig, ax):
        if losses:
            ax.plot([s for s, _ in losses], [v for _, v in losses], label="train")
        if dev:
            ax.plot([s for s, _ in dev], [v for _, v in dev], "o-", label="held-out")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if losses or dev:  # a run too short to log a loss has no line to name
            ax.legend()
        _save_png(fig, path)


def plot_layer_weights(
    weights: Sequence[float], path: str | Path, title: str = "learned layer weights", gamma: float | None = None
) -> None:
    """Bar chart of a scalar mix's softmax weights, one bar per hidden state (emb, 1..N),
    against the uniform weight 1/len as a dashed line."""
    ws = [float(w) for w in weights]
    if not ws or not all(math.isfinite(w) for w in ws):
        raise ValueError(f"layer weights must be a non-empty list of finite numbers, got {list(weights)!r}")
    n = len(ws)
    with _figure(figsize=(max(6.0, 0.4 * n), 3.5)) as (fig, ax):
        ax.bar(range(n), ws, color="C0")
        ax.axhline(1.0 / n, color="grey", linestyle="--", linewidth=1, label=f"uniform (1/{n})")
        ax.set_xticks(range(n), layer_labels(n))
        ax.set_xlabel("layer")
        ax.set_ylabel("softmax weight")
        ax.set_title(title if gamma is None else f"{title} (gamma = {gamma:.3g})")
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
        _save_png(fig, path)


def plot_by_layer(
    series: dict[str, Sequence[float | None]],
    path: str | Path,
    ylabel: str,
    title: str,
    normalise: bool = False,
    higher_is_better: bool = True,
) -> None:
    """One line per series against the layer (emb, 1..N), the best layer of each starred.

    None (or NaN) values are skipped. normalise=True min-max scales each series to [0, 1]
    with 1 at its best, for series on different scales (accuracy beside word F1, say).
    """
    if not series:
        raise ValueError("plot_by_layer needs at least one series")
    scaled = {
        name: (min_max_scale(vs, higher_is_better) if normalise else [_as_value(v) for v in vs])
        for name, vs in series.items()
    }
    n = max(len(vs) for vs in scaled.values())
    with _figure(figsize=(max(6.0, 0.4 * n), 4)) as (fig, ax):
        for i, (name, ys) in enumerate(scaled.items()):
            ax.plot(range(len(ys)), [math.nan if y is None else y for y in ys], "o-", color=f"C{i % 10}", label=name)
        starred = False
        for i, ys in enumerate(scaled.values()):  # after the lines, so stars sit on top and last in the legend
            best = best_index(ys, higher_is_better or normalise)
            if best is not None:
                ax.plot(
                    [best],
                    [ys[best]],
                    "*",
                    color=f"C{i % 10}",
                    markersize=16,
                    markeredgecolor="black",
                    label="_nolegend_" if starred else "best layer",
                )
                starred = True
        ax.set_xticks(range(n), layer_labels(n))
        ax.set_xlabel("layer")
        ax.set_ylabel("relative to the series' best" if normalise else ylabel)
        if normalise:
            ax.set_ylim(-0.05, 1.1)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        _save_png(fig, path)


def _loss_by_fraction(losses: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """[step, loss] rows as (step / last step, loss), so runs of different lengths share an axis."""
    if not losses:
        return [], []
    last = max(float(s) for s, _ in losses) or 1.0
    return [float(s) / last for s, _ in losses], [float(v) for _, v in losses]


def _metric_by_epoch(history: Sequence[dict], metric: str) -> tuple[list[float], list[float]]:
    """(epoch, metric) for the history entries that carry the metric; epoch defaults to the entry's position."""
    points = [(float(h.get("epoch", i + 1)), _as_value(h.get(metric))) for i, h in enumerate(history)]
    points = [(e, v) for e, v in points if v is not None]
    return [e for e, _ in points], [v for _, v in points]


def plot_learning_curves(runs: dict[str, dict], path: str | Path, metric: str, title: str = "learning curves") -> None:
    """Left: training loss against the fraction of each run's training; right: the dev metric
    against the epoch. runs: name -> {"losses": [[step, loss], ...], "history": [{"epoch": .., metric: ..}, ...]}."""
    if not runs:
        raise ValueError("plot_learning_curves needs at least one run")
    curves = {
        name: (_loss_by_fraction(run.get("losses", [])), _metric_by_epoch(run.get("history", []), metric))
        for name, run in runs.items()
    }
    from matplotlib.lines import Line2D

    with _figure(ncols=2, figsize=(11, 4)) as (fig, (ax_loss, ax_metric)):
        handles = []
        for i, (name, ((fx, loss), (epochs, values))) in enumerate(curves.items()):
            colour = f"C{i % 10}"
            ax_loss.plot(fx, loss, color=colour, linewidth=1)
            ax_metric.plot(epochs, values, "o-", color=colour)
            handles.append(Line2D([], [], color=colour, marker="o", label=name))
        ax_loss.set_xlabel("fraction of training")
        ax_loss.set_ylabel("training loss")
        ax_loss.set_xlim(0, 1.02)
        ax_loss.grid(alpha=0.3)
        ax_metric.set_xlabel("epoch")
        ax_metric.set_ylabel(f"dev {metric.removeprefix('dev_')}")
        ax_metric.xaxis.get_major_locator().set_params(integer=True)
        ax_metric.grid(alpha=0.3)
        ax_metric.legend(handles=handles)
        fig.suptitle(title)
        _save_png(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str) -> None:
    """A confusion matrix: gold class by row, predicted by column, counts in the cells, shaded by each
    row's share (so a small class reads as clearly as a large one)."""
    counts = [[int(c) for c in row] for row in matrix]
    n = len(labels)
    if n == 0 or len(counts) != n or any(len(row) != n for row in counts):
        raise ValueError(f"confusion matrix must be {n} x {n} for labels {list(labels)!r}")
    shares = [[c / max(1, sum(row)) for c in row] for row in counts]
    size = max(3.5, 0.6 * n + 2)
    with _figure(figsize=(size + 1, size)) as (fig, ax):
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for i, row in enumerate(counts):
            for j, c in enumerate(row):
                ax.text(j, i, str(c), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
        ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, label="share of the gold row")
        _save_png(fig, path)


def plot_per_type(per_type: dict[str, dict[str, float]], path: str | Path, title: str) -> None:
    """Precision, recall and F1 of each type (entity types, say) side by side, with its support."""
    names = sorted(per_type)
    if not names:
        raise ValueError("no types to plot")
    metrics = ("precision", "recall", "f1")
    width = 0.8 / len(metrics)
    with _figure(figsize=(max(5.0, 1.4 * len(names) + 2), 3.8)) as (fig, ax):
        for k, metric in enumerate(metrics):
            xs = [i + (k - 1) * width for i in range(len(names))]
            ax.bar(xs, [float(per_type[t][metric]) for t in names], width, label=metric, color=f"C{k}")
        support = [f"{t}\n(n={per_type[t].get('support', '?')})" for t in names]
        ax.set_xticks(range(len(names)), support)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right")
        _save_png(fig, path)


def plot_keywords(groups: dict[str, Sequence[tuple[str, float]]], path: str | Path, title: str) -> None:
    """One horizontal bar chart per group (class), its keywords best on top."""
    if not groups or not any(groups.values()):
        raise ValueError("no keywords to plot")
    names = list(groups)
    rows = max(len(v) for v in groups.values())
    size = (3.6 * len(names) + 1, 0.28 * rows + 1.5)
    with _figure(nrows=1, ncols=len(names), figsize=size, squeeze=False) as (fig, axes):
        for ax, name in zip(axes[0], names):
            words = list(groups[name])[::-1]
            ax.barh(range(len(words)), [float(s) for _, s in words], color="C0")
            ax.set_yticks(range(len(words)), [w for w, _ in words])
            ax.set_title(name)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(title)
        _save_png(fig, path)
