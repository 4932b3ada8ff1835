"""plmkit against its peers in one run: batch inference, fine-tuning, the server under load, and model-FLOPs
utilisation against this machine's measured matrix-multiply peak.

    python bench/throughput.py --model DIR [--onnx DIR] [--int8 DIR] [--student DIR ...] [--data builtin:reviews:test]
                               [--n 1000] [--repeat 3] [--train-models minilm-en,e5-small] [--train-n 2000]
                               [--parts inference,train,serve,mfu]
    python bench/throughput.py --quick        # CI: a tiny model trained and exported here, every part small

- inference: plmkit predict (PyTorch), plmkit on its ONNX fp32 and int8 exports (and distilled students),
  and Hugging Face `transformers.pipeline` (its default batch and batch 32), on the same texts and model;
  each timed `--repeat` times in alternating order, the median reported, with accuracy.
- train: `plmkit train` against `Trainer` with its defaults and with its best CPU flags (bench/train_speed.py),
  for each of `--train-models`.
- serve: `plmkit serve --model DIR` at 1, 8 and 32 concurrent clients, batching on and off (bench/serve_load.py).
- mfu: the fp32 (and native bf16) GEMM peak, and the model FLOPs/s of inference and training against it
  (bench/mfu.py).

The last line printed is one JSON object: the machine (CPU model, whether bf16 is native, threads) and
each part's figures, every speed also as a ratio to its peer.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other parts, beside this file

import mfu  # noqa: E402
import serve_load  # noqa: E402
import train_speed  # noqa: E402

from plmkit import api  # noqa: E402
from plmkit.cli import quiet_libraries  # noqa: E402
from plmkit.data.examples import Example  # noqa: E402


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


PARTS = ("inference", "train", "serve", "mfu")


def inference(args, loaded, texts: list[str], gold: list[str]) -> dict:
    """texts/s and accuracy of each runner, and its speed as a ratio to the pipeline's default batch."""
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
    result = {"texts": len(texts), "data": args.data, "repeat": args.repeat, "runs": {}}
    base = statistics.median(seconds["pipeline_default"])
    for name in runners:
        median = statistics.median(seconds[name])
        accuracy = sum(a == b for a, b in zip(labels[name], gold)) / len(gold)
        result["runs"][name] = {
            "texts_per_s": round(len(texts) / median, 1),
            "accuracy": round(accuracy, 4),
            "speed_vs_pipeline_default": round(base / median, 2),
        }
    return result


def utilisation(peaks: dict, flops: float, seconds: float) -> dict:
    achieved = flops / seconds / 1e9
    return {"model_gflops_per_s": round(achieved, 1), "mfu_fp32": round(achieved / peaks["fp32_gflops"], 3)} | (
        {"mfu_bf16": round(achieved / peaks["bf16_gflops"], 3)} if "bf16_gflops" in peaks else {}
    )


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--model", help="a fine-tuned classification model directory")
    p.add_argument("--onnx", help="its `plmkit export` directory")
    p.add_argument("--int8", help="its `plmkit export --quantize int8` directory")
    p.add_argument("--student", nargs="*", default=[], help="distilled students of the model (plmkit distill)")
    p.add_argument("--data", default="builtin:reviews:test")
    p.add_argument("--n", type=int, default=1000, help="texts drawn from --data with seed 0 (0: all)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--train-models", default="minilm-en,e5-small", help="models fine-tuned by plmkit and Trainer")
    p.add_argument("--train-n", type=int, default=2000)
    p.add_argument("--train-repeat", type=int, default=2)
    p.add_argument("--clients", default="1,8,32")
    p.add_argument("--requests", type=int, default=200, help="requests per client count in the server part")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        p.error(f"--parts: unknown {', '.join(sorted(unknown))}; known: {', '.join(PARTS)}")
    tmp = tempfile.TemporaryDirectory(prefix="plmkit-throughput-")
    if args.quick:
        args.model, args.onnx, args.int8, args.data = quick_models(Path(tmp.name))
        args.repeat, args.clients, args.requests = 1, "1,4", 24
    from plmkit.train.run import load

    loaded = load(args.model)
    records = loaded.task.read(args.data, loaded.cfg)
    if 0 < args.n < len(records):  # a fixed sample: the shipped splits are grouped by label
        records = random.Random(0).sample(records, args.n)
    texts, gold = [r.text for r in records], [r.label for r in records]
    result: dict = {"machine": machine()}
    peaks = mfu.peaks(seconds=0.3 if args.quick else 2.0) if "mfu" in parts else {}
    if "inference" in parts:
        result["inference"] = inference(args, loaded, texts, gold)
    if "train" in parts:
        result["train"] = {}
        for model in ["tiny"] if args.quick else args.train_models.split(","):
            options = ["--quick"] if args.quick else ["--model", model, "--n", str(args.train_n)]
            result["train"][model] = train_speed.main([*options, "--repeat", str(args.train_repeat)])
    if "serve" in parts:
        clients = [int(c) for c in args.clients.split(",")]
        result["serve"] = serve_load.main(args.model, texts, clients, args.requests)
    if peaks:
        result["mfu"] = {"peak": peaks}
        if "inference" in result:  # the PyTorch runner: fp32 unless the model was exported
            data = loaded.task.featurize(loaded.task.unlabelled([Example(text=t) for t in texts]), loaded.tokenizer,
                                         loaded.cfg, loaded.labels, args.data)  # fmt: skip
            flops = mfu.encoder_flops(loaded.model.config, [len(it["input_ids"]) for it in data.items])
            speed = result["inference"]["runs"]["plmkit_torch"]["texts_per_s"]
            result["mfu"]["inference_plmkit_torch"] = utilisation(peaks, flops, len(texts) / speed)
        for model, run in result.get("train", {}).items():
            for name, figures in run["runs"].items():
                seconds = run["samples"] / figures["samples_per_s"]
                result["mfu"][f"train_{model}_{name}"] = utilisation(peaks, 3 * run["forward_flops"], seconds)
    tmp.cleanup()
    return result


