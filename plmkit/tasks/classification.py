"""Single-text and sentence-pair classification, and sentence-pair regression.

The model is Hugging Face's *ForSequenceClassification on the checkpoint ([CLS] or the
family's own pooling -> dropout -> dense), so a saved directory also opens with
`transformers.pipeline("text-classification")`; the loss stays outside the model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from plmkit.registry import TASKS
from plmkit.tasks.base import Task


SEQUENCE_HEADS = ("cls", "pool")


def build_sequence_classifier(source: str, labels: list[str], dropout: float | None = None,
                              trust_remote_code: bool = False, pad_token_id: int | None = None, head: str | None = None,
                              pooling: str = "mean") -> torch.nn.Module:
    """head `cls` (default): the family's own *ForSequenceClassification; `pool`: masked `pooling`
    (mean | max | mean_max) over the real tokens (plmkit.models.pooled)."""
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
    if head == "pool":
        from plmkit.models.pooled import build_pooled_classifier

        label_kwargs = {k: v for k, v in kwargs.items() if k in ("num_labels", "id2label", "label2id", "problem_type")}
        return build_pooled_classifier(source, pooling, label_kwargs, dropout, trust_remote_code)
    return AutoModelForSequenceClassification.from_pretrained(
        source, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
    )


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)  # logits (B, C), labels (B,)


def classification_metrics(logits: torch.Tensor, gold: torch.Tensor, labels: list[str]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    pred = logits.argmax(-1)  # (N,)
    return {
        "accuracy": float((pred == gold).float().mean()),
        "macro_f1": float(f1_score(gold.numpy(), pred.numpy(), average="macro", labels=list(range(len(labels))), zero_division=0)),
    }


def classification_decode(logits: torch.Tensor, labels: list[str]) -> list[dict[str, Any]]:
    probs = logits.float().softmax(-1)  # (N, C)
    return [
        {"label": labels[int(p.argmax())], "probabilities": {label: round(float(v), 6) for label, v in zip(labels, p)}}
        for p in probs
    ]


def regression_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits.float().squeeze(-1), labels.float())  # logits (B, 1), labels (B,)


def regression_metrics(logits: torch.Tensor, gold: torch.Tensor, labels: list[str]) -> dict[str, float]:
    from scipy.stats import pearsonr, spearmanr

    pred = logits.float().squeeze(-1).numpy()
    gold_np = gold.float().numpy()
    constant = len(set(pred.round(6).tolist())) < 2 or len(set(gold_np.tolist())) < 2
    return {
        "pearson": 0.0 if constant else float(pearsonr(pred, gold_np)[0]),
        "spearman": 0.0 if constant else float(spearmanr(pred, gold_np)[0]),
        "mse": float(((pred - gold_np) ** 2).mean()),
    }


def regression_decode(logits: torch.Tensor, labels: list[str]) -> list[dict[str, Any]]:
    return [{"score": round(float(v), 6)} for v in logits.float().squeeze(-1)]


TASKS.add("classification", Task("classification", False, "class", build_sequence_classifier, classification_loss,
                                 classification_metrics, classification_decode, "accuracy"))
TASKS.add("pair", Task("pair", True, "class", build_sequence_classifier, classification_loss,
                       classification_metrics, classification_decode, "accuracy"))
TASKS.add("regression", Task("regression", True, "float", build_sequence_classifier, regression_loss,
                             regression_metrics, regression_decode, "pearson"))
