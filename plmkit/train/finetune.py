"""Fine-tuning, evaluation and prediction for the registered sequence tasks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import plmkit.tasks.classification  # noqa: F401  (registers its tasks)
from plmkit import __version__
from plmkit.config import TrainConfig, to_dict
from plmkit.data.builtin import load_builtin
from plmkit.data.examples import Example
from plmkit.data.readers import read_examples
from plmkit.data.truncation import encode
from plmkit.errors import ConfigError, DataError, ModelError
from plmkit.models.encoders import check_tokenizer_matches, load_config, load_tokenizer, model_limit, read_plmkit_meta, resolve_model
from plmkit.models.partial import keep_bottom_layers
from plmkit.models.saving import save_model_dir
from plmkit.registry import TASKS
from plmkit.tasks.base import Task, collate_encoded
from plmkit.train.loop import LoopState, train_loop
from plmkit.train.optim import finetune_setup


def load_data(spec: str, task: Task, cfg: TrainConfig, labelled: bool = True) -> list[Example]:
    """Examples from a file or builtin:NAME[:split], checked for what `task` needs."""
    if spec.startswith("builtin:"):
        examples = load_builtin(spec)
        if task.pair and any(ex.text_pair is None for ex in examples):
            raise DataError(f"{spec}: has no text pairs; task {task.name!r} needs them")
        return examples
    return read_examples(
        spec, text_column=cfg.text_column, text_pair_column=cfg.text_pair_column if task.pair else None,
        label_column=cfg.label_column if labelled else None, label_type=task.label_type, encoding=cfg.encoding,
    )


def label_ids(examples: Sequence[Example], labels: list[str], spec: str, column: str) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for ex in examples:
        if ex.label not in index:
            path, _, line = ex.where.rpartition(":")
            raise DataError(f"label {ex.label!r} was not seen in training (known: {', '.join(labels)})",
                            path=path or spec, line=int(line) if line.isdigit() else None, field=column)
        out.append(index[ex.label])
    return out


def featurize(examples: Sequence[Example], tokenizer, cfg: TrainConfig, targets: Sequence[Any] | None) -> list[dict[str, Any]]:
    feats = []
    for n, ex in enumerate(examples):
        enc = encode(tokenizer, ex.text, ex.text_pair, cfg.max_length, cfg.truncation, cfg.head_tokens)
        feats.append({"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"],
                      "label": None if targets is None else targets[n]})
    return feats


def forward_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, C); from the cached states `hidden` when the batch has them (mode=partial's top view)."""
    if "hidden" in batch:
        return model(inputs_embeds=batch["hidden"], attention_mask=batch["attention_mask"]).logits  # (B, C)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if getattr(model.config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return model(**inputs).logits  # (B, C)


def predict_logits(model: torch.nn.Module, feats: Sequence[dict[str, Any]], pad_id: int, batch_size: int,
                   device: torch.device | None = None, progress: bool = False) -> torch.Tensor:
    """Logits (N, C) in input order; batches sorted by length to pad little."""
    from tqdm.auto import tqdm

    device = device or next(model.parameters()).device
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))
    out: list[torch.Tensor | None] = [None] * len(feats)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="predicting", leave=False,
                          disable=None if progress else True):  # None: on a terminal only, not in logs
            idx = order[start : start + batch_size]
            batch = collate_encoded([(0, i, {**feats[i], "label": None}) for i in idx], pad_id, torch.long)
            logits = forward_logits(model, {k: v.to(device) for k, v in batch.items()}).float().cpu()
            for i, row in zip(idx, logits):
                out[i] = row
    model.train(was_training)
    return torch.stack(out) if out else torch.zeros(0)


def check_limits(source: str, cfg: TrainConfig, model_config, tokenizer) -> None:
    limit = model_limit(model_config)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"max_length: {cfg.max_length} is above the model's limit of {limit} tokens ({source})")
    check_tokenizer_matches(source, tokenizer, model_config)


