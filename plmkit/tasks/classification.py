"""Single-text and sentence-pair classification, and sentence-pair regression: one prediction per text or pair.

The model is Hugging Face's *ForSequenceClassification on the checkpoint ([CLS] or the
family's own pooling -> dropout -> dense), so a saved directory also opens with
`transformers.pipeline("text-classification")`; the loss stays outside the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from plmkit.data.examples import Example
from plmkit.errors import ConfigError, DataError
from plmkit.registry import TASKS
from plmkit.tasks.base import Featurized, Labels, Task, collate_tokens

SEQUENCE_HEADS = ("cls", "pool", "textcnn", "rnn_cnn")


def build_sequence_classifier(
    source: str,
    labels: list[str],
    dropout: float | None = None,
    trust_remote_code: bool = False,
    pad_token_id: int | None = None,
    head: str | None = None,
    pooling: str = "mean",
    words: dict[str, Any] | None = None,
) -> torch.nn.Module:
    """head `cls` (default): the family's own *ForSequenceClassification; `pool`: masked `pooling`
    (mean | max | mean_max) over the real tokens; `textcnn`, `rnn_cnn`: those heads on the token
    states (plmkit.models.pooled, plmkit.models.text_heads)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"num_labels": max(1, len(labels))}
    if labels:
        kwargs["id2label"] = dict(enumerate(labels))
        kwargs["label2id"] = {label: i for i, label in enumerate(labels)}
    else:
        kwargs["problem_type"] = "regression"
    if dropout is not None:
        for key in ("hidden_dropout_prob", "classifier_dropout", "resid_pdrop", "dropout"):
            if hasattr(config, key):
                kwargs[key] = dropout
    if getattr(config, "pad_token_id", None) is None and pad_token_id is not None:
        kwargs["pad_token_id"] = pad_token_id  # GPT-style models find the last real token by it
    if words and head not in ("pool", "textcnn", "rnn_cnn"):
        raise ConfigError(f"word_fusion: needs head pool, textcnn or rnn_cnn, which read every token; not {head}")
    if head in ("pool", "textcnn", "rnn_cnn"):
        from plmkit.models.pooled import build_pooled_classifier

        label_kwargs = {k: v for k, v in kwargs.items() if k in ("num_labels", "id2label", "label2id", "problem_type")}
        return build_pooled_classifier(source, pooling, label_kwargs, dropout, trust_remote_code, head, words)
    return AutoModelForSequenceClassification.from_pretrained(
        source, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
    )


# --- data: read, featurize, collate ------------------------------------------------------------------------------


def read(spec: str, cfg, labelled: bool = True, *, pair: bool, label_type: str) -> list[Example]:
    """Examples from a file or builtin:NAME[:split], checked for what the task needs."""
    from plmkit.data.builtin import load_builtin
    from plmkit.data.readers import read_examples

    if spec.startswith("builtin:"):
        examples = load_builtin(spec)
        if pair and any(ex.text_pair is None for ex in examples):
            raise DataError(f"{spec}: has no text pairs; this task needs them")
        return examples
    return read_examples(
        spec,
        text_column=cfg.text_column,
        text_pair_column=cfg.text_pair_column if pair else None,
        label_column=cfg.label_column if labelled else None,
        label_type=label_type,
        encoding=cfg.encoding,
    )


def unlabelled(examples: Sequence[Example], *, pair: bool) -> list[Example]:
    for ex in examples:
        if pair and ex.text_pair is None:
            raise DataError("this model needs a text pair", path=ex.where or None)
        if not pair and ex.text_pair is not None:  # it would be read as a second segment the model never saw
            raise DataError(
                "this model was trained on single texts; it takes no text pair (--text-pair)",
                path=ex.where or None,
                field="text_pair",
            )
    return list(examples)


def label_ids(examples: Sequence[Example], labels: list[str], spec: str, column: str) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    out = []
    for ex in examples:
        if ex.label not in index:
            path, _, line = ex.where.rpartition(":")
            raise DataError(
                f"label {ex.label!r} was not seen in training (known: {', '.join(labels)})",
                path=path or spec,
                line=int(line) if line.isdigit() else None,
                field=column,
            )
        out.append(index[ex.label])
    return out


def class_keywords(examples: Sequence[Example], method: str, top: int) -> dict[str, list[str]]:
    """Each class's `top` jieba keywords (TF-IDF or TextRank over its texts), less those that are
    keywords of another class too: what is left tells the classes apart."""
    from plmkit.keywords import keywords

    if top < 1:
        raise ConfigError(f"keywords_top: {top} keywords per class; give at least 1")
    found = {
        label: [w for w, _ in words]
        for label, words in keywords(examples, by_label=True, top=top, method=method).items()
    }
    shared = {w for label, words in found.items() for w in words if any(w in found[o] for o in found if o != label)}
    return {label: [w for w in words if w not in shared] for label, words in found.items()}


