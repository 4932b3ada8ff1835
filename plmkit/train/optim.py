"""Optimiser parameter groups and learning-rate schedules."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from plmkit.config import LoopConfig
from plmkit.errors import ConfigError

_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def default_param_groups(model: torch.nn.Module, weight_decay: float,
                         lr_of: Callable[[str], float | None] | None = None) -> list[dict[str, Any]]:
    """Weight decay on weights, none on biases and layer norms; `lr_of(name)`, when given,
    sets a parameter's own learning rate (None: the optimiser's)."""
    groups: dict[tuple[bool, float | None], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = (not name.endswith(_NO_DECAY), lr_of(name) if lr_of else None)
            groups.setdefault(key, []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0} | ({"lr": lr} if lr is not None else {})
            for (decay, lr), params in groups.items()]


def build_optimizer(model: torch.nn.Module, cfg: LoopConfig, groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    groups = groups if groups is not None else default_param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def linear_warmup(progress: float, warmup: float) -> float:
    """Multiplier at `progress` in [0, 1]: up from 0 to 1 over the first `warmup`, then linearly down to 0."""
    if progress < warmup:
        return progress / warmup
    return max(0.0, (1.0 - progress) / max(1e-12, 1.0 - warmup))


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: LoopConfig, total_steps: int, time_fraction: Callable[[], float] | None = None
) -> LambdaLR:
    """`time_fraction`, when given, is the share of a time budget used so far: progress is then
    whichever is further along, steps or time, so a run cut by its budget still decays to 0."""

    def progress(step: int) -> float:
        p = (step + 0.5) / max(1, total_steps)  # the step's midpoint: no step, first or last, gets a rate of 0
        return min(1.0, max(p, time_fraction()) if time_fraction is not None else p)

    if cfg.schedule == "linear":
        return LambdaLR(optimizer, lambda s: linear_warmup(progress(s), cfg.warmup_ratio))
    if cfg.schedule == "constant":
        return LambdaLR(optimizer, lambda s: 1.0)
    raise ConfigError(f"schedule: unknown {cfg.schedule!r}; known: linear, constant")
