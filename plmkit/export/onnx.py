"""`plmkit export`: a fine-tuned model as an ONNX graph (dynamic batch and sequence axes), optionally
int8 (ONNX Runtime's dynamic quantisation), checked against the PyTorch model before it is written.

The graph is the task's `forward`: the tensors `collate` makes (those forward reads) in, the scores
out (logits (B, C), emissions (B, U, K), span scores (B, T, 2)). Everything before and after it is
plmkit's own as for the PyTorch model: the tokenizer, featurize, collate, the task's `outputs`,
`assemble` and `decode`. A tagger's CRF decodes outside the graph, from its transitions saved
beside it (decoder.safetensors). The exported directory holds model.onnx, the tokenizer,
config.json, plmkit.json (with the export's parity report) and export.json; `plmkit predict`,
`evaluate` and `serve` open it like any model directory (they see model.onnx).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from plmkit.errors import ModelError, PlmkitError
from plmkit.export.runtime import DECODER_FILE, ONNX_FILE, OnnxModel, is_exported, onnx_forward
from plmkit.models.encoders import eager_attention

TARGETS = ("labels", "tags", "start_positions", "end_positions")  # what collate adds for the loss only
MAX_DROP_POINTS = 0.5  # an export whose main metric falls by more than this on the check data is flagged


class _Reads(dict):
    """A batch that records which keys a function reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    def __getitem__(self, key):
        if key not in self.read:
            self.read.append(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default


class Scores(torch.nn.Module):
    """The task's forward as a module of positional tensors, in the order of `keys`: what is exported."""

    def __init__(self, model: torch.nn.Module, forward, keys: Sequence[str]):
        super().__init__()
        self.model, self.task_forward, self.keys = model, forward, list(keys)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.task_forward(self.model, dict(zip(self.keys, tensors)))


def _check_records(loaded, check: str | None, limit: int) -> tuple[str, list[Any]]:
    """(spec, labelled records) to check the export on: `check`, else the model's dev data, else its
    training data (the first of those that still reads)."""
    if check:
        return check, list(loaded.task.read(check, loaded.cfg))[: limit or None]
    problems = []
    for spec in (loaded.meta.get("dev"), loaded.meta.get("train")):
        if not spec:
            continue
        try:
            return spec, list(loaded.task.read(spec, loaded.cfg))[: limit or None]
        except (OSError, PlmkitError) as error:
            problems.append(f"{spec}: {error}")
    raise ModelError("no data to check the export against: pass --check DATA" + "".join(f"; {p}" for p in problems))


def scored(task, model, forward, data, collate) -> list[tuple[torch.Tensor, Any]]:
    """(scores cut to the item's own length, the task's output) for every item, in item order."""
    from plmkit.train.infer import run_model

    def outputs(m, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, Any]]:
        lengths = (batch["unit_mask"] if "unit_mask" in batch else batch["attention_mask"]).sum(1).tolist()
        rows = [s[:n] if scores.dim() > 2 else s for s, n in zip(scores.float(), lengths)]  # (C,) or (U_i, K)
        return list(zip(rows, task.outputs(m, scores, batch)))

    return run_model(model, data.items, collate, forward, outputs, 64, device=torch.device("cpu"))


def compare(task, data, ours: list[tuple[torch.Tensor, Any]], reference: list[tuple[torch.Tensor, Any]]) -> dict:
    """Max score difference, the share of records whose prediction rows agree, and the main metric of both."""
    diff = max((float((a - b).abs().max()) for (a, _), (b, _) in zip(ours, reference)), default=0.0)
    ours_pred = task.assemble(data, [o for _, o in ours])
    ref_pred = task.assemble(data, [o for _, o in reference])
    rows = zip(task.decode(data, ours_pred), task.decode(data, ref_pred))
    agree = sum(_same_decision(a, b) for a, b in rows) / max(1, len(data.records))
    report: dict[str, Any] = {"records": len(data.records), "max_score_difference": diff, "agreement": agree}
    if data.gold is not None:
        metric = task.main_metric
        before, after = float(task.metrics(data, ref_pred)[metric]), float(task.metrics(data, ours_pred)[metric])
        drop = round(100 * (before - after if task.greater_is_better else after - before), 4)
        report |= {f"torch_{metric}": before, f"onnx_{metric}": after, "drop_points": drop}
        report["within_tolerance"] = drop <= MAX_DROP_POINTS
    return report


