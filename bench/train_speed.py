"""Fine-tuning speed: `plmkit train` against Hugging Face `Trainer` (its defaults, and its best CPU flags),
same model, texts, max_length, batch, lr, schedule and epochs; each run a fresh process, in alternating order.

    python bench/train_speed.py --model minilm-en [--n 2000] [--repeat 2] [--epochs 1]
    python bench/train_speed.py --quick          # CI: a tiny model, 200 toy texts, one repetition

A run is timed from the training texts in memory to the fine-tuned model saved: loading the pretrained
weights and tokenizer, tokenising, training and saving; imports are done before the clock starts.
Reported per runner: samples/s (median), the tokens its batches carried against the real tokens, the
mean training loss, and plmkit's speed as a ratio to each one's. The peers:
- trainer_default: `Trainer` with `TrainingArguments` defaults except what must match (batch, lr, epochs,
  warmup, weight decay, seed, no checkpoints mid-run); its default optimiser is fused AdamW.
- trainer_best: the same plus `train_sampling_strategy="group_by_length"` (transformers 5's
  `group_by_length`), and bf16 where the CPU runs it natively.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNERS = ("plmkit", "trainer_default", "trainer_best")


def write_texts(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def counting(collate, counts: dict[str, int]):
    """`collate` that adds each batch's padded (B*T) and real token counts to `counts`."""

    def wrapped(*args, **kwargs):
        batch = collate(*args, **kwargs)
        counts["padded"] += batch["input_ids"].numel()
        counts["real"] += int(batch["attention_mask"].sum())
        return batch

    return wrapped


def child_plmkit(args, texts: Path, out: Path) -> dict:
    import dataclasses

    from plmkit.config import TrainConfig, build_config
    from plmkit.models.encoders import register_plmkit_models
    from plmkit.registry import TASKS
    from plmkit.train import run

    run.tasks()
    base = TASKS.get("classification")
    counts = {"padded": 0, "real": 0}
    task = dataclasses.replace(base, collate=counting(base.collate, counts))
    cfg = build_config(
        TrainConfig,
        None,
        {
            "model": args.model, "max_length": args.max_length, "truncation": "head", "head": "cls",
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "warmup_ratio": 0.1,
            "weight_decay": 0.01, "seed": 42, "progress": False, "mixed_precision": "auto", "log_steps": 1,
        },
    )  # fmt: skip
    records = task.read(str(texts), cfg)
    register_plmkit_models()  # imports done before the clock starts, as the peer's are
    started = time.perf_counter()
    summary = run.train(str(texts), out, cfg, records=(records, None), task=task)
    seconds = time.perf_counter() - started
    mean = statistics.mean(loss for _, loss in summary["losses"]) if summary["losses"] else None
    return {"seconds": seconds, "steps": summary["steps"], **counts, "loss": mean}


def child_trainer(args, texts: Path, out: Path, best: bool) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from plmkit.models.encoders import resolve_model
    from plmkit.train.loop import resolve_precision

    source = resolve_model(args.model)
    with open(texts, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = sorted({r["label"] for r in rows})
    bf16 = best and resolve_precision("auto") == "bf16"
    steps = math.ceil(len(rows) / args.batch_size) * args.epochs
    targs = TrainingArguments(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        num_train_epochs=args.epochs,
        warmup_steps=math.ceil(0.1 * steps),
        weight_decay=0.01,
        seed=42,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        bf16=bf16,
        **({"train_sampling_strategy": "group_by_length"} if best else {}),
    )
    counts = {"padded": 0, "real": 0}
    started = time.perf_counter()  # as plmkit's: loading the tokenizer and the weights is timed too
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    collator = counting(DataCollatorWithPadding(tokenizer), counts)
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=args.max_length)
    label_of = {n: i for i, n in enumerate(names)}
    data = [
        {"input_ids": ids, "token_type_ids": tt, "attention_mask": am, "labels": label_of[r["label"]]}
        for ids, tt, am, r in zip(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], rows)
    ] if "token_type_ids" in enc else [
        {"input_ids": ids, "attention_mask": am, "labels": label_of[r["label"]]}
        for ids, am, r in zip(enc["input_ids"], enc["attention_mask"], rows)
    ]  # fmt: skip
    trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collator)
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "steps": result.global_step, **counts, "loss": result.training_loss}


