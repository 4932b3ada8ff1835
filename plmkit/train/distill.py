"""Distillation: a fine-tuned teacher's soft labels (and the gold ones) train a smaller student.

The student is the teacher's own model with fewer layers (`layers:N`: evenly spaced, the top one
kept; `bottom:N`: the bottom N, so each layer still reads the one it was trained on) or any other
model (a name, directory or hub id; its own tokenizer: the teacher's scores are per text, so the two
need not share a vocabulary). Loss on each example (Hinton et al. 2015):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, gold)

regression: alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, gold). Unlabelled texts
(`unlabeled`) add examples with the soft term only. The distillation is the task record with its
featurize, collate, loss and (for layers:N) build_model replaced, trained by the one runner.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from plmkit.config import TrainConfig
from plmkit.data.examples import Example
from plmkit.errors import ConfigError
from plmkit.tasks.base import Featurized, Task

TASKS = ("classification", "pair", "regression")
NO_LABEL = -100  # the target of an unlabelled example (classes); regression uses NaN


def distill_loss(
    scores: torch.Tensor, batch: dict[str, torch.Tensor], temperature: float, alpha: float
) -> torch.Tensor:
    """scores (B, C) against the teacher's (B, C) and the gold labels (B,), NO_LABEL / NaN where none."""
    teacher, gold = batch["teacher"].float(), batch["labels"]
    if scores.shape[-1] == 1:  # regression
        student = scores.float().squeeze(-1)  # (B,)
        soft = F.mse_loss(student, teacher.squeeze(-1))
        has = ~gold.isnan()
        hard = F.mse_loss(student[has], gold[has].float()) if has.any() else student.sum() * 0
    else:
        t = temperature
        log_student = F.log_softmax(scores.float() / t, dim=-1)  # (B, C)
        soft = F.kl_div(log_student, F.softmax(teacher / t, dim=-1), reduction="batchmean") * t * t
        has = gold != NO_LABEL
        hard = F.cross_entropy(scores.float()[has], gold[has]) if has.any() else soft * 0
    return alpha * soft + (1 - alpha) * hard


def distillation_task(task: Task, teacher_scores, temperature: float, alpha: float, build_model=None) -> Task:
    """`task` with each item carrying the teacher's scores (`teacher_scores(records)` -> (N, C)),
    unlabelled records kept with NO_LABEL, and the distillation loss."""
    regression = task.label_type == "float"

    def featurize(records, tokenizer, cfg, labels, spec) -> Featurized:
        labelled = [r for r in records if r.label is not None]
        unlabelled = [r for r in records if r.label is None]
        data = task.featurize(labelled, tokenizer, cfg, labels, spec)
        items = list(data.items)
        if unlabelled:
            extra = task.featurize(task.unlabelled(unlabelled), tokenizer, cfg, data.labels, spec).items
            for item in extra:
                item[task.target_key] = float("nan") if regression else NO_LABEL
            items += extra
        ordered = labelled + unlabelled
        if len(items) != len(ordered):
            raise ConfigError(f"distill: {task.name} gave {len(items)} items for {len(ordered)} records")
        soft = teacher_scores(ordered)  # (N, C)
        for item, row in zip(items, soft):
            item["teacher"] = row
        return dataclasses.replace(data, records=ordered, items=items)

    def collate(feats: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        batch = task.collate(feats, pad_id)
        batch["teacher"] = torch.stack([f["teacher"] for f in feats]).float()  # (B, C)
        return batch

    return dataclasses.replace(
        task,
        featurize=featurize,
        collate=collate,
        loss=lambda model, scores, batch: distill_loss(scores, batch, temperature, alpha),
        build_model=build_model or task.build_model,
    )


def student_config(cfg: TrainConfig, teacher_meta: dict[str, Any], teacher_dir: str, student: str) -> TrainConfig:
    """The student's options: the teacher's task and data options (max_length, truncation, ...) under
    `cfg`'s loop; `layers:N` and `bottom:N` also take the teacher's model and head."""
    cfg = dataclasses.replace(cfg, task=teacher_meta["task"], max_length=teacher_meta["max_length"])
    for key in ("truncation", "head_tokens"):
        if key in teacher_meta:
            setattr(cfg, key, teacher_meta[key])
    if student.startswith(("layers:", "bottom:")):
        cfg.model, cfg.head = teacher_dir, teacher_meta.get("head")
        for key in ("pooling", "word_fusion", "word_buckets", "word_dim"):
            if key in teacher_meta:
                setattr(cfg, key, teacher_meta[key])
    else:
        cfg.model = student
    return cfg


def distill(
    teacher: str,
    student: str,
    train_spec: str,
    output,
    cfg: TrainConfig,
    *,
    dev_spec: str | None = None,
    unlabeled: list[str] | None = None,
    temperature: float = 2.0,
    alpha: float = 0.5,
    command: str | None = None,
) -> dict[str, Any]:
    """Train `student` (layers:N or a model) on `train_spec` (and the `unlabeled` texts) from the
    fine-tuned `teacher`'s scores; the student is saved at `output` like any trained model."""
    from plmkit.models.encoders import resolve_model
    from plmkit.models.partial import keep_bottom_layers, keep_spaced_layers
    from plmkit.train.run import default_dev, load, predictions, train

    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ConfigError(f"distill: temperature > 0 and alpha in [0, 1]; got {temperature}, {alpha}")
    teacher_dir = resolve_model(str(teacher))
    loaded = load(teacher_dir)
    task = loaded.task
    if task.name not in TASKS or loaded.meta.get("mode", "finetune") == "features":
        raise ConfigError(f"distill: a fine-tuned teacher of {', '.join(TASKS)}; {teacher} is {task.name} "
                          f"in mode {loaded.meta.get('mode')}")  # fmt: skip
    build_model = None
    kind, _, count = student.partition(":")
    if kind in ("layers", "bottom"):
        if not count.isdigit():
            raise ConfigError(f"student: {student!r}; layers:N or bottom:N (N of the teacher's layers) or a model")
        keep = keep_spaced_layers if kind == "layers" else keep_bottom_layers
        build_model = lambda source, labels, c, tok: keep(task.load_model(teacher_dir, loaded.meta), int(count))  # noqa: E731
    cfg = student_config(cfg, loaded.meta, teacher_dir, student)

    def teacher_scores(records) -> torch.Tensor:
        examples = [Example(text=r.text, text_pair=r.text_pair) for r in records]
        return predictions(loaded, task.unlabelled(examples))[1].float()  # (N, C)

    dtask = distillation_task(task, teacher_scores, temperature, alpha, build_model)
    dev_spec = default_dev(train_spec, dev_spec)
    train_records = task.read(train_spec, cfg)
    seen = {(r.text, r.text_pair) for r in train_records}
    extra = [Example(text=t) for t in dict.fromkeys(unlabeled or []) if (t, None) not in seen and t.strip()]
    records = (train_records + extra, task.read(dev_spec, cfg) if dev_spec else None)
    result = train(train_spec, output, cfg, dev_spec=dev_spec, command=command, records=records, labels=loaded.labels,
                   task=dtask)  # fmt: skip
    return result | {"teacher": str(teacher), "student": student, "unlabeled_examples": len(extra),
                     "temperature": temperature, "alpha": alpha}  # fmt: skip