def _same_decision(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Rows agree on what a user acts on: the label, the entities or words, the answer spans, a value to
    two decimals; not on probabilities."""
    if "answers" in a:
        return [(x["start"], x["end"]) for x in a["answers"]] == [(x["start"], x["end"]) for x in b["answers"]]
    if "score" in a and "label" not in a:  # regression
        return round(a["score"], 2) == round(b["score"], 2)
    return {k: v for k, v in a.items() if k != "probabilities"} == {k: v for k, v in b.items() if k != "probabilities"}


def _axes(sample: dict[str, torch.Tensor], keys: list[str], scores: torch.Tensor) -> dict[str, dict[int, str]]:
    """Dynamic axes: the batch, and the tokens (T) or units (U) of every input and of the scores."""
    tokens = sample["input_ids"].shape[1]
    name = lambda t: "tokens" if t.shape[1] == tokens else "units"  # noqa: E731
    axes = {k: {0: "batch", 1: name(sample[k])} for k in keys}
    return axes | {"scores": {0: "batch"} | ({1: name(scores)} if scores.dim() > 2 else {})}


def fuse_transformer_ops(graph: Path, config) -> dict[str, int]:
    """Rewrite the graph in place with ONNX Runtime's transformer fusions (attention, layer norm with the
    residual add, bias + GELU, embeddings + layer norm) where its encoder is a BERT-like one; each fused
    op then runs as one kernel. Returns how many of each fusion were made (empty: none applied)."""
    from onnxruntime.transformers.optimizer import optimize_model

    encoder = getattr(config, "encoder_config", None) or config
    if getattr(encoder, "model_type", None) not in ("bert", "xlm-roberta", "roberta", "electra"):
        return {}
    optimized = optimize_model(
        str(graph),
        model_type="bert",
        num_heads=getattr(encoder, "num_attention_heads", 0),
        hidden_size=getattr(encoder, "hidden_size", 0),
        opt_level=0,  # the fusions only; ONNX Runtime applies its own graph optimisations when it loads
    )
    optimized.save_model_to_file(str(graph))
    return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}


def smooth_activations(graph: Path, feeds, alpha: float = 0.5) -> int:
    """SmoothQuant (Xiao et al. 2023) for dynamic int8, in place on the fp32 `graph`: each input X of a
    matrix multiply by a weight (MatMul, fused Attention) is divided channel by channel by s, and the
    weight's rows multiplied by s, with s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) measured on `feeds`
    (input dicts of numpy arrays). The product is unchanged; what changes is that dynamic quantisation
    gives the whole of X one scale, which a few outlier channels (BERT's layer-norm outputs carry some)
    otherwise set for all. Returns how many inputs were smoothed."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph))
    weights = {t.name: t for t in model.graph.initializer if len(t.dims) == 2}
    readers = Counter(name for node in model.graph.node for name in node.input)
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Attention") and len(node.input) > 1 and node.input[1] in weights:
            if readers[node.input[1]] == 1:  # a weight read elsewhere too could not be rescaled for one reader
                consumers.setdefault(node.input[0], []).append(node)
    if not consumers:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in consumers)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the probed tensors
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del probe
    largest: dict[str, Any] = {}
    for feed in feeds:
        for name, x in zip(consumers, session.run(list(consumers), feed)):
            channel = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)  # (in,)
            largest[name] = np.maximum(largest[name], channel) if name in largest else channel
    position = {id(node): i for i, node in enumerate(model.graph.node)}
    inserted: list[tuple[int, Any]] = []
    for n, (name, nodes) in enumerate(consumers.items()):
        arrays = [numpy_helper.to_array(weights[node.input[1]]) for node in nodes]  # (in, out) each
        w_max = np.max([np.abs(w).max(axis=1) for w in arrays], axis=0)  # (in,)
        scale = largest[name] ** alpha / np.maximum(w_max, 1e-8) ** (1 - alpha)
        scale = np.where((largest[name] > 0) & (w_max > 0), np.clip(scale, 1e-5, 1e5), 1.0).astype(np.float32)
        for node, w in zip(nodes, arrays):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * scale[:, None], node.input[1]))
            node.input[0] = f"{name}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, f"{name}_smoothing"))
        mul = helper.make_node("Mul", [name, f"{name}_smoothing"], [f"{name}_smoothed"], name=f"Smooth_{n}")
        inserted.append((min(position[id(node)] for node in nodes), mul))
    nodes = list(model.graph.node)
    for index, mul in sorted(inserted, key=lambda x: x[0], reverse=True):  # each just before its first reader
        nodes.insert(index, mul)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(graph))
    return len(consumers)


def calibration_feeds(task, items: Sequence[dict[str, Any]], pad_id: int, keys: Sequence[str], limit: int):
    """The graph's inputs (`keys`) for the first `limit` of `items`, 32 at a time, as numpy arrays: what
    `smooth_activations` measures on."""
    for i in range(0, min(limit, len(items)), 32):
        yield {k: v.numpy() for k, v in task.collate(items[i : i + 32], pad_id=pad_id).items() if k in keys}


