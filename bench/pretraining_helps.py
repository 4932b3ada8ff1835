"""Does pretraining help, family by family? Review sentiment fine-tuned from each family's
pretrained model against the same architecture from random initialisation, in one run.

    python bench/pretraining_helps.py [--families bert albert ...] [--minutes 4] [--corpus builtin:reviews]
                                      [--epochs 2] [--output DIR] [key=value ...]

Every family pretrains for the same wall-clock budget (`--minutes`, equal compute on one machine)
at the same size (hidden 128, 2 layers, 2 heads, FFN 512, ALBERT embeddings 64, unless overridden by key=value, which go
to pretraining), on the training split of the reviews corpus, so nothing from dev or test leaks in.
Both fine-tunings of a family use the same vocabulary, recipe (configs/demo.yaml, `--epochs`;
ELMo at lr 1e-3, FINE_TUNE_LR), seed and split; the random-init model is the pretraining model as
built, saved before any step.
The last line printed is one JSON object: per family, parameters, pretraining seconds and steps, the
final pretraining loss (each family's own objective, so not comparable across families), and dev
and test accuracy from pretrained and from random weights.
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
from plmkit.config import PretrainConfig, build_config, parse_overrides

SIZE = {
    "hidden_size": "128",
    "num_layers": "2",
    "num_heads": "2",
    "intermediate_size": "512",
    "max_length": "128",
    "vocab_size": "8000",
    "epochs": "1000",
    "batch_size": "32",
    "lr": "5e-4",
    "warmup_ratio": "0.06",
    "heldout_fraction": "0.01",
    "log_steps": "20",
    "progress": "false",
    "albert.embedding_size": "64",
}
FAMILIES = ["bert", "albert", "roberta", "electra", "spanbert", "gpt", "elmo"]
FINE_TUNE_LR = {"elmo": 1e-3}  # the demo recipe's 1e-4 is a transformer's rate: an LSTM barely moves in an epoch at it


def random_init(arch_name: str, corpus: list[str], out: Path, overrides: dict) -> None:
    """The model `pretrain` would start from, saved untrained (its vocabulary is trained: that costs no steps)."""
    from plmkit.pretrain.archs import check_options
    from plmkit.pretrain.run import read_corpus

    cfg = build_config(PretrainConfig, None, overrides | {"arch": arch_name})
    arch = check_options(cfg)
    tokenizer = arch.make_tokenizer(read_corpus(corpus), cfg)
    import torch

    torch.manual_seed(cfg.loop.seed)
    arch.save(arch.build(cfg, tokenizer), tokenizer, out, {})


def fine_tune(model: Path, out: Path, epochs: int, lr: float | None) -> dict:
    started = time.time()
    overrides = {"model": str(model), "epochs": str(epochs), "progress": "false"} | ({"lr": str(lr)} if lr else {})
    result = api.train("builtin:reviews", out, config=api.CONFIGS / "demo.yaml", overrides=overrides)
    test = api.evaluate(out, "builtin:reviews:test")
    return {
        "dev_accuracy": round(result["dev_metrics"]["dev_accuracy"], 4),
        "test_accuracy": round(test["accuracy"], 4),
        "seconds": round(time.time() - started, 1),
    }


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--families", nargs="+", default=FAMILIES)
    p.add_argument("--minutes", type=float, default=4.0, help="pretraining wall-clock budget per family")
    p.add_argument("--corpus", nargs="+", default=["builtin:reviews"])
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (the demo recipe's 2)")
    p.add_argument("--output", help="keep the models here (default: a temporary folder)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    shared = SIZE | parse_overrides(args.overrides) | {"time_budget_minutes": str(args.minutes)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="plmkit-bench-") as tmp:
        root = Path(args.output or tmp)
        for family in args.families:
            lr = FINE_TUNE_LR.get(family)
            pre = api.pretrain(args.corpus, root / family / "pretrained", overrides=shared | {"arch": family})
            random_init(family, args.corpus, root / family / "random", shared)
            row = {
                "family": family,
                "parameters": pre["parameters"],
                "pretrain_seconds": pre["seconds"],
                "pretrain_steps": pre["history"][-1]["step"] if pre["history"] else 0,
                "final_loss": round(pre["losses"][-1][1], 4) if pre["losses"] else None,
                "fine_tune_lr": FINE_TUNE_LR.get(family, 1e-4),
                "pretrained": fine_tune(root / family / "pretrained", root / family / "tuned", args.epochs, lr),
                "random_init": fine_tune(root / family / "random", root / family / "tuned-random", args.epochs, lr),
            }
            row["gain"] = round(row["pretrained"]["dev_accuracy"] - row["random_init"]["dev_accuracy"], 4)
            rows.append(row)
            print(
                f"{family:<9} pretrained {row['pretrain_seconds']:>6}s ({row['pretrain_steps']} steps, loss "
                f"{row['final_loss']})  dev acc {row['pretrained']['dev_accuracy']:.4f} vs random "
                f"{row['random_init']['dev_accuracy']:.4f}  ({row['gain']:+.4f})",
                flush=True,
            )
    return {"minutes_per_family": args.minutes, "corpus": args.corpus, "fine_tune_epochs": args.epochs, "rows": rows}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), ensure_ascii=False))
