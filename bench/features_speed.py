"""Feature extraction against fine-tuning: wall time of N epochs each, same data, model and seed.

    python bench/features_speed.py [--task classification] [--train builtin:reviews] [--epochs 5] [key=value ...]

Both runs use the task's recipe (configs/demo.yaml for classification, configs/<task>.yaml
otherwise) with the same epochs, batch size and seed. The feature-mode run keeps its cache
in memory, so its time includes the one pass of the encoder over train and dev. The last
line printed is one JSON object: both runs' wall times, dev and test metrics, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from plmkit import api
from plmkit.cli import quiet_libraries
from plmkit.config import parse_overrides
from plmkit.registry import TASKS


def _run(train: str, out: Path, recipe: Path, overrides: dict, test: str | None) -> dict:
    started = time.time()
    result = api.train(train, out, config=recipe, overrides=overrides)
    seconds = round(time.time() - started, 1)
    scores = api.evaluate(out, test) if test else {}
    history = result["history"]
    return {
        "seconds": seconds,
        "extract_seconds": result.get("extract_seconds"),
        "epoch_seconds": [round(b["seconds"] - a, 2) for a, b in zip([0.0] + [h["seconds"] for h in history], history)],
        "dev": result["dev_metrics"],
        "test": {k: v for k, v in scores.items() if isinstance(v, float)},
    }


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--task", default="classification")
    p.add_argument("--train", default="builtin:reviews")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--feature-lr", type=float, default=1e-3)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    recipe = api.CONFIGS / ("demo.yaml" if args.task == "classification" else f"{args.task}.yaml")
    shared = parse_overrides(args.overrides) | {"task": args.task, "epochs": args.epochs, "progress": "false"}
    test = ":".join(args.train.split(":")[:2]) + ":test" if args.train.startswith("builtin:") else None
    from plmkit.models.feature_heads import DEFAULT_HEADS
    from plmkit.train.run import tasks

    tasks()  # every task registered, so an unknown --task lists them all

    features = shared | {
        "mode": "features",
        "feature_cache": "memory",
        "lr": args.feature_lr,
        "warmup_ratio": 0.0,
        "head": DEFAULT_HEADS[TASKS.get(args.task).feature_kind],
    }
    with tempfile.TemporaryDirectory(prefix="plmkit-bench-") as tmp:
        fine = _run(args.train, Path(tmp) / "finetune", recipe, shared, test)
        print(f"fine-tuning, {args.epochs} epochs: {fine['seconds']}s  dev {fine['dev']}", flush=True)
        feat = _run(args.train, Path(tmp) / "features", recipe, features, test)
        print(
            f"features, {args.epochs} epochs: {feat['seconds']}s (extraction {feat['extract_seconds']}s)  "
            f"dev {feat['dev']}",
            flush=True,
        )
    result = {
        "task": args.task,
        "train": args.train,
        "epochs": args.epochs,
        "finetune": fine,
        "features": feat,
        "speedup": round(fine["seconds"] / feat["seconds"], 2),
    }
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
