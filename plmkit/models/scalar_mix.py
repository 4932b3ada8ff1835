"""The scalar mix of Peters et al. 2018 (gamma * sum_l softmax(w)_l h_l) over an encoder's layer outputs,
or one fixed layer of them (what a layer probe trains on). Feature mode's heads and ELMo's classifier read it.

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, N layers (N+1 outputs with the
embeddings), H hidden.
"""

from __future__ import annotations

import torch
from torch import nn


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


class ScalarMix(nn.Module):
    """(B, T, N+1, H) -> (B, T, H): a learned scalar mix of all `n_layers` (= N+1) outputs, or one fixed one.

    Parameters `weights` (N+1,) and `gamma` () exist only for the learned mix; saved models keep these names."""

    def __init__(self, n_layers: int, index: int | None = None):
        super().__init__()
        self.n_layers, self.index = n_layers, index
        if index is None:
            self.weights = nn.Parameter(torch.zeros(n_layers))  # softmax-normalised: uniform at the start
            self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.index is not None:
            return values[..., self.index, :].float()  # (B, T, H)
        w = self.weights.softmax(0)  # (N+1,)
        return self.gamma * torch.einsum("...lh,l->...h", values.float(), w)  # (B, T, H)

    def layer_weights(self) -> list[float]:
        if self.index is not None:
            return [float(i == self.index) for i in range(self.n_layers)]
        return [round(float(v), 6) for v in self.weights.detach().softmax(0)]
