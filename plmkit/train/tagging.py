"""Fine-tuning, evaluation and prediction for the tagging tasks (ner, cws)."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

import plmkit.tasks.tagging  # noqa: F401  (registers its tasks)
from plmkit import __version__
from plmkit.config import TrainConfig, to_dict
from plmkit.data.builtin import load_tagged_builtin
from plmkit.data.tagging import SCHEMES, Sentence, detect_scheme, read_tagged
from plmkit.data.truncation import backend_and_layout
from plmkit.errors import ConfigError, DataError, ModelError
from plmkit.models.encoders import check_tokenizer_matches, load_config, load_tokenizer, read_plmkit_meta, resolve_model
from plmkit.models.partial import keep_bottom_layers
from plmkit.registry import TASKS
from plmkit.tasks.tagging import (Encoded, TaggingTask, collate_windows, encode_sentences, make_features, stitch,
                                  unit_tokens_for)
from plmkit.train.finetune import best_model_saver, check_limits, run_summary
from plmkit.train.loop import LoopState, train_loop
from plmkit.train.optim import finetune_setup


def load_sentences(spec: str, task: TaggingTask, encoding: str = "utf-8") -> list[Sentence]:
    return load_tagged_builtin(spec) if spec.startswith("builtin:") else read_tagged(spec, task.name, encoding)


def scheme_of(sentences: Sequence[Sentence], task: TaggingTask, spec: str) -> str:
    tags = {t for s in sentences if s.tags is not None for t in s.tags}
    scheme = detect_scheme(tags) if tags else task.schemes[0]
    if scheme not in task.schemes:
        raise DataError(f"task {task.name!r} takes {' or '.join(s.upper() for s in task.schemes)} tags; "
                        f"these are {scheme.upper()} ({', '.join(sorted(tags)[:8])})", path=spec)
    return scheme


def label_set(encoded: Sequence[Encoded], scheme: str) -> list[str]:
    """Every tag of the scheme for each type seen in training: O first when the scheme has it."""
    kinds = sorted({t.partition("-")[2] for e in encoded for t in e.tags or () if t != "O"})
    prefixes = {"bio": "BI", "bioes": "BIES", "bmes": "BMES"}[scheme]
    tags = [f"{p}-{k}" if k else p for k in kinds for p in prefixes]
    return (["O"] if scheme != "bmes" else []) + tags


def check_known(encoded: Sequence[Encoded], labels: list[str], spec: str) -> None:
    known = set(labels)
    for e in encoded:
        for i, tag in enumerate(e.tags or ()):
            if tag not in known:
                s = e.sentence
                field = "tag" if s.units is not None else "entities"
                raise DataError(f"tag {tag!r} was not seen in training (known: {', '.join(labels)})",
                                path=s.path or spec, line=s.unit_line(i), field=field)


def predict_tags(model, encoded: Sequence[Encoded], feats: Sequence[dict[str, Any]], pad_id: int, batch_size: int,
                 default: str, device: torch.device | None = None, progress: bool = False) -> list[list[str]]:
    """Tags per unit of every sentence: windows decoded in length-sorted batches, then stitched."""
    from tqdm.auto import tqdm

    device = device or next(model.parameters()).device
    order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))
    window_tags: list[list[int]] = [[] for _ in feats]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="tagging", leave=False,
                          disable=None if progress else True):  # None: on a terminal only, not in logs
            idx = order[start : start + batch_size]
            batch = {k: v.to(device) for k, v in collate_windows([(0, i, {**feats[i], "tags": None}) for i in idx], pad_id).items()}
            emissions = model(batch["input_ids"], batch["attention_mask"], batch["unit_pos"], batch["unit_mask"],
                              inputs_embeds=batch.get("hidden"), bigrams=batch.get("bigrams"))  # (B, U, K)
            decoded = model.decode(emissions, batch["unit_mask"]).cpu()  # (B, U)
            for i, row in zip(idx, decoded):
                window_tags[i] = row[: len(feats[i]["unit_pos"])].tolist()
    model.train(was_training)
    return stitch(encoded, feats, window_tags, model.labels, default)


def train(train_spec: str, output: str | Path, cfg: TrainConfig, *, dev_spec: str | None = None, resume: bool = False,
          command: str | None = None, callbacks: Sequence[Callable[[LoopState], None]] = ()) -> dict[str, Any]:
    """Fine-tune `cfg.model` with a tagging head on `train_spec`; the best model by dev F1 is saved at `output`."""
    task: TaggingTask = TASKS.get(cfg.task)
    head = cfg.head or task.default_head
    if head not in task.heads:
        raise ConfigError(f"head: unknown {head!r} for task {task.name}; known: {', '.join(task.heads)}")
    if cfg.bigram_buckets < 0 or cfg.bigram_buckets == 1 or cfg.bigram_dim < 1:
        raise ConfigError(f"bigram_buckets: 0 (off) or at least 2, and bigram_dim at least 1; got "
                          f"{cfg.bigram_buckets} and {cfg.bigram_dim}")
    output = Path(output)
    started = time.time()
    if dev_spec is None and train_spec.startswith("builtin:"):
        dev_spec = ":".join(train_spec.split(":")[:2]) + ":dev"
    train_s = load_sentences(train_spec, task, cfg.encoding)
    dev_s = load_sentences(dev_spec, task, cfg.encoding) if dev_spec else []
    scheme = scheme_of(train_s, task, train_spec)

    source = resolve_model(cfg.model)
    model_config = load_config(source, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    check_limits(source, cfg, model_config, tokenizer)
    unit_tokens = unit_tokens_for(tokenizer, cfg.unit_tokens)
    train_enc = encode_sentences(train_s, tokenizer, scheme, unit_tokens)
    dev_enc = encode_sentences(dev_s, tokenizer, scheme, unit_tokens)
    labels = label_set(train_enc, scheme)
    check_known(dev_enc, labels, dev_spec or "")
    prefix, suffix = backend_and_layout(tokenizer)[1].single
    index = {tag: i for i, tag in enumerate(labels)}
    window = (prefix, suffix, cfg.max_length, cfg.window_overlap)
    train_feats = make_features(train_enc, *window, index, cfg.bigram_buckets)
    dev_feats = make_features(dev_enc, *window, None, cfg.bigram_buckets)
    if not train_feats:
        raise DataError("no sentence has a token the tokenizer keeps", path=train_spec)

    torch.manual_seed(cfg.loop.seed)
    model = task.build_model(source, labels, cfg.dropout, cfg.trust_remote_code, head=head, scheme=scheme,
                             bigram_buckets=cfg.bigram_buckets, bigram_dim=cfg.bigram_dim)
    if cfg.keep_layers:
        keep_bottom_layers(model, cfg.keep_layers)
    param_groups, before_batch = finetune_setup(model, cfg)  # the head: everything outside `encoder.`
    pad_id = tokenizer.pad_token_id
    dev_gold = [e.tags for e in dev_enc]
    trained, extra = model, {}
    if cfg.mode == "partial":  # the frozen bottom runs once over every window; the loop trains the top view
        from plmkit.train.partial import prepare

        cached = time.time()
        trained, train_feats, dev_feats = prepare(model, cfg, train_feats, dev_feats, partial(collate_windows, pad_id=pad_id))
        extra["extract_seconds"] = round(time.time() - cached, 1)

    def evaluate(model, accelerator) -> dict[str, float]:
        pred = predict_tags(accelerator.unwrap_model(model), dev_enc, dev_feats, pad_id, cfg.loop.eval_batch_size,
                            task.default_tag, accelerator.device)
        scores = task.metrics(dev_gold, pred, scheme)
        return {f"dev_{k}": scores[k] for k in ("f1", "precision", "recall")}

    meta = {
        "plmkit_version": __version__, "task": task.name, "head": head, "scheme": scheme, "labels": labels,
        "base_model": cfg.model, "max_length": cfg.max_length, "window_overlap": cfg.window_overlap,
        "unit_tokens": unit_tokens, "bigram_buckets": cfg.bigram_buckets, "bigram_dim": cfg.bigram_dim,
        "train": train_spec, "dev": dev_spec, "command": command, "seed": cfg.loop.seed, "config": to_dict(cfg),
    }
    saver = best_model_saver(output, tokenizer, meta)
    save_best = lambda _trained, state: saver(model, state)  # noqa: E731  (the whole model, also in partial mode)
    state = train_loop(
        trained, task.loss, train_feats, [len(f["input_ids"]) for f in train_feats], partial(collate_windows, pad_id=pad_id),
        cfg.loop, output, evaluate=evaluate if dev_feats else None, metric=f"dev_{task.main_metric}",
        greater_is_better=True, save_best=save_best, resume=resume, callbacks=callbacks, param_groups=param_groups,
        before_batch=before_batch, find_unused_parameters=cfg.gradual_unfreeze,
    )
    if not dev_feats:
        save_best(model, state)
    return run_summary(output, state, started) | {"head": head, "scheme": scheme, "windows": len(train_feats)} | extra


def load_trained(model_dir: str | Path):
    """(tagger, tokenizer, task, meta) of a directory that `train` wrote."""
    from safetensors.torch import load_file

    source = resolve_model(str(model_dir))
    meta = read_plmkit_meta(source)
    if meta is None:
        raise ModelError(f"{source}: no plmkit.json; it is not a model that plmkit train saved")
    task: TaggingTask = TASKS.get(meta["task"])
    if meta.get("scheme") not in SCHEMES or meta.get("head") not in task.heads:
        raise ModelError(f"{source}/plmkit.json: no valid 'scheme' and 'head' for a tagging model")
    config = load_config(source)
    model = task.build_model(source, meta["labels"], head=meta["head"], scheme=meta["scheme"], config=config,
                             bigram_buckets=meta.get("bigram_buckets", 0), bigram_dim=meta.get("bigram_dim", 64))
    model.load_hf_state_dict(load_file(str(Path(source) / "model.safetensors")))
    tokenizer = load_tokenizer(source)
    check_tokenizer_matches(source, tokenizer, config)
    model.eval()
    return model, tokenizer, task, meta


def _tag(loaded, sentences: Sequence[Sentence], batch_size: int) -> tuple[list[Encoded], list[list[str]]]:
    model, tokenizer, task, meta = loaded
    encoded = encode_sentences(sentences, tokenizer, meta["scheme"], meta.get("unit_tokens", "word"))
    prefix, suffix = backend_and_layout(tokenizer)[1].single
    feats = make_features(encoded, prefix, suffix, meta["max_length"], meta["window_overlap"], None,
                          meta.get("bigram_buckets", 0))
    pred = predict_tags(model, encoded, feats, tokenizer.pad_token_id, batch_size, task.default_tag,
                        progress=len(feats) > 1000)
    return encoded, pred


def evaluate(model_dir: str | Path, data_spec: str, *, encoding: str | None = None, batch_size: int = 64) -> dict[str, Any]:
    loaded = load_trained(model_dir)
    _, _, task, meta = loaded
    sentences = load_sentences(data_spec, task, encoding or "utf-8")
    scheme_of(sentences, task, data_spec)
    encoded, pred = _tag(loaded, sentences, batch_size)
    check_known(encoded, meta["labels"], data_spec)
    return task.metrics([e.tags for e in encoded], pred, meta["scheme"]) | {"sentences": len(sentences)}


def predict(model_dir: str | Path, texts: Sequence[str], *, batch_size: int = 64, loaded=None) -> list[dict[str, Any]]:
    """Entities ({text, type, start, end}) or words for each text, in input order."""
    loaded = loaded or load_trained(model_dir)
    _, _, task, meta = loaded
    sentences = [Sentence(text, None) for text in texts]
    encoded, pred = _tag(loaded, sentences, batch_size)
    return [{"text": e.sentence.text} | task.decode(e, tags, meta["scheme"]) for e, tags in zip(encoded, pred)]
