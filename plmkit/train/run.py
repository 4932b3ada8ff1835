"""The one runner: train, evaluate, predict and load, for every registered task and every mode.

The task record (plmkit.tasks.base) owns the data path and the scores; the mode decides what the
loop trains and how batches reach it:
- finetune: the task model, every layer (or the top of it, with freeze_layers) trained;
- partial: the same model, its frozen bottom run once and cached, the top trained on the cache
  (plmkit.train.partial);
- features: the encoder frozen and run once, every layer cached, a small head trained on the cache
  (plmkit.train.features).
A mode returns a Plan; everything else here is the same for all of them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from plmkit import __version__
from plmkit.config import TASK_OPTIONS, TrainConfig, check_applicable, to_dict
from plmkit.errors import ConfigError, DataError, ModelError
from plmkit.export.runtime import is_exported
from plmkit.models.encoders import (
    check_remote_code,
    check_tokenizer_matches,
    load_config,
    load_tokenizer,
    loading_weights,
    model_limit,
    read_plmkit_meta,
    resolve_model,
)
from plmkit.models.saving import save_model_dir
from plmkit.registry import TASKS
from plmkit.tasks.base import Featurized, Labels, Task
from plmkit.train.infer import run_model
from plmkit.train.loop import LoopState, resolve_precision, train_loop
from plmkit.train.optim import build_optimizer
from plmkit.train.plan import Plan, check_finite
from plmkit.train.processes import main_first


def tasks() -> None:
    import plmkit.tasks.classification  # noqa: F401  (each registers its tasks)
    import plmkit.tasks.qa  # noqa: F401
    import plmkit.tasks.tagging  # noqa: F401


@dataclass
class Loaded:
    """A model directory that `train` wrote, ready to predict."""

    task: Task
    tokenizer: Any
    meta: dict[str, Any]
    cfg: TrainConfig  # the options that shape the data, as the model was trained with
    labels: Labels
    model: Any  # the task model; in feature mode (encoder, head model)
    outputs: Callable[[list[dict[str, Any]], bool], list[Any]]  # (items, progress) -> the task's outputs per item


def default_dev(train_spec: str, dev_spec: str | None) -> str | None:
    """A builtin data set's dev split when no dev data is named."""
    if dev_spec is None and train_spec.startswith("builtin:"):
        return ":".join(train_spec.split(":")[:2]) + ":dev"
    return dev_spec


