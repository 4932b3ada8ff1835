"""The shipped encoder against its own architecture and vocabulary from random weights, in one run.

    python bench/default_vs_random.py [key=value ...]

Both fine-tune on review sentiment with the demo recipe (configs/demo.yaml: 2 epochs, lr 1e-4,
seed 42) and are scored on dev and test. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from plmkit import api
from plmkit.cli import quiet_libraries
from plmkit.config import parse_overrides


def main(argv: list[str]) -> dict:
    from transformers import AutoConfig, BertForMaskedLM

    from plmkit.models.encoders import load_tokenizer, resolve_model
    from plmkit.models.saving import save_model_dir

    quiet_libraries()
    overrides = parse_overrides(argv) | {"progress": "false"}
    source = resolve_model("default-zh")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="plmkit-bench-") as tmp:
        torch.manual_seed(42)
        save_model_dir(
            Path(tmp) / "random", BertForMaskedLM(AutoConfig.from_pretrained(source)), load_tokenizer(source)
        )
        for name, model in (("default-zh", "default-zh"), ("random init", str(Path(tmp) / "random"))):
            started, out = time.time(), Path(tmp) / f"tuned-{len(rows)}"
            result = api.train(
                "builtin:reviews", out, config=api.CONFIGS / "demo.yaml", overrides=overrides | {"model": model}
            )
            test = api.evaluate(out, "builtin:reviews:test")
            rows[name] = {
                "dev_accuracy": round(result["dev_metrics"]["dev_accuracy"], 4),
                "test_accuracy": round(test["accuracy"], 4),
                "seconds": round(time.time() - started, 1),
            }
            print(name, rows[name], flush=True)
    return rows


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), ensure_ascii=False))