def keyword_segment(text: str, keywords: dict[str, list[str]]) -> str:
    """The second segment the encoder reads beside `text`: per class, in class order, the class's
    keywords that occur in the text ("neg: 失望 退货; pos:")."""
    return "; ".join(
        f"{label}: {' '.join(w for w in words if w in text)}".rstrip() for label, words in keywords.items()
    )


def featurize(
    examples: Sequence[Example], tokenizer, cfg, labels: Labels | None, spec: str, *, label_type: str
) -> Featurized:
    """Each text (and pair) truncated as `cfg` says; targets are class ids or floats. Classes are fitted
    on `examples` when `labels` is None (training)."""
    from plmkit.data.truncation import encode_all
    from plmkit.data.words import token_word_ids

    labelled = all(ex.label is not None for ex in examples)
    if labels is None:
        names = sorted({str(ex.label) for ex in examples}) if label_type == "class" else []
        if label_type == "class" and len(names) < 2:
            found = f"one class ({names[0]!r})" if names else "no classes"
            raise DataError(
                f"the label column has {found}; classification needs at least two", path=spec, field=cfg.label_column
            )
        labels = Labels(names)
    if cfg.keywords != "none" and labels.keywords is None:
        labels = dataclasses.replace(labels, keywords=class_keywords(examples, cfg.keywords, cfg.keywords_top))
    targets: list[Any] | None = None
    if labelled:
        targets = (
            label_ids(examples, labels.names, spec, cfg.label_column)
            if label_type == "class"
            else [float(ex.label) for ex in examples]
        )
    items = []
    seconds = [keyword_segment(ex.text, labels.keywords) if labels.keywords else ex.text_pair for ex in examples]
    firsts = [ex.text for ex in examples]
    encoded = encode_all(tokenizer, firsts, seconds, cfg.max_length, cfg.truncation, cfg.head_tokens)
    for n, (ex, second, enc) in enumerate(zip(examples, seconds, encoded)):
        item = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "segments": enc["segments"]}
        if cfg.word_fusion != "none":
            texts = (ex.text, second)
            item["word_ids"] = token_word_ids(texts, enc["offsets"], enc["segments"], cfg.word_buckets)
        if targets is not None:
            item["label"] = targets[n]
        items.append(item)
    gold = None
    if targets is not None:
        gold = torch.tensor(targets, dtype=torch.long if label_type == "class" else torch.float)  # (N,)
    return Featurized(list(examples), items, labels, gold)


