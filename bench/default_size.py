"""Choose the default Chinese encoder's size by measurement.

Each candidate is a pretrained model directory (from `plmkit pretrain`, same corpus, same
pretraining compute). Each is fine-tuned with the demo recipe (configs/demo.yaml) on
builtin:reviews and scored on the dev split; the wall time of the fine-tuning is reported
beside it, since the demo must finish in 10 minutes on 2 CPU cores.

    python bench/default_size.py RUN_DIR [RUN_DIR ...] [key=value ...]

The last line printed is a JSON list: one row per candidate.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from plmkit import api
from plmkit.cli import quiet_libraries
from plmkit.config import parse_overrides


def main(argv: list[str]) -> list[dict]:
    quiet_libraries()
    dirs = [a for a in argv if "=" not in a]
    overrides = parse_overrides([a for a in argv if "=" in a])
    rows = []
    for d in dirs:
        log = json.loads((Path(d) / "pretrain_log.json").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            out = api.train(
                "builtin:reviews",
                Path(tmp) / "m",
                config=api.CONFIGS / "demo.yaml",
                overrides={**overrides, "model": d},
            )
            seconds = time.time() - started
        rows.append(
            {
                "model": d,
                "parameters": log["parameters"],
                "hidden_size": log["config"]["hidden_size"],
                "num_layers": log["config"]["num_layers"],
                "pretrain_seconds": log["seconds"],
                "pretrain_steps": log["history"][-1]["step"] if log["history"] else None,
                "pretrain_dev_loss": min(h["dev_loss"] for h in log["history"]) if log["history"] else None,
                "finetune_seconds": round(seconds, 1),
                "dev_accuracy": out["dev_metrics"].get("dev_accuracy"),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
