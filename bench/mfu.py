"""Model-FLOPs utilisation: the FLOPs a BERT-style encoder must do for some texts, against this machine's
measured matrix-multiply peak.

    python bench/mfu.py            # the GEMM peaks alone: fp32, and bf16 where the CPU runs it natively

Model FLOPs count real tokens only (padding is waste, not work): per layer and token, the four attention
projections (8·H²), the feed-forward (4·H·I), and the attention itself (4·t·H for a text of t tokens);
training is three times the forward (backward twice). Embedding lookups and the classifier are left out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import torch


def gemm_peak(dtype: torch.dtype = torch.float32, size: int = 2048, seconds: float = 2.0) -> float:
    """The best FLOP/s of (size x size) @ (size x size) over `seconds` of repeated runs."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b  # warm the kernels and the thread pool
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return best


def encoder_flops(config, lengths: Sequence[int]) -> float:
    """Forward FLOPs of the encoder layers over texts of `lengths` tokens (each text alone, no padding)."""
    config = getattr(config, "encoder_config", None) or config  # plmkit's pooled classifier keeps its encoder's
    h, inner = config.hidden_size, config.intermediate_size
    layers = config.num_hidden_layers
    per_token = 8 * h * h + 4 * h * inner
    return float(layers * sum(t * per_token + 4 * t * t * h for t in lengths))


def peaks(seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s of fp32 matrix multiplies, and of bf16 where it is native (emulated bf16 is not a peak)."""
    from plmkit.train.loop import resolve_precision

    out = {"fp32_gflops": round(gemm_peak(torch.float32, seconds=seconds) / 1e9, 1)}
    if resolve_precision("auto") == "bf16":
        out["bf16_gflops"] = round(gemm_peak(torch.bfloat16, seconds=seconds) / 1e9, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(peaks() | {"threads": torch.get_num_threads()}))
