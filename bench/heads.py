"""Classification heads on one encoder, one recipe and one seed: review sentiment with `cls`, `pool`
(masked mean), `textcnn` and `rnn_cnn`, and the TF-IDF + logistic regression peer, all in one run.

    python bench/heads.py --output runs/bench-heads [--heads cls,pool,textcnn,rnn_cnn] [key=value ...]

An entry of `--heads` may carry options of its own after colons, so variants of a head sit in the
same table: `--heads pool,pool:word_fusion=add,pool:word_fusion=concat`.

Every head trains with configs/demo.yaml (e5-small, 1 epoch, batch 32, lr 5e-5, seed 42) plus the
overrides given; each is chosen on the dev split and scored on the test split. A head that finished
(its model directory holds a plmkit.json and its row is in results.json) is not trained again, so a
killed run picks up where it stopped. Writes results.json and results.md in `--output`; the last line
printed is the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from plmkit import api
from plmkit.cli import quiet_libraries
from plmkit.config import LoopConfig
from plmkit.data.builtin import load_builtin
from plmkit.io import atomic_write_json, atomic_write_text
from plmkit.peers import tfidf_logreg
from plmkit.train.loop import resolve_precision

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"cpu": cpu or platform.processor(), "precision": resolve_precision(LoopConfig().mixed_precision)}


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--output", required=True)
    p.add_argument("--heads", default="cls,pool,textcnn,rnn_cnn")
    p.add_argument("overrides", nargs="*", help="key=value on top of configs/demo.yaml")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    overrides = dict(kv.split("=", 1) for kv in args.overrides) | {"progress": "false"}
    results_file = out / "results.json"
    done = json.loads(results_file.read_text()) if results_file.is_file() else {}
    rows = {r["head"]: r for r in done.get("heads", [])}
    splits = {s: load_builtin(f"builtin:reviews:{s}") for s in ("train", "dev", "test")}
    peer = tfidf_logreg(splits["train"], splits["dev"], splits["test"])
    print(f"peer: dev {peer['dev_accuracy']:.4f} test {peer['test_accuracy']:.4f} ({peer['seconds']}s)", flush=True)
    for head in args.heads.split(","):
        name, *opts = head.split(":")
        variant = {"head": name} | dict(o.split("=", 1) for o in opts)
        model_dir = out / head.replace(":", "-").replace("=", "-")
        if head in rows and (model_dir / "plmkit.json").is_file():
            print(f"{head}: done before, {rows[head]}", flush=True)
            continue
        started = time.time()
        result = api.train(
            "builtin:reviews", model_dir, config=RECIPE, overrides=overrides | variant, command="bench/heads.py"
        )
        test = api.evaluate(model_dir, "builtin:reviews:test")
        rows[head] = {
            "head": head,
            "dev_accuracy": result["dev_metrics"].get("dev_accuracy"),
            "test_accuracy": test["accuracy"],
            "test_macro_f1": test["macro_f1"],
            "seconds": round(time.time() - started),
            "train_seconds": result["seconds"],
        }
        print(json.dumps(rows[head]), flush=True)
        summary = {"recipe": str(RECIPE.name), "overrides": overrides, "machine": machine(), "peer": peer}
        atomic_write_json(results_file, summary | {"heads": list(rows.values())})
    summary = {"recipe": str(RECIPE.name), "overrides": overrides, "machine": machine(), "peer": peer}
    summary |= {"heads": list(rows.values())}
    atomic_write_json(results_file, summary)
    lines = [
        "| head | dev accuracy | test accuracy | test macro F1 | seconds |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| `{r['head']}` | {r['dev_accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['test_macro_f1']:.4f} | "
            f"{r['seconds']} |"
            for r in rows.values()
        ),
        f"| peer: TF-IDF + LR (C={peer['C']}) | {peer['dev_accuracy']:.4f} | {peer['test_accuracy']:.4f} | | "
        f"{peer['seconds']} |",
    ]
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