def open_model(cfg: TrainConfig) -> tuple[str, Any]:
    """(resolved source, tokenizer) of `cfg.model`, with max_length checked against the model's limit."""
    source = resolve_model(cfg.model)
    model_config = load_config(source, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    limit = model_limit(model_config)
    if limit is not None and cfg.max_length > limit:
        raise ConfigError(f"max_length: {cfg.max_length} is above the model's limit of {limit} tokens ({source})")
    check_tokenizer_matches(source, tokenizer, model_config)
    return source, tokenizer


def resolve_head(task: Task, cfg: TrainConfig) -> str | None:
    if cfg.mode == "features":
        from plmkit.models.feature_heads import DEFAULT_HEADS, FEATURE_HEADS

        head, known = cfg.head or DEFAULT_HEADS[task.feature_kind], FEATURE_HEADS[task.feature_kind]
        problem = f"{head!r} is not a feature-mode head for this task"
    else:
        head, known = cfg.head or task.default_head, task.heads
        problem = f"unknown {head!r} for task {task.name!r}"
    if head not in known:
        raise ConfigError(f"head: {problem}; known: {', '.join(known)}")
    return head


def best_model_saver(output: Path, tokenizer, meta: dict[str, Any]) -> Callable[[torch.nn.Module, LoopState], None]:
    """What the loop calls when the dev metric improves: the model directory, plmkit.json last."""

    def save_best(model, state: LoopState) -> None:
        check_finite(model)
        best = state.history[-1] if state.history else {}
        save_model_dir(
            output, model, tokenizer, {"plmkit.json": meta | {"dev_metrics": best, "history": state.history}}
        )

    return save_best


def finetune_plan(
    task: Task,
    source: str,
    tokenizer,
    cfg: TrainConfig,
    train: Featurized,
    dev: Featurized | None,
    output: Path,
    meta: dict[str, Any],
) -> Plan:
    """Modes finetune and partial: the task model on the pretrained encoder; the whole model is saved."""
    from plmkit.models.partial import keep_bottom_layers
    from plmkit.train.optim import finetune_setup

    torch.manual_seed(cfg.loop.seed)
    model = task.build_model(source, train.labels, cfg, tokenizer)
    if cfg.finetune.keep_layers:
        keep_bottom_layers(model, cfg.finetune.keep_layers)
    param_groups, before_batch = finetune_setup(model, cfg)  # the head: everything outside the encoder
    collate = partial(task.collate, pad_id=tokenizer.pad_token_id)
    trained, items, dev_items, extra = model, train.items, dev.items if dev else [], {}
    if cfg.mode == "partial":  # the frozen bottom runs once here; the loop trains the top view on its output
        from plmkit.train.partial import prepare

        cached = time.time()
        trained, items, dev_items = prepare(model, cfg, items, dev_items, collate)
        extra["extract_seconds"] = round(time.time() - cached, 1)
    saver = best_model_saver(output, tokenizer, meta)
    predict_dev = lambda m, device: run_model(  # noqa: E731  (each process scores a share; all get every output)
        m, dev_items, collate, task.forward, task.outputs, cfg.loop.eval_batch_size, device, across=True
    )
    return Plan(
        trained,
        items,
        [len(f["input_ids"]) for f in items],
        collate,
        task.forward,
        save=lambda _trained, state: saver(model, state),  # the whole model, also in partial mode
        predict_dev=predict_dev if dev_items else None,
        param_groups=param_groups,
        before_batch=before_batch,
        find_unused_parameters=cfg.finetune.gradual_unfreeze,
        extra=extra,
    )


def train(
    train_spec: str,
    output: str | Path,
    cfg: TrainConfig,
    *,
    dev_spec: str | None = None,
    resume: bool = False,
    command: str | None = None,
    callbacks: Sequence[Callable[[LoopState], None]] = (),
    records: tuple[Sequence[Any], Sequence[Any] | None] | None = None,
    labels: Labels | None = None,
    task: Task | None = None,
) -> dict[str, Any]:
    """Train `cfg.model` for `cfg.task` in `cfg.mode` on `train_spec`; the best model by dev metric is saved
    at `output`. `records`: (train, dev) records already read, in place of reading the specs (which then
    only name them); `labels`: the outputs to train, in place of those the training records have (k-fold
    training gives every fold the labels of the whole set); `task`: the record to train, in place of
    the registered one of cfg.task (distillation replaces its featurize, collate and loss)."""
    tasks()
    task = task or TASKS.get(cfg.task)
    if cfg.mode not in task.modes:
        raise ConfigError(f"mode: task {task.name} does not train in mode {cfg.mode}; it takes {', '.join(task.modes)}")
    check_applicable(cfg, task.options)
    resolve_precision(cfg.loop.mixed_precision)  # fp16 on a CPU: refused before anything is read
    cfg = dataclasses.replace(cfg, head=resolve_head(task, cfg))
    output, started = Path(output), time.time()
    dev_spec = default_dev(train_spec, dev_spec) if records is None else dev_spec
    source, tokenizer = main_first(lambda: open_model(cfg))  # a shipped model is converted on first use: once
    train_records, dev_records = records or (task.read(train_spec, cfg), task.read(dev_spec, cfg) if dev_spec else None)
    train_data = task.featurize(train_records, tokenizer, cfg, labels, train_spec)
    dev_data = task.featurize(dev_records, tokenizer, cfg, train_data.labels, dev_spec or "") if dev_records else None
    if not train_data.items:
        raise DataError("no example has a token the tokenizer keeps", path=train_spec)
    meta = {
        "plmkit_version": __version__,
        "task": task.name,
        "mode": cfg.mode,
        "head": cfg.head,
        "labels": train_data.labels.names,
        "scheme": train_data.labels.scheme,
        "class_keywords": train_data.labels.keywords,
        "base_model": cfg.model,
        "max_length": cfg.max_length,
        **{key: getattr(cfg, key) for key in task.options},  # the data options it was trained with
        **task.meta(tokenizer, cfg),
        "text_column": cfg.text_column,
        "text_pair_column": cfg.text_pair_column,
        "label_column": cfg.label_column,
        "train": train_spec,
        "dev": dev_spec,
        "command": command,
        "seed": cfg.loop.seed,
        "config": to_dict(cfg),
    }
    if cfg.mode == "features":
        from plmkit.train.features import features_plan as make_plan
    else:
        make_plan = finetune_plan
    with loading_weights(source):
        plan = make_plan(task, source, tokenizer, cfg, train_data, dev_data, output, meta)

    def evaluate(model, accelerator) -> dict[str, float]:
        predictions = task.assemble(dev_data, plan.predict_dev(accelerator.unwrap_model(model), accelerator.device))
        return {f"dev_{k}": v for k, v in task.metrics(dev_data, predictions).items() if isinstance(v, float)}

    state = train_loop(
        plan.model,
        lambda m, b: task.loss(m, plan.forward(m, b), b),
        plan.items,
        plan.lengths,
        lambda triples: plan.collate([f for _, _, f in triples]),
        cfg.loop,
        output,
        evaluate=evaluate if plan.predict_dev else None,
        metric=f"dev_{task.main_metric}",
        greater_is_better=task.greater_is_better,
        save_best=plan.save,
        resume=resume,
        callbacks=callbacks,
        before_batch=plan.before_batch,
        find_unused_parameters=plan.find_unused_parameters,
        optimizer=lambda m: build_optimizer(m, cfg.loop, plan.param_groups),
    )
    best = next(
        (h for h in state.history if h["epoch"] == state.best_epoch + 1), state.history[-1] if state.history else {}
    )
    summary = {
        "output": str(output),
        "best_epoch": state.best_epoch + 1,
        "dev_metrics": best,
        "history": state.history,
        "losses": state.losses,  # [step, mean training loss] every log_steps
        "steps": state.step,
        "seconds": round(time.time() - started, 1),
        "stopped_early": state.stopped_early,
    }
    return summary | task.summary(train_data, cfg) | plan.extra


def _cfg_from_meta(meta: dict[str, Any], encoding: str | None) -> TrainConfig:
    """The options that shape the data, as the model was trained with them."""
    cfg = TrainConfig(
        task=meta["task"],
        mode=meta.get("mode", "finetune"),
        head=meta.get("head"),
        max_length=meta["max_length"],
        text_column=meta.get("text_column", "text"),
        text_pair_column=meta.get("text_pair_column", "text_pair"),
        label_column=meta.get("label_column", "label"),
        unit_tokens="word",  # models saved before the choice existed used word
    )
    for key in TASK_OPTIONS:  # the task's own data options as plmkit.json recorded them; the rest stay default
        if key in meta:
            setattr(cfg, key, meta[key])
    cfg.loop.progress = False
    if encoding:
        cfg.encoding = encoding
    return cfg


def load(model_dir: str | Path, batch_size: int = 64) -> Loaded:
    """A directory that `train` wrote, in whatever mode, or that `export` wrote, with its task and the options
    it was trained with."""
    tasks()
    source = resolve_model(str(model_dir))
    check_remote_code(source)
    meta = read_plmkit_meta(source)
    if meta is None:
        raise ModelError(f"{source}: no plmkit.json; it is not a model that plmkit train saved")
    task: Task = TASKS.get(meta["task"])
    cfg = _cfg_from_meta(meta, None)
    labels = Labels(list(meta["labels"]), meta.get("scheme"), meta.get("class_keywords"))
    tokenizer = load_tokenizer(source)
    collate = partial(task.collate, pad_id=tokenizer.pad_token_id)
    if cfg.mode == "features":
        from plmkit.train.features import load_feature_model

        with loading_weights(source):
            model, outputs = load_feature_model(source, task, meta, tokenizer, batch_size)
    elif is_exported(source):  # `plmkit export` wrote it: the task's forward as an ONNX graph
        from plmkit.export.runtime import OnnxModel, onnx_forward

        model = OnnxModel(source, meta)
        outputs = lambda items, progress: run_model(  # noqa: E731
            model, items, collate, onnx_forward, task.outputs, batch_size, torch.device("cpu"), progress
        )
    else:
        with loading_weights(source):
            model = task.load_model(source, meta).eval()
        check_tokenizer_matches(source, tokenizer, model.config)
        outputs = lambda items, progress: run_model(  # noqa: E731
            model, items, collate, task.forward, task.outputs, batch_size, progress=progress
        )
    return Loaded(task, tokenizer, meta, cfg, labels, model, outputs)


def predictions(
    loaded: Loaded, records: Sequence[Any], spec: str = "", progress: bool | None = None
) -> tuple[Featurized, Any]:
    """(the featurized records, the task's predictions for them); a progress bar (on a terminal) when
    `progress`, by default when there are over 1,000 items."""
    data = loaded.task.featurize(records, loaded.tokenizer, loaded.cfg, loaded.labels, spec)
    progress = len(data.items) > 1000 if progress is None else progress
    return data, loaded.task.assemble(data, loaded.outputs(data.items, progress))


def evaluate(
    model_dir: str | Path,
    data_spec: str,
    *,
    encoding: str | None = None,
    batch_size: int = 64,
    output: str | Path | None = None,
) -> dict[str, Any]:
    """Metrics of a trained model on labelled data (a file or builtin:NAME[:split]); with `output`, also
    metrics.json, a confusion matrix or per-type bars, and report.md / report.html there."""
    loaded = load(model_dir, batch_size)
    cfg = _cfg_from_meta(loaded.meta, encoding)
    loaded.cfg = cfg
    records = loaded.task.read(data_spec, cfg)
    data, pred = predictions(loaded, records, data_spec)
    if data.gold is None:
        raise DataError("no labels to score against", path=data_spec)
    metrics = loaded.task.metrics(data, pred) | {loaded.task.count_name: len(records)}
    if output is not None:
        from plmkit.report.evaluation import write_evaluation

        write_evaluation(output, metrics, loaded.labels.names, f"{loaded.task.name} on {data_spec}")
    return metrics


def predict(
    model_dir: str | Path, examples: Sequence[Any], *, batch_size: int = 64, loaded: Loaded | None = None
) -> list[dict[str, Any]]:
    """One output row per example (plmkit.data.examples.Example), in input order."""
    loaded = loaded or load(model_dir, batch_size)
    data, pred = predictions(loaded, loaded.task.unlabelled(examples))
    return loaded.task.decode(data, pred)


PREDICT_CHUNK = 2048  # records read, featurized and predicted at a time: flat memory, batches still sorted by length


def chunks(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """`records` in lists of `size`; a None among them ends a list early (and is dropped). Size 0: one list
    of all, the Nones dropped."""
    chunk: list[Any] = []
    for record in records:
        if record is not None:
            chunk.append(record)
        if chunk and size and (record is None or len(chunk) >= size):
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_rows(
    loaded: Loaded, records: Iterable[Any], *, chunk_size: int = PREDICT_CHUNK, progress: bool = True
) -> Iterator[dict[str, Any]]:
    """One output row per record (an Example, or what the task's `read_input` reads), in input order, as
    `predict` gives them, but taking `records` `chunk_size` at a time (0: all at once): each chunk is
    featurized, predicted and decoded, its rows yielded and the chunk dropped, so memory does not grow with
    the input. Every task's featurize, windows and decode work record by record, so a record's row is the
    same in any chunk (up to the last bits of a float: its batch's padding differs). A None among the
    records ends the chunk early (but for chunk size 0): what was read is answered before waiting for more
    (standard input).
    One progress bar (on a terminal, after 2 s) counts the records of the whole input: against their number
    when `records` has one (a list), without a total when it is read as it goes (a file, standard input)."""
    from tqdm.auto import tqdm

    total = len(records) if isinstance(records, Sized) else None
    disable = None if progress else True  # None: on a terminal only
    with tqdm(total=total, desc="predicting", unit=" records", leave=False, delay=2, disable=disable) as bar:
        for chunk in chunks(records, chunk_size):
            data, pred = predictions(loaded, loaded.task.unlabelled(chunk), progress=False)
            rows = loaded.task.decode(data, pred)
            del data, pred, chunk
            bar.update(len(rows))
            yield from rows
