"""What a mode (finetune, partial, features) hands the one runner (plmkit.train.run) to train."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from plmkit.errors import ModelError
from plmkit.train.loop import LoopState


@dataclass
class Plan:
    """What one mode hands the loop."""

    model: torch.nn.Module  # what the loop trains: the task model, its top view, or a head on cached layers
    items: list[dict[str, Any]]  # training items, as `collate` reads them
    lengths: list[int]  # of each training item, for length-bucketed batches
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    forward: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    save: Callable[[torch.nn.Module, LoopState], None]  # called with the trained model when dev improves
    predict_dev: Callable[[torch.nn.Module, torch.device], list[Any]] | None  # the task's outputs per dev item
    param_groups: list[dict[str, Any]] | None = None
    before_batch: Callable[[LoopState], None] | None = None
    find_unused_parameters: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # what the mode adds to the run's summary


def check_finite(model: torch.nn.Module) -> None:
    """Never save a model whose weights went NaN or infinite."""
    for p in model.parameters():
        if not torch.isfinite(p).all():
            raise ModelError("refusing to save: the model has non-finite weights")
