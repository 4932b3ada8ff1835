"""`plmkit cross-validate`: k-fold training of any task, and the folds' models as one ensemble.

The training records are cut into K folds, deterministic from the seed (stratified by label when
every record has a class label). Model k trains on the other K-1 folds, keeps its best epoch by its
held-out fold, and predicts that fold: the out-of-fold predictions cover every training record once.
On test data each model predicts and the task's own `ensemble` makes one prediction of them
(averaged probabilities for classifiers, the mean for regression, a vote over the decoded tags for
taggers). A held-out score is a little optimistic, since the fold also chose its model's epoch; the
test scores are not. Every fold writes `fold-k/fold.json` when it is done; a run started again skips the folds
that have one and resumes a fold that stopped half-way from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from plmkit.errors import ConfigError


def fold_indices(records: Sequence[Any], k: int, seed: int) -> list[list[int]]:
    """K disjoint folds of record indices covering them all, in order within each fold; stratified by
    label when every record has a str label (and each label has at least K records)."""
    import numpy as np
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2:
        raise ConfigError(f"folds: {k}; k-fold training needs at least 2")
    if len(records) < k:
        raise ConfigError(f"folds: {k} folds of {len(records)} records; give at least one record a fold")
    labels = [getattr(r, "label", None) for r in records]
    index = np.zeros(len(records))
    if all(isinstance(y, str) for y in labels) and min(labels.count(y) for y in set(labels)) >= k:
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(index, labels)
    else:
        splits = KFold(k, shuffle=True, random_state=seed).split(index)
    return [sorted(int(i) for i in held) for _, held in splits]


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def cross_validate(
    task: str,
    model: str,
    train: str,
    output: str | Path,
    *,
    folds: int = 5,
    test: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train one model per fold of `train`; score each on its held-out fold, and the ensemble of them on
    `test` (a builtin data set's test split by default). Writes results.json, report.md / report.html,
    oof.jsonl (the out-of-fold predictions, one row per training record, in input order) and
    test_predictions.jsonl in `output`, and one model directory per fold. Run again after an interruption,
    it goes on where it stopped."""
    from plmkit.io import output_lock

    with output_lock(output):
        return _cross_validate(task, model, train, output, folds, test, config, overrides, command)


def _cross_validate(task, model, train, output, folds, test, config, overrides, command) -> dict[str, Any]:
    from plmkit.config import TrainConfig, build_config
    from plmkit.io import atomic_write_json, atomic_write_text
    from plmkit.registry import TASKS
    from plmkit.report.tables import Report, write_report
    from plmkit.train.run import load, open_model, predictions, tasks
    from plmkit.train.run import train as run_train

    tasks()
    cfg = build_config(TrainConfig, config, dict(overrides or {}) | {"task": task, "model": model})
    spec = TASKS.get(cfg.task)
    if spec.ensemble is None:
        raise ConfigError(f"task {cfg.task!r} has no way to ensemble its models")
    if test is None and train.startswith("builtin:"):
        test = ":".join(train.split(":")[:2]) + ":test"
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    records = spec.read(train, cfg)
    parts = fold_indices(records, folds, cfg.loop.seed)
    _, tokenizer = open_model(cfg)
    # every fold trains the same outputs; what is fitted on training data (keywords) each fold fits on its own
    labels = dataclasses.replace(spec.featurize(records, tokenizer, cfg, None, train).labels, keywords=None)
    started, rows = time.time(), []
    oof: list[Any] = [None] * len(records)
    # the test set featurized once: every fold reads it with the same options and labels (again only for a
    # fold whose inputs depend on what it fitted: its keywords)
    test_records = spec.read(test, cfg) if test else None
    test_data = spec.featurize(test_records, tokenizer, cfg, labels, test) if test else None
    test_preds = []
    for k, held in enumerate(parts):
        fold_dir, name = output / f"fold-{k + 1}", f"{train} (fold {k + 1} of {folds})"
        done, loaded = fold_dir / "fold.json", None
        if not done.is_file():
            held_set = set(held)
            rest = [r for i, r in enumerate(records) if i not in held_set]
            resume = (fold_dir / "checkpoint").is_dir()
            print(f"== fold {k + 1} of {folds}: {len(rest)} to train, {len(held)} held out" + (" (resuming)" * resume))
            result = run_train(
                name, fold_dir, cfg, dev_spec=f"{train} (held-out fold {k + 1})",
                records=(rest, [records[i] for i in held]), labels=labels, resume=resume, command=command,
            )  # fmt: skip
            loaded = load(fold_dir)
            data, pred = predictions(loaded, [records[i] for i in held])
            row = {"fold": k + 1, "train": len(rest), "held_out": len(held), "best_epoch": result["best_epoch"]}
            row |= {f"held_out_{m}": v for m, v in _scalars(spec.metrics(data, pred)).items()}
            row["seconds"] = round(result["seconds"])  # whole seconds, as compare and probe record them
            decoded = spec.decode(data, pred)
            atomic_write_json(done, row | {"oof": decoded})
        fold = json.loads(done.read_text(encoding="utf-8"))
        for i, decoded_row in zip(parts[k], fold.pop("oof")):
            oof[i] = {"fold": k + 1} | decoded_row
        rows.append(fold)
        if test_data is not None:
            loaded = loaded or load(fold_dir)
            fold_test = (
                test_data
                if loaded.labels == labels
                else spec.featurize(test_records, tokenizer, cfg, loaded.labels, test)
            )
            test_preds.append(spec.assemble(fold_test, loaded.outputs(fold_test.items, False)))
        print(json.dumps(fold, ensure_ascii=False), flush=True)
    summary: dict[str, Any] = {"task": cfg.task, "model": cfg.model, "train": train, "test": test, "folds": rows}
    main = spec.main_metric
    values = [r.get(f"held_out_{main}") for r in rows]
    summary[f"mean_held_out_{main}"] = sum(values) / len(values) if None not in values else None
    blocks: list[tuple[str, Any]] = [
        ("text", f"{folds} folds of `{train}` (seed {cfg.loop.seed}); each model chosen on its held-out fold."),
        ("table", (rows, [(k, k.replace("_", " ")) for k in rows[0]])),
    ]
    if test_data is not None:
        ensembled = spec.ensemble(test_preds)
        single = [_scalars(spec.metrics(test_data, p)) for p in test_preds]
        summary["test_per_fold"] = single
        summary["test_ensemble"] = _scalars(spec.metrics(test_data, ensembled))
        table = [{"model": f"fold {i + 1}"} | m for i, m in enumerate(single)]
        table.append({"model": "ensemble"} | summary["test_ensemble"])
        blocks += [("heading", f"Test: `{test}`"), ("table", (table, [(k, k) for k in table[-1]]))]
        lines = [json.dumps(r, ensure_ascii=False) for r in spec.decode(test_data, ensembled)]
        atomic_write_text(output / "test_predictions.jsonl", "\n".join(lines) + "\n")
    summary["seconds"] = round(time.time() - started, 1)
    atomic_write_text(output / "oof.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in oof) + "\n")
    atomic_write_json(output / "results.json", summary)
    write_report(Report(f"{folds}-fold cross-validation: {cfg.task} on {cfg.model}", blocks), output)
    return summary