def child(args) -> None:
    from plmkit.cli import quiet_libraries

    quiet_libraries()
    out = Path(tempfile.mkdtemp(prefix=f"plmkit-train-speed-{args.child}-"))
    if args.child == "plmkit":
        result = child_plmkit(args, Path(args.texts), out)
    else:
        result = child_trainer(args, Path(args.texts), out, best=args.child == "trainer_best")
    print("RESULT " + json.dumps(result), flush=True)


def texts_for(model: str, n: int, tmp: Path, quick: bool) -> tuple[Path, str]:
    """`n` review texts (of the training split, drawn with seed 0) or, quick, toy texts and a tiny model."""
    if quick:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import save_tiny_bert, toy_rows

        from plmkit.pretrain.tokenizer import train_wordpiece

        tokenizer = train_wordpiece(["".join(t for t, _ in toy_rows(50, s)) for s in range(10)], vocab_size=200)
        model = str(save_tiny_bert(tmp / "tiny", tokenizer))
        rows = toy_rows(n, seed=1)
    else:
        from plmkit.data.builtin import load_builtin

        rows = [(ex.text, ex.label) for ex in random.Random(0).sample(load_builtin("builtin:reviews"), n)]
    path = tmp / "texts.csv"
    write_texts(path, rows)
    return path, model


def forward_flops(model: str, texts: Path, max_length: int) -> float:
    """The encoder's forward FLOPs over the texts' real tokens, truncated as both runners truncate (bench/mfu.py)."""
    from mfu import encoder_flops
    from transformers import AutoConfig, AutoTokenizer

    from plmkit.models.encoders import resolve_model

    source = resolve_model(model)
    with open(texts, encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    ids = AutoTokenizer.from_pretrained(source)(rows, truncation=True, max_length=max_length)["input_ids"]
    return encoder_flops(AutoConfig.from_pretrained(source), [len(x) for x in ids])


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="minilm-en")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--runners", default=",".join(RUNNERS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child", choices=RUNNERS)
    p.add_argument("--texts")
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return {}
    if args.quick:
        args.n, args.repeat, args.lr = 200, 1, 3e-3
    tmp = tempfile.TemporaryDirectory(prefix="plmkit-train-speed-")
    texts, model = texts_for(args.model, args.n, Path(tmp.name), args.quick)
    runners = args.runners.split(",")
    common = ["--model", model, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr",
              str(args.lr), "--max-length", str(args.max_length), "--texts", str(texts)]  # fmt: skip
    runs: dict[str, list[dict]] = {name: [] for name in runners}
    for r in range(args.repeat):
        for name in runners if r % 2 == 0 else list(reversed(runners)):  # alternate: drift hits all alike
            cmd = [sys.executable, __file__, "--child", name, *common]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if done.returncode != 0 or line is None:
                raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
            runs[name].append(json.loads(line[len("RESULT ") :]))
            speed = args.n * args.epochs / runs[name][-1]["seconds"]
            print(f"{name}: {speed:.1f} samples/s", file=sys.stderr, flush=True)
    samples = args.n * args.epochs
    out = {"model": args.model if not args.quick else "tiny", "samples": samples, "repeat": args.repeat,
           "forward_flops": forward_flops(model, texts, args.max_length) * args.epochs, "runs": {}}  # fmt: skip
    for name in runners:
        seconds = statistics.median(r["seconds"] for r in runs[name])
        last = runs[name][-1]
        out["runs"][name] = {
            "samples_per_s": round(samples / seconds, 2),
            "seconds": [round(r["seconds"], 1) for r in runs[name]],
            "padded_tokens": last["padded"],
            "real_tokens": last["real"],
            "mean_train_loss": round(last["loss"], 4) if last["loss"] is not None else None,
        }
    if "plmkit" in runners:
        for name in runners:
            out["runs"][name]["speed_of_plmkit"] = round(
                out["runs"]["plmkit"]["samples_per_s"] / out["runs"][name]["samples_per_s"], 2
            )
    tmp.cleanup()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
