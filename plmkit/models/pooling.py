"""Masked pooling over a sequence: mean, max, or both joined, over the real positions only
(padding never counts; for the max it is pushed to the dtype's lowest value).

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, H hidden.
"""

from __future__ import annotations

import torch

POOLINGS = ("mean", "max", "mean_max")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """(B, T, H), mask (B, T) -> (B, H) for mean or max, (B, 2H) for mean_max ([mean; max])."""
    if how not in POOLINGS:
        raise ValueError(f"pooling: unknown {how!r}; known: {', '.join(POOLINGS)}")
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    parts = []
    if how in ("mean", "mean_max"):
        parts.append((hidden * m).sum(1) / m.sum(1).clamp(min=1))  # (B, H)
    if how in ("max", "mean_max"):
        lowest = torch.finfo(hidden.dtype).min
        parts.append(hidden.masked_fill(~mask.unsqueeze(-1).bool(), lowest).max(1).values)  # (B, H)
    return torch.cat(parts, -1)
