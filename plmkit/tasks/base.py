"""A task is one record: its whole data path, its model, its loss, its metrics and its decoder.

Every field has one signature for every task; the one runner (plmkit.train.run) calls them
in this order, in every mode:

    read(spec, cfg, labelled)                  -> records (Examples, Sentences, ...)
    unlabelled(examples)                       -> records to predict for (from `predict`'s input)
    featurize(records, tokenizer, cfg, labels, spec)
                                               -> Featurized: items the encoder reads, gold, labels
    collate(items, pad_id)                     -> batch of tensors
    build_model(source, labels, cfg, tokenizer) -> the task model on a pretrained encoder
    load_model(source, meta)                   -> the task model of a saved directory
    forward(model, batch)                      -> scores: logits (B, C) or emissions (B, U, K)
    loss(model, scores, batch)                 -> scalar
    outputs(model, scores, batch)              -> one output per item: a logit row (C,), tag ids (U,)
    assemble(data, outputs)                    -> predictions: logits (N, C), tags per sentence
    metrics(data, predictions)                 -> {name: value}
    decode(data, predictions)                  -> one output row per record

Items are dicts; every item has `input_ids` and `segments` (1 text, 2 text pair, 0 special) and,
when labelled, its target under `target_key`; `keep` lists the positions a feature-mode head reads
(default all). Partial fine-tuning adds `hidden` (cached states) to items, which `collate` pads and
`forward` feeds to the model's top as `inputs_embeds`. Feature mode swaps `collate` and `forward`
for its cached versions (plmkit.train.features) and keeps everything else.
`modes` lists the training modes it takes (qa has no feature-mode head) and `read_input` how
`predict` reads an input file, when not as texts by column.
`options` names the task-specific data options the task reads (truncation for texts, windows and
bigrams for tagging): set for a task that does not read it, an option is an error; plmkit.json keeps
them, with whatever `meta(tokenizer, cfg)` adds, and `summary(data, cfg)` adds to train's result.
Shapes: B batch, T tokens, U units, H hidden, C classes, K tags, N items.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from plmkit.data.batching import length_mask, pad


@dataclass
class Labels:
    """What training fixed about the outputs: class names (empty for regression) or tags, the
    tagging scheme, and each class's keywords (option `keywords`). Saved in plmkit.json as `labels`,
    `scheme` and `class_keywords`."""

    names: list[str] = field(default_factory=list)
    scheme: str | None = None
    keywords: dict[str, list[str]] | None = None  # class -> its keywords, chosen on the training split


@dataclass
class Featurized:
    """One data set made ready for the model."""

    records: list[Any]  # what was read: one prediction row each
    items: list[dict[str, Any]]  # what the encoder reads: a text, a pair, or a window of a sentence
    labels: Labels  # fitted on these records when none were given (training), else the given ones
    gold: Any = None  # what `metrics` compares against; None when unlabelled
    context: Any = None  # what `assemble` and `decode` need besides items (tagging: the encoded sentences)


@dataclass(frozen=True)
class Task:
    name: str
    pair: bool  # needs text_pair
    label_type: str  # "class", "float" or "tags"
    main_metric: str
    read: Callable[..., list[Any]]
    unlabelled: Callable[..., list[Any]]
    featurize: Callable[..., Featurized]
    collate: Callable[..., dict[str, torch.Tensor]]
    build_model: Callable[..., torch.nn.Module]
    load_model: Callable[..., torch.nn.Module]
    forward: Callable[..., torch.Tensor]
    loss: Callable[..., torch.Tensor]
    outputs: Callable[..., list[Any]]
    assemble: Callable[..., Any]
    metrics: Callable[..., dict[str, Any]]
    decode: Callable[..., list[dict[str, Any]]]
    target_key: str = "label"  # the item key of the target
    feature_kind: str = "sequence"  # which feature-mode heads fit: sequence | pair | tagging
    default_head: str | None = None  # the head when the config names none (None: the model family's own)
    heads: tuple[str, ...] = ()  # the heads fine-tuning takes
    # the task-specific data options it reads (config.TASK_OPTIONS); plmkit.json keeps them
    options: tuple[str, ...] = ()
    # more for plmkit.json: what those options resolved to for this tokenizer
    meta: Callable[..., dict[str, Any]] = lambda tokenizer, cfg: {}
    # more for train's summary, from the featurized training data
    summary: Callable[..., dict[str, Any]] = lambda data, cfg: {}
    # the predictions of several models of this task (k folds) made one: averaged probabilities, a vote
    ensemble: Callable[[list[Any]], Any] | None = None
    greater_is_better: bool = True
    count_name: str = "examples"  # what `evaluate` counts: examples, sentences, questions
    modes: tuple[str, ...] = ("finetune", "partial", "features")  # the training modes it takes
    # predict's --input FILE (path, encoding) -> records, a list or an iterator that reads as predict takes
    # them (predict works through them in chunks); None: texts (and pairs) by column, or stdin lines
    read_input: Callable[[str, str], Iterable[Any]] | None = None


def pad_hidden(feats: list[dict[str, Any]]) -> torch.Tensor:
    """Cached hidden states (mode=partial), (T_i, H) each, padded with zeros to (B, T, H) in fp32."""
    lengths = [f["hidden"].shape[0] for f in feats]
    out = torch.zeros(len(feats), max(lengths), feats[0]["hidden"].shape[1])  # (B, T, H)
    for row, f in enumerate(feats):
        out[row, : lengths[row]] = f["hidden"].float()
    return out


def collate_tokens(feats: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask (B, T) of items, padded; `hidden` (B, T, H) when they carry cached states."""
    input_ids = pad([f["input_ids"] for f in feats], pad_id)  # (B, T)
    lengths = torch.tensor([len(f["input_ids"]) for f in feats])  # (B,)
    batch = {"input_ids": input_ids, "attention_mask": length_mask(lengths, input_ids.shape[1]).long()}  # (B, T)
    if feats and "hidden" in feats[0]:
        batch["hidden"] = pad_hidden(feats)  # (B, T, H)
    return batch