def quantize_int8(graph: Path, output: Path) -> None:
    """ONNX Runtime's dynamic int8 quantisation of the fp32 `graph` into `output`, per channel: e5-small
    on reviews kept its dev accuracy (0.8720 both) where per tensor lost 0.63 points."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: shape inference gives no type to the outputs of fused (com.microsoft) ops
    quantize_dynamic(str(graph), str(output), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip


def export(
    model_dir: str | Path,
    output: str | Path,
    *,
    quantize: str | None = None,
    check: str | None = None,
    check_limit: int = 1000,
    opset: int = 17,
    optimize: bool = True,
    smooth: float = 0.7,
    calibration: int = 256,
) -> dict[str, Any]:
    """Export the fine-tuned model at `model_dir` to `output` (model.onnx and what reads it); `quantize`
    "int8": dynamic int8 weights, after `smooth_activations` with alpha `smooth` (0: not smoothed) measured
    on the first `calibration` records of the check data. Parity against the PyTorch model on `check`
    (labelled data; default the model's dev data, else its training data; at most `check_limit` records)
    is reported and saved."""
    from plmkit.io import atomic_dir, atomic_write_json
    from plmkit.models.saving import write_manifest
    from plmkit.train.run import load

    if quantize not in (None, "int8"):
        raise ModelError(f"quantize: {quantize!r} is not one of: int8")
    if not 0.0 <= smooth <= 1.0:
        raise ModelError(f"smooth: {smooth} is not between 0 and 1 (0: no smoothing)")
    source, started = Path(model_dir), time.time()
    if is_exported(source):
        raise ModelError(f"{source}: already an exported model; export the PyTorch model it came from")
    loaded = load(source)
    if loaded.meta.get("mode") == "features":
        raise ModelError(f"{source}: a feature-mode model (a head on cached layers) does not export; fine-tune one")
    task, model = loaded.task, loaded.model.eval()
    spec, records = _check_records(loaded, check, check_limit)
    data = task.featurize(records, loaded.tokenizer, loaded.cfg, loaded.labels, spec)
    collate = lambda feats: task.collate(feats, pad_id=loaded.tokenizer.pad_token_id)  # noqa: E731
    sample = _Reads(collate(data.items[:4]))
    with torch.no_grad():
        out = task.forward(model, sample)
    keys = [k for k in sample.read if k not in TARGETS]  # what forward reads, in the order it reads them
    reference = scored(task, model, task.forward, data, collate)
    report: dict[str, Any] = {"check": spec, "opset": opset, "quantize": quantize}
    with atomic_dir(output) as tmp:
        graph = tmp / (ONNX_FILE if quantize is None else "model.fp32.onnx")
        if optimize:
            eager_attention(model)  # the explicit MatMul-Softmax-MatMul that ONNX Runtime fuses into one op
        wrapper = Scores(model, task.forward, keys).eval()
        with warnings.catch_warnings():  # the tracer's notes on Python control flow the graph fixes; parity is checked
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                tuple(sample[k] for k in keys),
                str(graph),
                input_names=keys,
                output_names=["scores"],
                dynamic_axes=_axes(sample, keys, out),
                opset_version=opset,
                dynamo=False,  # the TorchScript exporter: exact here, and seconds where dynamo takes minutes
            )
        model.eval()  # the exporter puts back the wrapper's training flag on every submodule
        if optimize:
            report["fused"] = fuse_transformer_ops(graph, model.config)
        shutil.copy(source / "config.json", tmp / "config.json")
        loaded.tokenizer.save_pretrained(tmp)
        if getattr(model, "crf", None) is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.crf.state_dict().items()}, str(tmp / DECODER_FILE))
        check_graph = lambda name: compare(  # noqa: E731
            task, data, scored(task, OnnxModel(tmp, loaded.meta, name), onnx_forward, data, collate), reference
        )
        if quantize:
            if smooth:
                feeds = calibration_feeds(task, data.items, loaded.tokenizer.pad_token_id, keys, calibration)
                report["smoothed"] = smooth_activations(graph, feeds, smooth)
                report |= {"smooth_alpha": smooth, "calibration_records": min(calibration, len(data.items))}
            report["fp32"] = check_graph(graph.name)  # smoothed: the same products, so the same scores
            quantize_int8(graph, tmp / ONNX_FILE)
            report["fp32_bytes"] = graph.stat().st_size
            graph.unlink()
        report[quantize or "fp32"] = check_graph(ONNX_FILE)
        report |= {"bytes": (tmp / ONNX_FILE).stat().st_size, "seconds": round(time.time() - started, 1)}
        atomic_write_json(tmp / "export.json", report)
        atomic_write_json(tmp / "plmkit.json", loaded.meta | {"export": report | {"from": str(source)}})
        write_manifest(tmp)
    return report | {"output": str(output)}
