"""Distillation: a fine-tuned teacher's soft labels (and the gold ones) train a smaller student.

The student is the teacher's own model with fewer layers (`layers:N`: evenly spaced, the top one
kept; `bottom:N`: the bottom N, so each layer still reads the one it was trained on) or any other
model (a name, directory or hub id; its own tokenizer: the teacher's scores are per text, so the two
need not share a vocabulary). Loss on each example (Hinton et al. 2015):

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, gold)

regression: alpha * MSE(student, teacher) + (1 - alpha) * MSE(student, gold). With `vector_weight` w > 0
the student's sentence vector (what its classifier reads: the pooled or [CLS] state, before dropout) is
also pulled to the teacher's, + w * MSE(student vector, teacher vector), a hint in the sense of FitNets
(Romero et al. 2015) that tells a shallow student far more than C scores do. Unlabelled texts
(`unlabeled`, and `augment` noisy copies of each training text, as Tang et al. 2019 augment for their
students) add examples with the soft terms only. The distillation is the task record with its
featurize, collate, loss and build_model replaced, trained by the one runner.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from plmkit.config import TrainConfig
from plmkit.data.examples import Example
from plmkit.errors import ConfigError
from plmkit.tasks.base import Featurized, Task

TASKS = ("classification", "pair", "regression")
NO_LABEL = -100  # the target of an unlabelled example (classes); regression uses NaN


def augmented(texts: Sequence[str], copies: int, rng: random.Random, replace: float = 0.1) -> list[str]:
    """`copies` noisy variants of each text: a random span of 60-100% of it, then each character replaced,
    with probability `replace`, by one drawn from the characters of all the texts by their frequency."""
    counts = Counter(ch for text in texts for ch in text if not ch.isspace())
    alphabet, cumulative = list(counts), list(itertools.accumulate(counts.values()))
    out = []
    for text in texts:
        for _ in range(copies):
            keep = max(1, round(len(text) * rng.uniform(0.6, 1.0)))
            start = rng.randrange(len(text) - keep + 1)
            chars = list(text[start : start + keep])
            for i in range(len(chars)):
                if rng.random() < replace:
                    chars[i] = rng.choices(alphabet, cum_weights=cumulative)[0]
            out.append("".join(chars))
    return out


def sentence_vector_hook(model: torch.nn.Module, store: dict[str, torch.Tensor]):
    """Keep what `model`'s classifier reads (the input of its `dropout`: the pooled or [CLS] vector (B, H))
    in store["vector"] at every forward. The hook's handle (`.remove()` undoes it), or None when the model
    has no such dropout (a TextCNN head)."""
    dropout = getattr(model, "dropout", None)
    if not isinstance(dropout, torch.nn.Dropout):
        return None
    return dropout.register_forward_pre_hook(lambda module, args: store.__setitem__("vector", args[0]))


def distill_loss(
    scores: torch.Tensor,
    batch: dict[str, torch.Tensor],
    temperature: float,
    alpha: float,
    vector: torch.Tensor | None = None,
    vector_weight: float = 0.0,
) -> torch.Tensor:
    """scores (B, C) against the teacher's (B, C) and the gold labels (B,), NO_LABEL / NaN where none;
    with `vector_weight`, the student's sentence `vector` (B, H) against the teacher's (B, H)."""
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
    loss = alpha * soft + (1 - alpha) * hard
    if vector_weight > 0 and vector is not None:
        target = batch["teacher_vector"]  # (B, H)
        if vector.shape != target.shape:
            raise ConfigError(
                f"vector_weight: the student's sentence vectors have {vector.shape[-1]} dimensions, the teacher's "
                f"{target.shape[-1]}; pull vectors of the same width (a layers:N or bottom:N student) or set it to 0"
            )
        loss = loss + vector_weight * F.mse_loss(vector.float(), target.float())
    return loss


def distillation_task(
    task: Task,
    teacher_scores: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor | None]],
    temperature: float,
    alpha: float,
    build_model=None,
    vector_weight: float = 0.0,
) -> Task:
    """`task` with each item carrying the teacher's scores and sentence vector (`teacher_scores(records)` ->
    ((N, C), (N, H) or None)), unlabelled records kept with NO_LABEL, and the distillation loss."""
    regression = task.label_type == "float"
    store: dict[str, torch.Tensor] = {}  # the student's sentence vector of the batch just run

    def build(source, labels, cfg, tokenizer) -> torch.nn.Module:
        model = (build_model or task.build_model)(source, labels, cfg, tokenizer)
        if vector_weight > 0 and sentence_vector_hook(model, store) is None:
            raise ConfigError("vector_weight: the student's head reads no sentence vector (use head pool or cls)")
        return model

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
        soft, vectors = teacher_scores(ordered)  # (N, C), (N, H) or None
        for n, (item, row) in enumerate(zip(items, soft)):
            item["teacher"] = row
            if vector_weight > 0:
                item["teacher_vector"] = vectors[n]
        return dataclasses.replace(data, records=ordered, items=items)

    def collate(feats: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        batch = task.collate(feats, pad_id)
        batch["teacher"] = torch.stack([f["teacher"] for f in feats]).float()  # (B, C)
        if feats and "teacher_vector" in feats[0]:
            batch["teacher_vector"] = torch.stack([f["teacher_vector"] for f in feats]).float()  # (B, H)
        return batch

    def loss(model, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return distill_loss(scores, batch, temperature, alpha, store.pop("vector", None), vector_weight)

    return dataclasses.replace(task, featurize=featurize, collate=collate, loss=loss, build_model=build)


def teacher_outputs(
    loaded, records: Sequence[Any], cache: Path | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's scores (N, C) for `records` and its sentence vectors (N, H) (None for a head without
    one), from `cache` (a directory) when an earlier run of the same teacher on the same texts left them."""
    from safetensors.torch import load_file, save_file

    from plmkit.io import atomic_path
    from plmkit.train.features import items_digest
    from plmkit.train.infer import run_model
    from plmkit.train.processes import is_main_process

    task = loaded.task
    examples = task.unlabelled([Example(text=r.text, text_pair=r.text_pair) for r in records])
    data = task.featurize(examples, loaded.tokenizer, loaded.cfg, loaded.labels, "")
    path = (
        cache / f"{hashlib.sha256(items_digest(data.items).encode()).hexdigest()[:40]}.safetensors" if cache else None
    )
    if path is not None and path.is_file():
        saved = load_file(str(path))
        if len(saved["scores"]) == len(examples):
            return saved["scores"], saved.get("vectors")
    store: dict[str, torch.Tensor] = {}
    hooked = sentence_vector_hook(loaded.model, store)

    def outputs(model, scores, batch) -> list[tuple[Any, torch.Tensor | None]]:
        vectors = store.pop("vector", None)  # (B, H), of the batch just run
        rows = task.outputs(model, scores, batch)
        return [(row, None if vectors is None else vectors[i].float()) for i, row in enumerate(rows)]

    collate = lambda feats: task.collate(feats, pad_id=loaded.tokenizer.pad_token_id)  # noqa: E731
    try:
        pairs = run_model(loaded.model, data.items, collate, task.forward, outputs, 64, progress=len(examples) > 1000)
    finally:
        if hooked:
            hooked.remove()
    scores = task.assemble(data, [row for row, _ in pairs]).float()  # (N, C)
    vectors = torch.stack([v for _, v in pairs]) if hooked and pairs else None  # (N, H)
    if path is not None and is_main_process():  # under `accelerate launch` the others read what it wrote
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"scores": scores} | ({"vectors": vectors} if vectors is not None else {}), str(tmp))
    return scores, vectors


