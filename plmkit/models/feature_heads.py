"""Heads that train on a frozen encoder's cached layer outputs.

Every head reads `values` (B, T, L, H): all L layer outputs (embeddings first) of each
token, or of each unit for tagging. A `LayerChoice` turns them into one vector per
token: a learned scalar mix (Peters et al. 2018: gamma * sum_l softmax(w)_l h_l), the
last layer, or one fixed layer (what a layer probe trains on).
"""

from __future__ import annotations

import torch
from torch import nn

from plmkit.models.tagger import HEADS as TAG_HEADS
from plmkit.models.tagger import Tagger, packed_lstm

SEQUENCE_HEADS = ("mlp", "bilstm")  # one text
PAIR_HEADS = ("esim", "mlp")  # two texts


def layer_index(layers: str | int, n_layers: int) -> int | None:
    """`mix` -> None; `last` -> n_layers - 1; `N` -> N (0 = embeddings), checked against the model."""
    from plmkit.errors import ConfigError

    if layers == "mix":
        return None
    if layers == "last":
        return n_layers - 1
    if not str(layers).lstrip("-").isdigit():
        raise ConfigError(f"layers: expected mix, last or a layer number, got {layers!r}")
    index = int(layers)
    if not 0 <= index < n_layers:
        raise ConfigError(f"layers: {index} is out of range; this model has layers 0 (embeddings) to {n_layers - 1}")
    return index


class LayerChoice(nn.Module):
    """(B, T, L, H) -> (B, T, H): a learned scalar mix of all layers, or one fixed layer."""

    def __init__(self, n_layers: int, index: int | None = None):
        super().__init__()
        self.n_layers, self.index = n_layers, index
        if index is None:
            self.weights = nn.Parameter(torch.zeros(n_layers))  # softmax-normalised: uniform at the start
            self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            return values[..., self.index, :].float()  # (B, T, H)
        w = self.weights.softmax(0)  # (L,)
        return self.gamma * torch.einsum("...lh,l->...h", values.float(), w)  # (B, T, H)

    def layer_weights(self) -> list[float]:
        if self.index is not None:
            return [float(i == self.index) for i in range(self.n_layers)]
        return [round(float(v), 6) for v in self.weights.detach().softmax(0)]


def masked_mean_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H), mask (B, T) -> (B, 2H): mean and max over the real positions."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    mean = (x * m).sum(1) / m.sum(1).clamp(min=1)  # (B, H)
    big_negative = torch.finfo(x.dtype).min
    mx = x.masked_fill(~mask.unsqueeze(-1).bool(), big_negative).max(1).values  # (B, H)
    return torch.cat([mean, mx], -1)


class PooledMLP(nn.Module):
    """Mean and max over the text's tokens, then a one-hidden-layer MLP."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Dropout(dropout),
                                 nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        return self.net(masked_mean_max(x, mask))  # (B, C)


class BiLSTMPool(nn.Module):
    """A BiLSTM over the tokens, then mean and max over its outputs, then a linear layer."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(4 * (hidden // 2), n_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        h = packed_lstm(self.lstm, self.dropout(x), mask)  # (B, T, H)
        return self.out(self.dropout(masked_mean_max(h, mask)))  # (B, C)


class ESIM(nn.Module):
    """Chen et al. 2017, small: each text attends to the other, the local inference
    [a; ã; a - ã; a * ã] is composed by a BiLSTM, pooled, and classified."""

    def __init__(self, hidden: int, n_out: int, dropout: float = 0.1, size: int = 128):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden, size)
        self.infer = nn.Sequential(nn.Linear(4 * size, size), nn.ReLU())
        self.compose = nn.LSTM(size, size // 2, batch_first=True, bidirectional=True)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * 2 * (size // 2), size), nn.Tanh(),
                                 nn.Dropout(dropout), nn.Linear(size, n_out))

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
        pooled = torch.cat([masked_mean_max(v, a_mask), masked_mean_max(v, b_mask)], -1)  # (B, 4D')
        return self.out(pooled)  # (B, C)


class FeatureModel(nn.Module):
    """A layer choice and a head: for texts, logits (B, C); for tagging, emissions (B, U, L)."""

    def __init__(self, layers: LayerChoice, head: nn.Module):
        super().__init__()
        self.layers, self.head = layers, head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.layers(batch["values"])  # (B, T, H)
        if isinstance(self.head, Tagger):
            return self.head.emissions(x, batch["mask"])  # (B, U, L)
        return self.head(x, batch["mask"], batch["segments"])  # (B, C)


def check_head(kind: str, head: str) -> None:
    """`head` is one that a task of this kind ("sequence", "pair" or "tagging") takes in feature mode."""
    from plmkit.errors import ConfigError

    known = {"sequence": SEQUENCE_HEADS, "pair": PAIR_HEADS, "tagging": TAG_HEADS}[kind]
    if head not in known:
        raise ConfigError(f"head: {head!r} is not a feature-mode head for this task; known: {', '.join(known)}")


def build_feature_model(kind: str, head: str, n_layers: int, hidden: int, layers: str, labels: list[str],
                        scheme: str | None = None, dropout: float | None = None) -> FeatureModel:
    """`kind`: "sequence" (one text), "pair" or "tagging"; `head` checked against what the kind takes."""
    check_head(kind, head)
    choice = LayerChoice(n_layers, layer_index(layers, n_layers))
    p = 0.1 if dropout is None else dropout
    n_out = max(1, len(labels))
    if kind == "tagging":
        module: nn.Module = Tagger(None, labels, head, scheme or "bio", p, hidden_size=hidden)
    else:
        module = {"mlp": PooledMLP, "bilstm": BiLSTMPool, "esim": ESIM}[head](hidden, n_out, p)
    return FeatureModel(choice, module)
