"""Vocabulary pruning of e5-small: parameters, tokens that change, and training-step time, in one run.

Three forms of multilingual-e5-small: the whole vocabulary (`e5-small-full`), the script subset
the shipped name uses (`e5-small`: pieces made only of CJK, ASCII and punctuation), and the pieces
the shipped training corpus uses (`plmkit prune-vocab --corpus builtin:default`). For each: its
parameter count, the share of test-review tokens segmented differently from the full vocabulary,
and the median time of a training step (batch 32 of real training reviews cut to 64 tokens,
AdamW over every parameter as plmkit's loop builds it, the run's precision) on real review batches.

    python bench/prune_speed.py [--steps 6] [--precision auto|no|bf16]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from plmkit import api
from plmkit.cli import quiet_libraries
from plmkit.config import LoopConfig
from plmkit.data.builtin import load_builtin
from plmkit.models.encoders import resolve_model
from plmkit.train.loop import prefer_fast_attention, resolve_precision
from plmkit.train.optim import build_optimizer


def step_seconds(model_dir: str, texts: list[str], steps: int, precision: str) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2, use_safetensors=True)
    prefer_fast_attention(model, precision, torch.device("cpu"))
    opt = build_optimizer(model, LoopConfig(lr=1e-5))  # plmkit's own: AdamW as the training loop builds it
    times = []
    for k in range(steps + 1):
        batch = tok(texts[32 * k : 32 * (k + 1)], padding=True, truncation=True, max_length=64, return_tensors="pt")
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(**batch).logits  # (B, 2)
        torch.nn.functional.cross_entropy(logits.float(), torch.arange(len(logits)) % 2).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])  # the first step warms up


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--precision", default="auto")
    args = p.parse_args(argv)
    precision = resolve_precision(args.precision)
    texts = [ex.text for ex in load_builtin("builtin:reviews")][: 32 * (args.steps + 1)]
    result = {"precision": precision, "cpu": _cpu(), "forms": {}}
    with tempfile.TemporaryDirectory(prefix="plmkit-prune-") as tmp:
        corpus_dir = f"{tmp}/e5-small-corpus"
        pruned = api.prune_vocab(
            "e5-small-full", corpus_dir, corpus=["builtin:default"], check=["builtin:reviews:test"]
        )
        script = api.prune_vocab(
            "e5-small-full", f"{tmp}/script", keep="cjk,ascii,punct", check=["builtin:reviews:test"]
        )
        forms = {
            "e5-small-full": (resolve_model("e5-small-full"), None),
            "e5-small (cjk,ascii,punct)": (resolve_model("e5-small"), script),
            "corpus pieces (builtin:default)": (corpus_dir, pruned),
        }
        for name, (path, report) in forms.items():
            seconds = step_seconds(str(path), texts, args.steps, precision)
            row = {
                "parameters": (report or script)["parameters_before" if report is None else "parameters_after"],
                "pieces": (report or script)["before" if report is None else "kept"],
                "test_tokens_changed": 0.0 if report is None else round(report["changed_share"], 5),
                "test_reviews_changed": 0 if report is None else report["changed_texts"],
                "test_tokens_unknown": 0.0 if report is None else round(report["unknown_share"], 5),
                "step_seconds": round(seconds, 3),
            }
            result["forms"][name] = row
            print(f"{name:<34} {row['parameters']:>12,} parameters  {row['step_seconds']:.3f} s a step", flush=True)
    full = result["forms"]["e5-small-full"]["step_seconds"]
    for row in result["forms"].values():
        row["speedup"] = round(full / row["step_seconds"], 2)
    print(json.dumps(result, ensure_ascii=False))
    return result


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main(sys.argv[1:])