def train(train_spec: str, output: str | Path, cfg: TrainConfig, *, dev_spec: str | None = None, resume: bool = False,
          command: str | None = None, callbacks: Sequence[Callable[[LoopState], None]] = ()) -> dict[str, Any]:
    """Fine-tune `cfg.model` for `cfg.task` on `train_spec`; the best model (by dev metric) is saved at `output`."""
    task = TASKS.get(cfg.task)
    from plmkit.models.pooled import POOLINGS
    from plmkit.tasks.classification import SEQUENCE_HEADS

    if cfg.head is not None and cfg.head not in SEQUENCE_HEADS:
        raise ConfigError(f"head: unknown {cfg.head!r} for task {task.name!r}; known: {', '.join(SEQUENCE_HEADS)}")
    if cfg.pooling not in POOLINGS:
        raise ConfigError(f"pooling: unknown {cfg.pooling!r}; known: {', '.join(POOLINGS)}")
    if cfg.bigram_buckets:
        raise ConfigError(f"bigram_buckets: applies to the tagging tasks (ner, cws), not {cfg.task}")
    output = Path(output)
    started = time.time()
    if dev_spec is None and train_spec.startswith("builtin:"):
        dev_spec = ":".join(train_spec.split(":")[:2]) + ":dev"
    train_ex = load_data(train_spec, task, cfg)
    dev_ex = load_data(dev_spec, task, cfg) if dev_spec else []
    if task.label_type == "class":
        labels = sorted({str(ex.label) for ex in train_ex})
        if len(labels) < 2:
            raise DataError(f"the label column has one class ({labels[0]!r}); classification needs at least two",
                            path=train_spec, field=cfg.label_column)
        train_y: list[Any] = label_ids(train_ex, labels, train_spec, cfg.label_column)
        dev_y: list[Any] = label_ids(dev_ex, labels, dev_spec or "", cfg.label_column)
    else:
        labels = []
        train_y, dev_y = [float(ex.label) for ex in train_ex], [float(ex.label) for ex in dev_ex]

    source = resolve_model(cfg.model)
    model_config = load_config(source, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    check_limits(source, cfg, model_config, tokenizer)
    torch.manual_seed(cfg.loop.seed)
    model = task.build_model(source, labels, cfg.dropout, cfg.trust_remote_code, tokenizer.pad_token_id,
                             head=cfg.head, pooling=cfg.pooling)
    if cfg.keep_layers:
        keep_bottom_layers(model, cfg.keep_layers)
    param_groups, before_batch = finetune_setup(model, cfg)
    train_feats = featurize(train_ex, tokenizer, cfg, train_y)
    dev_feats = featurize(dev_ex, tokenizer, cfg, dev_y)
    dev_gold = torch.tensor(dev_y, dtype=torch.long if labels else torch.float)
    label_dtype = torch.long if labels else torch.float
    collate = lambda items: collate_encoded(items, tokenizer.pad_token_id, label_dtype)  # noqa: E731
    loss_fn = lambda model, batch: task.loss(forward_logits(model, batch), batch["labels"])  # noqa: E731
    trained, extra = model, {}
    if cfg.mode == "partial":  # the frozen bottom runs once here; the loop trains the top view on its output
        from plmkit.train.partial import prepare

        cached = time.time()
        trained, train_feats, dev_feats = prepare(model, cfg, train_feats, dev_feats, collate)
        extra["extract_seconds"] = round(time.time() - cached, 1)

    def evaluate(model, accelerator) -> dict[str, float]:
        logits = predict_logits(model, dev_feats, tokenizer.pad_token_id, cfg.loop.eval_batch_size, accelerator.device)
        return {f"dev_{k}": v for k, v in task.metrics(logits, dev_gold, labels).items()}

    meta = {
        "plmkit_version": __version__, "task": task.name, "labels": labels, "base_model": cfg.model,
        "max_length": cfg.max_length, "truncation": cfg.truncation, "head_tokens": cfg.head_tokens,
        "text_column": cfg.text_column, "text_pair_column": cfg.text_pair_column, "label_column": cfg.label_column,
        "train": train_spec, "dev": dev_spec, "command": command, "seed": cfg.loop.seed, "config": to_dict(cfg),
    }

    saver = best_model_saver(output, tokenizer, meta)
    save_best = lambda _trained, state: saver(model, state)  # noqa: E731  (the whole model, also in partial mode)
    state = train_loop(
        trained, loss_fn, train_feats, [len(f["input_ids"]) for f in train_feats], collate, cfg.loop, output,
        evaluate=evaluate if dev_feats else None, metric=f"dev_{task.main_metric}",
        greater_is_better=task.greater_is_better, save_best=save_best, resume=resume, callbacks=callbacks,
        param_groups=param_groups, before_batch=before_batch, find_unused_parameters=cfg.gradual_unfreeze,
    )
    if not dev_feats:
        save_best(model, state)
    return run_summary(output, state, started) | extra


def best_model_saver(output: Path, tokenizer, meta: dict[str, Any]) -> Callable[[torch.nn.Module, LoopState], None]:
    """What the loop calls when the dev metric improves: the model directory, plmkit.json last."""

    def save_best(model, state: LoopState) -> None:
        best = state.history[-1] if state.history else {}
        check_finite(model)
        save_model_dir(output, model, tokenizer, {"plmkit.json": meta | {"dev_metrics": best, "history": state.history}})

    return save_best


def check_finite(model: torch.nn.Module) -> None:
    """Never save a model whose weights went NaN or infinite."""
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise ModelError("refusing to save: the model has non-finite weights")


def run_summary(output: Path, state: LoopState, started: float) -> dict[str, Any]:
    best = next((h for h in state.history if h["epoch"] == state.best_epoch + 1), state.history[-1] if state.history else {})
    return {"output": str(output), "best_epoch": state.best_epoch + 1, "dev_metrics": best, "history": state.history,
            "steps": state.step, "seconds": round(time.time() - started, 1), "stopped_early": state.stopped_early}


def load_trained(model_dir: str | Path):
    """(model, tokenizer, task, meta) of a directory that `train` wrote."""
    from transformers import AutoModelForSequenceClassification

    source = resolve_model(str(model_dir))
    meta = read_plmkit_meta(source)
    if meta is None:
        raise ModelError(f"{source}: no plmkit.json; it is not a model that plmkit train saved")
    task = TASKS.get(meta["task"])
    model = AutoModelForSequenceClassification.from_pretrained(source, use_safetensors=True)
    tokenizer = load_tokenizer(source)
    check_tokenizer_matches(source, tokenizer, model.config)
    model.eval()
    return model, tokenizer, task, meta


def _cfg_from_meta(meta: dict, encoding: str | None) -> TrainConfig:
    cfg = TrainConfig(task=meta["task"], max_length=meta["max_length"], truncation=meta["truncation"],
                      head_tokens=meta.get("head_tokens"), text_column=meta["text_column"],
                      text_pair_column=meta["text_pair_column"], label_column=meta["label_column"])
    if encoding:
        cfg.encoding = encoding
    return cfg


def evaluate(model_dir: str | Path, data_spec: str, *, encoding: str | None = None, batch_size: int = 64) -> dict[str, float]:
    model, tokenizer, task, meta = load_trained(model_dir)
    cfg = _cfg_from_meta(meta, encoding)
    examples = load_data(data_spec, task, cfg)
    labels = meta["labels"]
    gold = label_ids(examples, labels, data_spec, cfg.label_column) if labels else [float(ex.label) for ex in examples]
    logits = predict_logits(model, featurize(examples, tokenizer, cfg, None), tokenizer.pad_token_id, batch_size, progress=True)
    result = task.metrics(logits, torch.tensor(gold, dtype=torch.long if labels else torch.float), labels)
    return result | {"examples": len(examples)}


def predict(model_dir: str | Path, examples: Sequence[Example], *, batch_size: int = 64, loaded=None) -> list[dict[str, Any]]:
    model, tokenizer, task, meta = loaded or load_trained(model_dir)
    cfg = _cfg_from_meta(meta, None)
    for ex in examples:
        if task.pair and ex.text_pair is None:
            raise DataError("this model needs a text pair", path=ex.where or None)
    logits = predict_logits(model, featurize(examples, tokenizer, cfg, None), tokenizer.pad_token_id, batch_size,
                            progress=len(examples) > 1000)
    rows = []
    for ex, decoded in zip(examples, task.decode(logits, meta["labels"])):
        row: dict[str, Any] = {"text": ex.text}
        if ex.text_pair is not None:
            row["text_pair"] = ex.text_pair
        rows.append(row | decoded)
    return rows
