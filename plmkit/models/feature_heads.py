"""Heads that train on a frozen encoder's cached layer outputs.

Every head reads `values` (B, T, N+1, H): all N+1 layer outputs (embeddings first) of each
token, or (B, U, N+1, H) of each unit for tagging. A `ScalarMix` turns them into one vector per
token: a learned scalar mix (Peters et al. 2018: gamma * sum_l softmax(w)_l h_l), the
last layer, or one fixed layer (what a layer probe trains on).

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, U units, N layers, H hidden,
C classes, K tags, D the ESIM head's own width (D' its BiLSTM's output).
"""

from __future__ import annotations

import torch
from torch import nn

from plmkit.models.pooling import pool
from plmkit.models.scalar_mix import ScalarMix, layer_index
from plmkit.models.tagger import HEADS as TAG_HEADS
from plmkit.models.tagger import Tagger, packed_lstm

SEQUENCE_HEADS = ("mlp", "bilstm")  # one text
PAIR_HEADS = ("esim", "mlp")  # two texts
FEATURE_HEADS = {"sequence": SEQUENCE_HEADS, "pair": PAIR_HEADS, "tagging": TAG_HEADS}  # by the task's feature_kind
DEFAULT_HEADS = {"sequence": "mlp", "pair": "esim", "tagging": "bilstm_crf"}


class PooledMLP(nn.Module):
    """Mean and max over the text's tokens, then a one-hidden-layer MLP."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, n_out)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        return self.net(pool(x, mask, "mean_max"))  # (B, C)


class BiLSTMPool(nn.Module):
    """A BiLSTM over the tokens, then mean and max over its outputs, then a linear layer."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(4 * (hidden // 2), n_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        h = packed_lstm(self.lstm, self.dropout(x), mask)  # (B, T, H)
        return self.out(self.dropout(pool(h, mask, "mean_max")))  # (B, C)


class ESIM(nn.Module):
    """Chen et al. 2017, small: each text attends to the other, the local inference
    [a; ã; a - ã; a * ã] is composed by a BiLSTM, pooled, and classified."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1, size: int = 128):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden, size)
        self.infer = nn.Sequential(nn.Linear(4 * size, size), nn.ReLU())
        self.compose = nn.LSTM(size, size // 2, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(4 * 2 * (size // 2), size),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(size, n_out),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        h = self.project(self.dropout(x))  # (B, T, D)
        a_mask, b_mask = segments == 1, segments == 2  # (B, T)
        scores = h @ h.transpose(1, 2)  # (B, T, T)
        big_negative = torch.finfo(scores.dtype).min
        # a token of A reads B, a token of B reads A; a text with no tokens reads zeros
        a_reads = scores.masked_fill(~b_mask[:, None, :], big_negative).softmax(-1) * b_mask[:, None, :]  # (B, T, T)
        b_reads = scores.masked_fill(~a_mask[:, None, :], big_negative).softmax(-1) * a_mask[:, None, :]  # (B, T, T)
        attended = torch.where(a_mask.unsqueeze(-1), a_reads @ h, b_reads @ h)  # (B, T, D)
        m = self.infer(torch.cat([h, attended, h - attended, h * attended], -1))  # (B, T, D)
        v = packed_lstm(self.compose, m, mask)  # (B, T, D')
        pooled = torch.cat([pool(v, a_mask, "mean_max"), pool(v, b_mask, "mean_max")], -1)  # (B, 4D')
        return self.out(pooled)  # (B, C)


class FeatureModel(nn.Module):
    """A scalar mix (or one layer) and a head: for texts, logits (B, C); for tagging, emissions (B, U, K)."""

    def __init__(self, layers: ScalarMix, head: nn.Module):
        super().__init__()
        self.layers, self.head = layers, head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.layers(batch["values"])  # (B, T, H), or (B, U, H) for tagging
        if isinstance(self.head, Tagger):
            return self.head.emissions(x, batch["mask"])  # (B, U, K)
        return self.head(x, batch["mask"], batch["segments"])  # (B, C)

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A tagging head's loss, as the task calls it on a tagger (plmkit.tasks.tagging)."""
        return self.head.loss(emissions, tags, mask)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head.decode(emissions, mask)  # (B, U) tag ids


def build_feature_model(
    kind: str,
    head: str,
    n_layers: int,
    hidden: int,
    layers: str | int,
    labels: list[str],
    scheme: str | None = None,
    dropout: float | None = None,
) -> FeatureModel:
    """`kind`: "sequence" (one text), "pair" or "tagging"; `head` checked against what the kind takes."""
    from plmkit.errors import ConfigError

    known = FEATURE_HEADS[kind]
    if head not in known:
        raise ConfigError(f"head: {head!r} is not a feature-mode head for this task; known: {', '.join(known)}")
    choice = ScalarMix(n_layers, layer_index(layers, n_layers))
    p = 0.1 if dropout is None else dropout
    if head in TAG_HEADS:  # the tagger's head alone, on the mixed unit vectors
        return FeatureModel(choice, Tagger(None, labels, head, scheme or "bio", p, hidden_size=hidden))
    return FeatureModel(
        choice, {"mlp": PooledMLP, "bilstm": BiLSTMPool, "esim": ESIM}[head](hidden, max(1, len(labels)), p)
    )
