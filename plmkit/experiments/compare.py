"""`plmkit compare`: to tune or not to tune, on one task and model with one budget and seed.

Five runs: feature extraction from the last layer, feature extraction with a learned
scalar mix, partial fine-tuning (the bottom half of the layers run once and cached, the top
half and the head trained: mode=partial), plain fine-tuning, and fine-tuning with the three
tricks (slanted triangular LR, discriminative LR, gradual unfreezing). Every run gets the same epochs, batch size
and seed; feature heads get their own learning rate (`feature_lr`), as a frozen encoder
with a fresh head wants a larger one. The report: a table of dev and test metrics and
wall times, learning curves, and the scalar mix's layer weights.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from plmkit import api
from plmkit.io import atomic_write_json
from plmkit.report.plots import plot_layer_weights, plot_learning_curves
from plmkit.report.tables import Report, write_report

TRICKS = {"schedule": "stlr", "layer_lr_decay": 0.95, "gradual_unfreeze": True}


def variants(feature_lr: float, feature_head: str, partial_freeze: int) -> dict[str, dict[str, Any]]:
    """Run name -> the overrides that make it, on top of the shared recipe."""
    features = {"mode": "features", "lr": feature_lr, "head": feature_head, "warmup_ratio": 0.0}
    return {
        "features, last layer": features | {"layers": "last"},
        "features, scalar mix": features | {"layers": "mix"},
        f"partial, bottom {partial_freeze} cached": {
            "mode": "partial",
            "freeze_layers": partial_freeze,
            "gradual_unfreeze": False,
        },
        "fine-tuning": {"mode": "finetune"},
        "fine-tuning + tricks": {"mode": "finetune"} | TRICKS,
    }


def _test_spec(train: str, test: str | None) -> str | None:
    if test is not None:
        return test
    return ":".join(train.split(":")[:2]) + ":test" if train.startswith("builtin:") else None


def compare(
    task: str,
    model: str,
    train: str,
    output: str | Path,
    *,
    dev: str | None = None,
    test: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    feature_lr: float = 1e-3,
    keep_models: bool = False,
    only: list[str] | None = None,
    command: str | None = None,
    partial_freeze: int | None = None,
) -> dict[str, Any]:
    """Run the five variants; write report.md, report.html, results.json and PNGs in `output`.
    `partial_freeze`: the layers the partial run caches (default: half the model's)."""
    from plmkit.config import TrainConfig, build_config, without_inapplicable
    from plmkit.errors import ConfigError
    from plmkit.models.encoders import load_config, resolve_model
    from plmkit.models.feature_heads import DEFAULT_HEADS
    from plmkit.registry import TASKS
    from plmkit.tasks import classification, tagging  # noqa: F401  (each registers its tasks)

    shared = dict(overrides or {}) | {"task": task, "model": model}
    cfg = build_config(TrainConfig, config, shared)
    n_layers = load_config(resolve_model(cfg.model), cfg.trust_remote_code).num_hidden_layers
    runs = variants(
        feature_lr, DEFAULT_HEADS[TASKS.get(cfg.task).feature_kind], partial_freeze or max(1, n_layers // 2)
    )
    unknown = sorted(set(only or []) - set(runs))
    if unknown:
        raise ConfigError(f"compare: unknown run {unknown[0]!r}; known: {', '.join(runs)}")
    options = TASKS.get(cfg.task).options
    for name, extra in runs.items():  # every run's config is valid before the first one starts
        # the recipe's and the command line's options apply to the runs they do something for; the
        # others (head_lr in feature mode, cache_dir when fine-tuning, ...) stay at their defaults there
        reset = without_inapplicable(build_config(TrainConfig, config, shared | extra), options)
        if reset:
            print(f"compare: {name}: {', '.join(reset)} left at the default (no effect in this run)", flush=True)
        runs[name] = extra | reset
        build_config(TrainConfig, config, shared | runs[name])
    main = TASKS.get(cfg.task).main_metric
    test = _test_spec(train, test)
    output = Path(output)
    models = output / "models"
    n_groups = n_layers + 2
    rows, curves, layer_weights = [], {}, None
    started = time.time()
    for name, extra in runs.items():
        if only and name not in only:
            continue
        if extra.get("gradual_unfreeze"):
            # unfreeze every group by half-way through the same number of steps plain fine-tuning took
            steps = next((r["steps"] for r in rows if r["run"] == "fine-tuning"), None)
            if steps:
                extra = extra | {"unfreeze_every": max(1, math.ceil(steps / 2 / n_groups))}
        print(f"== {name}", flush=True)
        out = models / name.replace(" ", "-").replace(",", "").replace("+", "and")
        result = api.train(train, out, dev=dev, config=config, overrides=shared | extra, command=command)
        scores = api.evaluate(out, test) if test else {}
        row = {
            "run": name,
            f"dev_{main}": result["dev_metrics"].get(f"dev_{main}"),
            "best_epoch": result["best_epoch"],
            "steps": result["steps"],
            "seconds": round(result["seconds"]),
            "extract_seconds": round(result["extract_seconds"]) if result.get("extract_seconds") is not None else None,
            "unfreeze_every": extra.get("unfreeze_every"),
        }
        row |= {f"test_{k}": v for k, v in scores.items() if isinstance(v, float)}
        rows.append(row)
        meta = json.loads((out / "plmkit.json").read_text(encoding="utf-8"))
        curves[name] = {"losses": result["losses"], "history": meta.get("history", [])}
        if extra.get("layers") == "mix":
            layer_weights = {"weights": meta["layer_weights"], "gamma": meta["gamma"]}
        print(json.dumps(row, ensure_ascii=False), flush=True)
    output.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(curves, output / "learning_curves.png", f"dev_{main}", f"{cfg.task} on {Path(cfg.model).name}")
    if layer_weights:
        plot_layer_weights(layer_weights["weights"], output / "layer_weights.png", gamma=layer_weights["gamma"])
    test_keys = sorted({k for r in rows for k in r if k.startswith("test_")})
    columns = (
        [("run", "run"), (f"dev_{main}", f"dev {main}")]
        + [(k, k.replace("_", " ")) for k in test_keys]
        + [("best_epoch", "best epoch"), ("seconds", "seconds"), ("extract_seconds", "of which extraction")]
    )
    summary = {
        "task": cfg.task,
        "model": cfg.model,
        "train": train,
        "dev": dev,
        "test": test,
        "epochs": cfg.loop.epochs,
        "batch_size": cfg.loop.batch_size,
        "lr": cfg.loop.lr,
        "feature_lr": feature_lr,
        "seed": cfg.loop.seed,
        "tricks": TRICKS,
        "runs": rows,
        "layer_weights": layer_weights,
        "seconds": round(time.time() - started, 1),
        "command": command,
    }
    report = Report(
        f"To tune or not to tune: {cfg.task} on {cfg.model}",
        [
            (
                "text",
                f"Same budget for every run: {cfg.loop.epochs} epochs, batch size {cfg.loop.batch_size}, seed "
                f"{cfg.loop.seed}. Fine-tuning lr {cfg.loop.lr}; feature heads lr {feature_lr}. Trained on `{train}`, "
                f"chosen on its dev split" + (f", scored on `{test}`." if test else "."),
            ),
            (
                "text",
                "Tricks: slanted triangular LR (cut_frac 0.1, ratio 32), layer_lr_decay 0.95, gradual unfreezing "
                "(top down, one layer group at a time, all unfrozen half-way through training).",
            ),
            ("table", (rows, columns)),
            ("heading", "Learning curves"),
            ("image", ("learning_curves.png", "learning curves")),
        ]
        + (
            [("heading", "Scalar mix"), ("image", ("layer_weights.png", "learned layer weights"))]
            if layer_weights
            else []
        )
        + ([("code", command)] if command else []),
    )
    write_report(report, output, "report")
    atomic_write_json(output / "results.json", summary)
    if not keep_models:
        shutil.rmtree(models, ignore_errors=True)
    return summary
