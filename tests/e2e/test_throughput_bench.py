"""bench/throughput.py in its quick mode: every runner answers every text, and the exports agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_throughput_bench_runs_every_peer():
    path = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick"])
    runs = result["runs"]
    assert set(runs) == {"plmkit_torch", "plmkit_onnx_fp32", "plmkit_onnx_int8", "pipeline_default", "pipeline_batch32"}
    assert result["texts"] == 64 and set(result["machine"]) == {"cpu", "bf16_native", "threads"}
    assert runs["plmkit_onnx_fp32"]["accuracy"] == runs["plmkit_torch"]["accuracy"]
    assert abs(runs["pipeline_default"]["accuracy"] - runs["plmkit_torch"]["accuracy"]) <= 0.05
    assert all(r["texts_per_s"] > 0 for r in runs.values())
    assert runs["pipeline_default"]["speed_vs_pipeline_default"] == 1.0
