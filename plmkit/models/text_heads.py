"""Classification heads that practitioners put on a BERT's token states instead of its `[CLS]`:
TextCNN (a masked convolution, then masked max and mean pooling) and RNN + CNN (two BiLSTM layers
under the same TextCNN). Every step reads the real tokens only: padded positions are zeroed before
the convolution, skipped by the packed LSTM and never pooled, so changing them changes nothing.

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, D a head's input width, F filters,
C classes.
"""

from __future__ import annotations

import torch
from torch import nn

from plmkit.models.pooling import pool
from plmkit.models.tagger import packed_lstm

TEXT_HEADS = ("textcnn", "rnn_cnn")


class TextCNN(nn.Module):
    """(B, T, D), mask (B, T) -> (B, C): width-3 convolution with `filters` filters, ReLU, masked max +
    masked mean (added), dropout, dense `dense` ReLU, output."""

    def __init__(self, width: int, n_out: int, dropout: float, filters: int = 256, kernel: int = 3, dense: int = 32):
        super().__init__()
        self.conv = nn.Conv1d(width, filters, kernel, padding=kernel // 2)
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(filters, dense)
        self.out = nn.Linear(dense, n_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        real = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        h = torch.relu(self.conv((x * real).transpose(1, 2))).transpose(1, 2)  # (B, T, F)
        pooled = pool(h, mask, "max") + pool(h, mask, "mean")  # (B, F)
        return self.out(torch.relu(self.dense(self.dropout(pooled))))  # (B, C)


class RnnCnn(nn.Module):
    """(B, T, D), mask (B, T) -> (B, C): two BiLSTM layers of `units` each way, then TextCNN."""

    def __init__(self, width: int, n_out: int, dropout: float, units: int = 128):
        super().__init__()
        self.lstm = nn.LSTM(width, units, num_layers=2, bidirectional=True, batch_first=True)
        self.cnn = TextCNN(2 * units, n_out, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.cnn(packed_lstm(self.lstm, x, mask), mask)  # (B, C)


def text_head(head: str, width: int, n_out: int, dropout: float) -> nn.Module:
    if head not in TEXT_HEADS:
        raise ValueError(f"head: unknown {head!r}; known: {', '.join(TEXT_HEADS)}")
    return (TextCNN if head == "textcnn" else RnnCnn)(width, n_out, dropout)