def markdown(title: str, header: list[str], rows: list[list]) -> list[str]:
    """A titled Markdown table: the first column left-aligned, the rest right-aligned."""
    lines = [title, "", "| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows] + [""]


def tables(result: dict) -> str:
    """The README's performance tables (Markdown) from one run's JSON."""
    m = result["machine"]
    out = [f"Machine: {m['cpu']}, {m['threads']} threads, bf16 native: {'yes' if m['bf16_native'] else 'no'}.", ""]
    if "inference" in result:
        inf = result["inference"]
        rows = [[name, r["texts_per_s"], f"{r['accuracy']:.3f}", f"{r['speed_vs_pipeline_default']:.2f}×"]
                for name, r in inf["runs"].items()]  # fmt: skip
        title = f"Batch inference, {inf['texts']} texts of {inf['data']}, median of {inf['repeat']}:"
        out += markdown(title, ["runner", "texts/s", "accuracy", "speed vs pipeline default"], rows)
    for model, run in result.get("train", {}).items():
        rows = [[name, r["samples_per_s"], f"{r['padded_tokens']:,} ({r['real_tokens']:,})", r["mean_train_loss"],
                 f"{r['speed_of_plmkit']:.2f}×"] for name, r in run["runs"].items()]  # fmt: skip
        header = ["runner", "samples/s", "tokens in batches (real)", "mean training loss", "plmkit's speed against it"]
        out += markdown(f"Fine-tuning {model}, {run['samples']} samples, median of {run['repeat']}:", header, rows)
    if "serve" in result:
        serve = result["serve"]
        clients = [k for k in serve["batching_on"] if k.isdigit()]
        cell = lambda f: f"{f['requests_per_s']} ({f['p50_ms']} / {f['p99_ms']})"  # noqa: E731
        rows = [
            [mode.split("_")[1], *(cell(serve[mode][c]) for c in clients)] for mode in ("batching_on", "batching_off")
        ]
        title = f"Server, {serve['requests']} requests at each client count: requests/s (p50 / p99 ms):"
        out += markdown(title, ["batching", *(f"{c} clients" for c in clients)], rows)
    if "mfu" in result:
        peak = ", ".join(f"{k} {v}" for k, v in result["mfu"]["peak"].items())
        rows = [
            [name, r["model_gflops_per_s"], f"{r['mfu_fp32']:.2f}"]
            for name, r in result["mfu"].items()
            if name != "peak"
        ]
        out += markdown(f"Model-FLOPs utilisation against the measured GEMM peak ({peak}):",
                        ["run", "model GFLOP/s", "MFU (fp32 peak)"], rows)  # fmt: skip
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tables"]:  # python bench/throughput.py --tables RESULT.json
        print(tables(json.loads(Path(sys.argv[2]).read_text().splitlines()[-1])))
    else:
        print(json.dumps(main(sys.argv[1:])))