def teacher_cache(loaded) -> Path:
    """Where the teacher's outputs are kept between runs ($PLMKIT_CACHE or ~/.cache/plmkit, then teacher/):
    one folder per teacher, named by a digest of its configuration and weights."""
    from plmkit.io import cache_root
    from plmkit.train.features import fingerprint

    return cache_root() / "teacher" / fingerprint(loaded.model)[:40]


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
    vector_weight: float = 0.0,
    augment: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Train `student` (layers:N or a model) on `train_spec` (and the `unlabeled` texts, and `augment` noisy
    copies of each training text) from the fine-tuned `teacher`'s scores (and, with `vector_weight`, its
    sentence vectors); the student is saved at `output` like any trained model."""
    from plmkit.models.encoders import resolve_model
    from plmkit.models.partial import keep_bottom_layers, keep_spaced_layers
    from plmkit.train.run import default_dev, load, train

    if temperature <= 0 or not 0 <= alpha <= 1 or vector_weight < 0 or augment < 0:
        raise ConfigError(
            "distill: temperature > 0, alpha in [0, 1], vector_weight >= 0 and augment >= 0; "
            f"got {temperature}, {alpha}, {vector_weight}, {augment}"
        )
    teacher_dir = resolve_model(str(teacher))
    loaded = load(teacher_dir)
    task = loaded.task
    if task.name not in TASKS or loaded.meta.get("mode", "finetune") == "features":
        raise ConfigError(f"distill: a fine-tuned teacher of {', '.join(TASKS)}; {teacher} is {task.name} "
                          f"in mode {loaded.meta.get('mode')}")  # fmt: skip
    if vector_weight > 0 and not isinstance(getattr(loaded.model, "dropout", None), torch.nn.Dropout):
        raise ConfigError(f"vector_weight: the teacher {teacher} gives no sentence vector (needs head pool or cls)")
    if augment and task.pair:
        raise ConfigError("augment: noisy copies are made of single texts; this teacher reads pairs")
    build_model = None
    kind, _, count = student.partition(":")
    if kind in ("layers", "bottom"):
        if not count.isdigit():
            raise ConfigError(f"student: {student!r}; layers:N or bottom:N (N of the teacher's layers) or a model")
        keep = keep_spaced_layers if kind == "layers" else keep_bottom_layers
        build_model = lambda source, labels, c, tok: keep(task.load_model(teacher_dir, loaded.meta), int(count))  # noqa: E731
    cfg = student_config(cfg, loaded.meta, teacher_dir, student)

    cache = teacher_cache(loaded)

    def teacher_scores(records) -> tuple[torch.Tensor, torch.Tensor | None]:
        from plmkit.train.processes import main_first

        scores, vectors = main_first(lambda: teacher_outputs(loaded, records, cache))  # the others read its cache
        return scores, vectors if vector_weight > 0 else None

    dtask = distillation_task(task, teacher_scores, temperature, alpha, build_model, vector_weight)
    dev_spec = default_dev(train_spec, dev_spec)
    train_records = task.read(train_spec, cfg)
    seen = {(r.text, r.text_pair) for r in train_records}
    noisy = augmented([r.text for r in train_records], augment, random.Random(cfg.loop.seed)) if augment else []
    texts = dict.fromkeys([*(unlabeled or []), *noisy])
    extra = [Example(text=t) for t in texts if (t, None) not in seen and t.strip()]
    records = (train_records + extra, task.read(dev_spec, cfg) if dev_spec else None)
    result = train(train_spec, output, cfg, dev_spec=dev_spec, command=command, records=records, labels=loaded.labels,
                   task=dtask)  # fmt: skip
    return result | {"teacher": str(teacher), "student": student, "unlabeled_examples": len(extra),
                     "temperature": temperature, "alpha": alpha, "vector_weight": vector_weight,
                     "augment": augment}  # fmt: skip
