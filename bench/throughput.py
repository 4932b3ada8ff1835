"""Batch inference throughput: plmkit predict (PyTorch), plmkit on its ONNX fp32 and int8 exports, and
Hugging Face `transformers.pipeline` (its default batch and batch 32), on the same texts and model, in
one run; each timed `--repeat` times in alternating order, the median reported, with accuracy.

    python bench/throughput.py --model DIR [--onnx DIR] [--int8 DIR] [--student DIR ...] [--data builtin:reviews:test]
                               [--n 1000] [--repeat 3]
    python bench/throughput.py --quick        # CI: a tiny model trained and exported here, 64 texts

The last line printed is one JSON object: the machine (CPU model, whether bf16 is native, threads),
texts/s and accuracy of each, and each one's speed as a ratio to the pipeline's default.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from plmkit import api
from plmkit.cli import quiet_libraries


def machine() -> dict:
    from plmkit.train.loop import resolve_precision

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    native = resolve_precision("auto") == "bf16"
    return {"cpu": cpu or platform.processor(), "bf16_native": native, "threads": torch.get_num_threads()}


def plmkit_runner(model: str, examples):
    from plmkit.train.run import load
    from plmkit.train.run import predict as run

    loaded = load(model)  # loading is not timed: a server loads once

    def go() -> list[str]:
        return [row["label"] for row in run(None, examples, loaded=loaded)]

    return go


def pipeline_runner(model: str, texts: list[str], batch_size: int | None, max_length: int):
    from transformers import pipeline

    from plmkit.models.encoders import register_plmkit_models

    register_plmkit_models()  # plmkit's pooled classifier opens as a Hugging Face model
    pipe = pipeline("text-classification", model=model, device="cpu")
    kwargs = {"truncation": True, "max_length": max_length} | ({"batch_size": batch_size} if batch_size else {})

    def go() -> list[str]:
        return [r["label"] for r in pipe(texts, **kwargs)]

    return go


def quick_models(tmp: Path) -> tuple[str, str, str, str]:
    """A tiny BERT trained for 2 epochs on toy reviews, and its ONNX exports: for CI."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import save_tiny_bert, toy_rows, write_csv

    from plmkit.pretrain.tokenizer import train_wordpiece

    rows = toy_rows(300, seed=1)
    tokenizer = train_wordpiece(["".join(t for t, _ in toy_rows(50, s)) for s in range(10)], vocab_size=200)
    tiny = save_tiny_bert(tmp / "tiny", tokenizer)
    write_csv(tmp / "train.csv", rows[:200])
    write_csv(tmp / "test.csv", rows[200:264])
    overrides = {"model": str(tiny), "epochs": 2, "progress": False, "lr": 3e-3, "batch_size": 16}
    api.train(str(tmp / "train.csv"), tmp / "model", overrides=overrides)
    api.export(tmp / "model", tmp / "onnx", check=str(tmp / "test.csv"))
    api.export(tmp / "model", tmp / "int8", quantize="int8", check=str(tmp / "test.csv"))
    return str(tmp / "model"), str(tmp / "onnx"), str(tmp / "int8"), str(tmp / "test.csv")


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="a fine-tuned classification model directory")
    p.add_argument("--onnx", help="its `plmkit export` directory")
    p.add_argument("--int8", help="its `plmkit export --quantize int8` directory")
    p.add_argument("--student", nargs="*", default=[], help="distilled students of the model (plmkit distill)")
    p.add_argument("--data", default="builtin:reviews:test")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    tmp = tempfile.TemporaryDirectory(prefix="plmkit-throughput-")
    if args.quick:
        args.model, args.onnx, args.int8, args.data = quick_models(Path(tmp.name))
        args.repeat = 1
    from plmkit.data.examples import Example
    from plmkit.train.run import load

    loaded = load(args.model)
    records = loaded.task.read(args.data, loaded.cfg)[: args.n]
    texts, gold = [r.text for r in records], [r.label for r in records]
    examples = [Example(text=t) for t in texts]
    runners = {"plmkit_torch": plmkit_runner(args.model, examples)}
    if args.onnx:
        runners["plmkit_onnx_fp32"] = plmkit_runner(args.onnx, examples)
    if args.int8:
        runners["plmkit_onnx_int8"] = plmkit_runner(args.int8, examples)
    for student in args.student:
        runners[f"plmkit_student_{Path(student).name}"] = plmkit_runner(student, examples)
    max_length = loaded.meta["max_length"]
    runners["pipeline_default"] = pipeline_runner(args.model, texts, None, max_length)
    runners["pipeline_batch32"] = pipeline_runner(args.model, texts, 32, max_length)
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    labels: dict[str, list[str]] = {}
    for r in range(args.repeat):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))  # alternate: drift hits all alike
        for name in order:
            started = time.perf_counter()
            labels[name] = runners[name]()
            seconds[name].append(time.perf_counter() - started)
            print(f"{name}: {len(texts) / seconds[name][-1]:.1f} texts/s", file=sys.stderr, flush=True)
    result = {"machine": machine(), "texts": len(texts), "data": args.data, "repeat": args.repeat, "runs": {}}
    base = statistics.median(seconds["pipeline_default"])
    for name in runners:
        median = statistics.median(seconds[name])
        accuracy = sum(a == b for a, b in zip(labels[name], gold)) / len(gold)
        result["runs"][name] = {
            "texts_per_s": round(len(texts) / median, 1),
            "accuracy": round(accuracy, 4),
            "speed_vs_pipeline_default": round(base / median, 2),
        }
    tmp.cleanup()
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
