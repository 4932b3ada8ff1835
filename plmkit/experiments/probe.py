"""`plmkit probe-layers`: an identical small probe trained on each layer's frozen output alone.

The encoder runs once (the feature cache is shared by every probe); each probe is the
task's feature-mode head (a pooled MLP for texts, a per-unit linear layer for tagging)
reading one layer. The dev metric by layer says where the task's information sits.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from plmkit import api
from plmkit.io import atomic_write_json
from plmkit.report.plots import plot_by_layer
from plmkit.report.tables import Report, markdown_table, write_report

PROBE_HEADS = {"tagging": "softmax", "pair": "mlp", "sequence": "mlp"}
PROBE_DEFAULTS = {"epochs": 3, "lr": 1e-3, "batch_size": 32, "warmup_ratio": 0.0, "feature_cache": "disk"}


def probe_layers(
    task: str,
    model: str,
    data: str,
    output: str | Path,
    *,
    dev: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train one probe per layer (0 = embeddings) on `data`, scored on its dev split; write
    results.json, results.md, results.html and probe.png in `output`."""
    from plmkit.config import TrainConfig, build_config, without_inapplicable
    from plmkit.models.encoders import load_config, resolve_model
    from plmkit.registry import TASKS
    from plmkit.tasks import classification, tagging  # noqa: F401  (each registers its tasks)

    base = PROBE_DEFAULTS | dict(overrides or {}) | {"task": task, "model": model, "mode": "features"}
    cfg = build_config(TrainConfig, config, base)  # checks every key before any work starts
    reset = without_inapplicable(cfg, TASKS.get(cfg.task).options)
    if reset:  # a fine-tuning recipe's head_lr, keep_layers, ... do nothing for a probe on frozen layers
        print(f"probe-layers: {', '.join(reset)} left at the default (no effect on a probe)", flush=True)
        base |= reset
    kind = TASKS.get(cfg.task).feature_kind
    head = cfg.head or PROBE_HEADS[kind]
    n_layers = load_config(resolve_model(cfg.model), cfg.trust_remote_code).num_hidden_layers + 1
    main = TASKS.get(cfg.task).main_metric
    output = Path(output)
    rows, started = [], time.time()
    with tempfile.TemporaryDirectory(prefix="plmkit-probe-") as tmp:
        for layer in range(n_layers):
            result = api.train(
                data,
                Path(tmp) / f"layer-{layer}",
                dev=dev,
                config=config,
                overrides=base | {"head": head, "layers": str(layer)},
                command=command,
            )
            best = result["dev_metrics"]
            rows.append(
                {
                    "layer": layer,
                    "name": "embeddings" if layer == 0 else f"layer {layer}",
                    f"dev_{main}": best.get(f"dev_{main}"),
                    "best_epoch": result["best_epoch"],
                    "seconds": round(result["seconds"]),
                    "cache_hit": result["cache_hit"],
                }
            )
            print(f"layer {layer}: dev {main} {best.get(f'dev_{main}')}  ({result['seconds']}s)", flush=True)
    values = [r[f"dev_{main}"] for r in rows]
    best_layer = max(range(len(values)), key=lambda i: values[i] if values[i] is not None else float("-inf"))
    result = {
        "task": cfg.task,
        "model": cfg.model,
        "data": data,
        "dev": dev,
        "probe": head,
        "metric": f"dev_{main}",
        "layers": rows,
        "best_layer": best_layer,
        "seconds": round(time.time() - started, 1),
        "command": command,
    }
    output.mkdir(parents=True, exist_ok=True)
    plot_by_layer(
        {f"{cfg.task} (dev {main})": values},
        output / "probe.png",
        f"dev {main}",
        f"{head} probe on each layer of {Path(cfg.model).name}",
    )
    report = Report(
        f"Layer probe: {cfg.task} on {cfg.model}",
        [
            (
                "text",
                f"An identical `{head}` probe trained on each layer's frozen output alone "
                f"({cfg.loop.epochs} epochs, lr {cfg.loop.lr}, seed {cfg.loop.seed}); data `{data}`, "
                f"scored on its dev split. Layer 0 is the embeddings. Best: layer {best_layer}.",
            ),
            (
                "table",
                (
                    rows,
                    [
                        ("name", "layer"),
                        (f"dev_{main}", f"dev {main}"),
                        ("best_epoch", "best epoch"),
                        ("seconds", "seconds"),
                    ],
                ),
            ),
            ("image", ("probe.png", "dev metric by layer")),
        ]
        + ([("code", command)] if command else []),
    )
    write_report(report, output, "results")
    atomic_write_json(output / "results.json", result)
    print(markdown_table(rows, [("name", "layer"), (f"dev_{main}", f"dev {main}")]))
    return result
