"""How much int8 moves a model's decisions, for each SmoothQuant alpha (`plmkit export --smooth`).

    python bench/int8_smoothing.py --model DIR --onnx DIR-onnx [--data builtin:reviews:dev] [--alphas 0,0.5,0.7]

`--onnx` is the model's fp32 export (`plmkit export --model DIR --output DIR-onnx`): its fused graph is
smoothed with each alpha (measured on the first `--calibration` records of `--data`, as export does),
quantised as export quantises, and scored on all of `--data` against the fp32 graph: how many
decisions flip, the mean and 99th percentile of the change in the score margin (classification:
the difference between the top two scores of the fp32 graph), and accuracy. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def scores_of(model_dir: Path, data_spec: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, C), gold label indices (N,)) of a saved or exported classifier on `data_spec`."""
    from plmkit.export.onnx import scored
    from plmkit.export.runtime import is_exported, onnx_forward
    from plmkit.train.run import load

    loaded = load(model_dir)
    task = loaded.task
    records = list(task.read(data_spec, loaded.cfg))
    data = task.featurize(records, loaded.tokenizer, loaded.cfg, loaded.labels, data_spec)
    collate = lambda feats: task.collate(feats, pad_id=loaded.tokenizer.pad_token_id)  # noqa: E731
    forward = onnx_forward if is_exported(model_dir) else task.forward
    out = scored(task, loaded.model, forward, data, collate)
    gold = np.array([loaded.labels.names.index(r.label) for r in data.records])
    return torch.stack([s for s, _ in out]).numpy(), gold


def margins(scores: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """(N,) each row's score for class `decided` minus its best other score: negative once it flips."""
    rows = np.arange(len(decided))
    others = scores.copy()
    others[rows, decided] = -np.inf
    return scores[rows, decided] - others.max(1)


def main(argv: list[str]) -> dict:
    import onnx

    from plmkit.cli import quiet_libraries
    from plmkit.export.onnx import calibration_feeds, quantize_int8, smooth_activations
    from plmkit.models.saving import write_manifest
    from plmkit.train.run import load

    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="the fine-tuned PyTorch model")
    p.add_argument("--onnx", required=True, help="its fp32 export")
    p.add_argument("--data", default="builtin:reviews:dev")
    p.add_argument("--alphas", default="0,0.5,0.6,0.7,0.75,0.8,0.9,1.0")
    p.add_argument("--calibration", type=int, default=256)
    args = p.parse_args(argv)
    loaded = load(args.model)
    task = loaded.task
    records = list(task.read(args.data, loaded.cfg))[: args.calibration]
    data = task.featurize(records, loaded.tokenizer, loaded.cfg, loaded.labels, args.data)
    fp32 = Path(args.onnx) / "model.onnx"
    keys = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
    feeds = list(calibration_feeds(task, data.items, loaded.tokenizer.pad_token_id, keys, args.calibration))
    reference, gold = scores_of(Path(args.onnx), args.data)
    decided = reference.argmax(1)  # (N,) the fp32 graph's decisions
    margin = margins(reference, decided)  # (N,) how far each is from flipping
    result = {"data": args.data, "records": len(gold), "fp32_accuracy": float((decided == gold).mean()), "alphas": {}}
    with tempfile.TemporaryDirectory(prefix="plmkit-int8-") as tmp:
        for alpha in [float(a) for a in args.alphas.split(",")]:
            out = Path(tmp) / f"a{alpha}"
            shutil.copytree(args.onnx, out)
            graph = out / "model.fp32.onnx"
            (out / "model.onnx").rename(graph)
            if alpha:
                smooth_activations(graph, feeds, alpha)
            quantize_int8(graph, out / "model.onnx")
            graph.unlink()
            write_manifest(out)  # the graph is a new one: the copied manifest named the fp32 one
            scores, _ = scores_of(out, args.data)
            change = np.abs(margins(scores, decided) - margin)  # (N,)
            result["alphas"][str(alpha)] = {
                "flips": int((scores.argmax(1) != decided).sum()),
                "margin_change_mean": round(float(change.mean()), 4),
                "margin_change_p99": round(float(np.quantile(change, 0.99)), 4),
                "max_score_difference": round(float(np.abs(scores - reference).max()), 4),
                "accuracy": round(float((scores.argmax(1) == gold).mean()), 4),
            }
            print(alpha, result["alphas"][str(alpha)], file=sys.stderr, flush=True)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
