"""Dropout whose masks cost a fifth of PyTorch's on a CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element (`bernoulli_`): on a 2-core CPU 11 ms for the
1.3M attention probabilities of one BERT layer (batch 32, 58 tokens, 12 heads), against 0.3 ms for the
multiplication that applies them; over a fine-tuning step, dropout was a fifth of the time (e5-small: 25.8 s
for 10 steps, 20.5 s with dropout off). Here one 64-bit draw of the same generator gives four 15-bit
uniform integers, and an element is kept when its integer is at least round(p * 32768): each element is
dropped independently with probability p to within 1/65536, from the same seeded generator (so runs
repeat, and a resumed run's RNG state covers it).

`use_fast_dropout(model)` puts it into a model for training: every `nn.Dropout` module becomes a
`FastDropout` in place (a subclass with no state of its own: the same object, `p` and hooks), and each
Hugging Face model whose attention is PyTorch's fused kernel (sdpa) gets plmkit's attention function,
which in training computes attention step by step with these masks (the fused kernel cannot take a mask
from outside; with dropout it falls back to the step-by-step path anyway) and outside training is the
fused kernel itself. `restore_attention(model)` undoes the attention switch, so a saved config names
only Hugging Face's own implementations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LEVELS = 1 << 15  # each draw's 16-bit quarter, its sign bit cleared


def keep_mask(shape: tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of `shape`: each element True (kept) with probability 1 - p, independently, from
    the default generator of `device`; p resolved to multiples of 1/32768."""
    n = math.prod(shape)
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()  # (ceil(n/4),) 63 random bits
    quarters = draws.view(torch.int16)[:n].view(shape)  # (*shape) 16 bits each; the top quarter's sign bit is 0
    return quarters.bitwise_and_(_LEVELS - 1) >= round(p * _LEVELS)


class _ApplyMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)  # one pass less than x * keep * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`nn.functional.dropout(x, p, training)` with `keep_mask`'s masks."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    return _ApplyMask.apply(x, keep_mask(tuple(x.shape), p, x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """`nn.Dropout` drawing its masks with `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return fast_dropout(x, self.p, self.training)


class _Attention(torch.autograd.Function):
    """softmax(q k^T * scaling + bias) with its probabilities dropped by `keep` (scaled by 1/(1-p)), times v.
    Written out, with its backward, so that every pass over the (B, h, Tq, Tk) scores is one that is needed:
    the scaling goes on q and 1/(1-p) on v (both (B, h, T, d), smaller than the scores once T > d), the
    mask is added in place, softmax runs in place, and what backward keeps is the probabilities and the
    bool mask."""

    @staticmethod
    def forward(ctx, q, k, v, bias, keep, scaling: float, scale: float):
        # q (B, h, Tq, d), k and v (B, h, Tk, d), bias additive (B or 1, 1, Tq or 1, Tk) or None,
        # keep bool (B, h, Tq, Tk)
        q = q * scaling
        v = v * scale
        probs = torch.matmul(q, k.transpose(2, 3))  # (B, h, Tq, Tk)
        if bias is not None:
            probs.add_(bias)
        probs = torch.softmax(probs, dim=-1)
        dropped = torch.where(keep, probs, 0.0)  # (B, h, Tq, Tk)
        ctx.save_for_backward(q, k, v, probs, keep)
        ctx.scaling = scaling
        ctx.scale = scale
        return torch.matmul(dropped, v)  # (B, h, Tq, d)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, probs, keep = ctx.saved_tensors  # q and v already scaled
        dropped = torch.where(keep, probs, 0.0)
        grad_v = torch.matmul(dropped.transpose(2, 3), grad).mul_(ctx.scale)  # (B, h, Tk, d)
        del dropped
        grad_probs = torch.matmul(grad, v.transpose(2, 3)).masked_fill_(~keep, 0.0)  # (B, h, Tq, Tk)
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_q = torch.matmul(grad_scores, k).mul_(ctx.scaling)  # (B, h, Tq, d)
        grad_k = torch.matmul(grad_scores.transpose(2, 3), q)  # (B, h, Tk, d)
        return grad_q, grad_k, grad_v, None, None, None, None


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Hugging Face's attention-function signature: query (B, h, Tq, d), key and value (B, h, Tk, d), mask
    bool (B or 1, 1, Tq or 1, Tk; True: attend) or additive, or None; returns ((B, Tq, h, d), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = not getattr(module, "is_causal", False) and getattr(module, "num_key_value_groups", 1) == 1
    if not (module.training and 0.0 < dropout < 1.0 and plain and kwargs.get("position_bias") is None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    bias = attention_mask
    if bias is not None and bias.dtype == torch.bool:
        bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill_(
            ~bias, torch.finfo(query.dtype).min
        )
    B, h, Tq, _ = query.shape
    keep = keep_mask((B, h, Tq, key.shape[2]), dropout, query.device)
    out = _Attention.apply(query, key, value, bias, keep, scaling, 1.0 / (1.0 - dropout))  # (B, h, Tq, d)
    return out.transpose(1, 2).contiguous(), None  # (B, Tq, h, d)


NAME = "plmkit_sdpa"


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the masks sdpa is given: bool, or none at all


def use_fast_dropout(model: nn.Module) -> None:
    """Every `nn.Dropout` in `model` draws with `keep_mask`; every Hugging Face model in it that uses sdpa
    attention uses plmkit's (the same arithmetic, with these masks in training)."""
    from plmkit.models.encoders import switch_attention

    _register()
    for module in model.modules():
        if type(module) is nn.Dropout:
            # the same object, so hooks on it (distill reads the sentence vector at the classifier's dropout)
            # and views sharing it (mode=partial's split model) keep seeing it
            module.__class__ = FastDropout
    switch_attention(model, "sdpa", NAME)


def restore_attention(model: nn.Module) -> None:
    """Hugging Face models inside `model` switched by `use_fast_dropout` go back to sdpa attention."""
    from plmkit.models.encoders import switch_attention

    switch_attention(model, NAME, "sdpa")
