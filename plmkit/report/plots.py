"""Plots people would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from plmkit.io import atomic_path


def plot_loss_curve(losses: Sequence[Sequence[float]], path: str | Path, title: str = "pretraining loss",
                    dev: Sequence[Sequence[float]] = ()) -> None:
    """losses: [step, training loss] rows; dev: [step, dev loss] rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if losses:
        ax.plot([s for s, _ in losses], [v for _, v in losses], label="train")
    if dev:
        ax.plot([s for s, _ in dev], [v for _, v in dev], "o-", label="held-out")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