def collate(feats: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, attention_mask (B, T), labels (B,) when labelled; hidden (B, T, H) when
    the items carry cached states (mode=partial)."""
    from plmkit.data.batching import pad

    batch = collate_tokens(feats, pad_id)
    batch["token_type_ids"] = pad([f["token_type_ids"] for f in feats], 0)  # (B, T)
    if feats and "word_ids" in feats[0]:
        batch["word_ids"] = pad([f["word_ids"] for f in feats], 0)  # (B, T)
    if feats and "label" in feats[0]:
        dtype = torch.float if isinstance(feats[0]["label"], float) else torch.long
        batch["labels"] = torch.tensor([f["label"] for f in feats], dtype=dtype)  # (B,)
    return batch


# --- model: build, load, forward ---------------------------------------------------------------------------------


def build_model(source: str, labels: Labels, cfg, tokenizer) -> torch.nn.Module:
    return build_sequence_classifier(
        source,
        labels.names,
        cfg.dropout,
        cfg.trust_remote_code,
        tokenizer.pad_token_id,
        head=cfg.head,
        pooling=cfg.pooling,
        words=_word_options(cfg),
    )


def _word_options(cfg) -> dict[str, Any] | None:
    if cfg.word_fusion == "none":
        return None
    if cfg.word_buckets < 2 or cfg.word_dim < 1:
        raise ConfigError(f"word_buckets: at least 2, and word_dim at least 1; got {cfg.word_buckets}, {cfg.word_dim}")
    return {"word_fusion": cfg.word_fusion, "word_buckets": cfg.word_buckets, "word_dim": cfg.word_dim}


def load_model(source: str, meta: dict[str, Any]) -> torch.nn.Module:
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(source, use_safetensors=True)


def forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, C); from the cached states `hidden` when the batch has them (mode=partial's top view)."""
    words = {"word_ids": batch["word_ids"]} if "word_ids" in batch else {}
    if "hidden" in batch:
        return model(inputs_embeds=batch["hidden"], attention_mask=batch["attention_mask"], **words).logits  # (B, C)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]} | words
    if getattr(model.config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return model(**inputs).logits  # (B, C)


def outputs(model, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return list(logits.float().cpu())  # a row (C,) per item


def assemble(data: Featurized, rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(rows) if rows else torch.zeros(0, max(1, len(data.labels.names)))  # (N, C)


# --- loss, metrics, decoding -------------------------------------------------------------------------------------


def classification_loss(model, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(logits.float(), batch["labels"])  # logits (B, C), labels (B,)


def classification_metrics(data: Featurized, logits: torch.Tensor) -> dict[str, Any]:
    """Accuracy, macro F1, and the confusion matrix (gold class by row, predicted by column, in label order)."""
    from sklearn.metrics import confusion_matrix, f1_score

    pred, gold = logits.argmax(-1), data.gold  # (N,), (N,)
    classes = list(range(len(data.labels.names)))
    return {
        "accuracy": float((pred == gold).float().mean()),
        "macro_f1": float(f1_score(gold.numpy(), pred.numpy(), average="macro", labels=classes, zero_division=0)),
        "confusion": confusion_matrix(gold.numpy(), pred.numpy(), labels=classes).tolist(),
    }


def _rows(examples: Sequence[Example], decoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pair = lambda ex: {"text_pair": ex.text_pair} if ex.text_pair is not None else {}  # noqa: E731
    return [{"text": ex.text} | pair(ex) | d for ex, d in zip(examples, decoded)]


def classification_decode(data: Featurized, logits: torch.Tensor) -> list[dict[str, Any]]:
    labels = data.labels.names
    probs = logits.float().softmax(-1)  # (N, C)
    return _rows(
        data.records,
        [
            {
                "label": labels[int(p.argmax())],
                "probabilities": {label: round(float(v), 6) for label, v in zip(labels, p)},
            }
            for p in probs
        ],
    )


def regression_loss(model, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.mse_loss(logits.float().squeeze(-1), batch["labels"].float())  # logits (B, 1), labels (B,)


def regression_metrics(data: Featurized, logits: torch.Tensor) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    pred = logits.float().squeeze(-1).numpy()
    gold_np = data.gold.float().numpy()
    constant = len(set(pred.round(6).tolist())) < 2 or len(set(gold_np.tolist())) < 2
    return {
        "pearson": 0.0 if constant else float(pearsonr(pred, gold_np)[0]),
        "spearman": 0.0 if constant else float(spearmanr(pred, gold_np)[0]),
        "mse": float(((pred - gold_np) ** 2).mean()),
    }


def regression_decode(data: Featurized, logits: torch.Tensor) -> list[dict[str, Any]]:
    return _rows(data.records, [{"score": round(float(v), 6)} for v in logits.float().squeeze(-1)])


def mean_probabilities(predictions: list[torch.Tensor]) -> torch.Tensor:
    """Logits (N, C) of several classifiers made one: the log of their averaged probabilities."""
    return torch.stack([p.float().softmax(-1) for p in predictions]).mean(0).log()  # (N, C)


def mean_values(predictions: list[torch.Tensor]) -> torch.Tensor:
    """Regression outputs (N, 1) of several models: their mean."""
    return torch.stack([p.float() for p in predictions]).mean(0)  # (N, 1)


def _task(name: str, pair: bool, label_type: str, loss, metrics, decode, main_metric: str) -> Task:
    return Task(
        name,
        pair,
        label_type,
        main_metric,
        read=partial(read, pair=pair, label_type=label_type),
        unlabelled=partial(unlabelled, pair=pair),
        featurize=partial(featurize, label_type=label_type),
        collate=collate,
        build_model=build_model,
        load_model=load_model,
        forward=forward,
        loss=loss,
        outputs=outputs,
        assemble=assemble,
        metrics=metrics,
        decode=decode,
        feature_kind="pair" if pair else "sequence",
        default_head="cls",
        heads=SEQUENCE_HEADS,
        options=("truncation", "head_tokens", "pooling", "word_fusion", "word_buckets", "word_dim")
        + (() if pair else ("keywords", "keywords_top")),
        ensemble=mean_probabilities if label_type == "class" else mean_values,
    )


TASKS.add(
    "classification",
    _task(
        "classification", False, "class", classification_loss, classification_metrics, classification_decode, "accuracy"
    ),
)
TASKS.add(
    "pair", _task("pair", True, "class", classification_loss, classification_metrics, classification_decode, "accuracy")
)
TASKS.add(
    "regression", _task("regression", True, "float", regression_loss, regression_metrics, regression_decode, "pearson")
)
