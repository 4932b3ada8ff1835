"""bench/throughput.py in its quick mode: every part runs, every runner answers every text, the exports agree,
the peers train on the same tokens, and the server answers at every client count with batching on and off."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_throughput_bench_runs_every_part_and_peer():
    path = Path(__file__).resolve().parents[2] / "bench" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick"])
    assert set(result) == {"machine", "inference", "train", "serve", "mfu"}
    assert set(result["machine"]) == {"cpu", "bf16_native", "threads"}

    inference = result["inference"]
    runs = inference["runs"]
    assert set(runs) == {"plmkit_torch", "plmkit_onnx_fp32", "plmkit_onnx_int8", "pipeline_default", "pipeline_batch32"}
    assert inference["texts"] == 64
    assert runs["plmkit_onnx_fp32"]["accuracy"] == runs["plmkit_torch"]["accuracy"]
    assert abs(runs["pipeline_default"]["accuracy"] - runs["plmkit_torch"]["accuracy"]) <= 0.05
    assert all(r["texts_per_s"] > 0 for r in runs.values())
    assert runs["pipeline_default"]["speed_vs_pipeline_default"] == 1.0

    train = result["train"]["tiny"]["runs"]
    assert set(train) == {"plmkit", "trainer_default", "trainer_best"}
    real = {r["real_tokens"] for r in train.values()}
    assert len(real) == 1  # the same texts, truncated alike, in every runner
    assert real.pop() <= train["plmkit"]["padded_tokens"] < train["trainer_default"]["padded_tokens"]
    assert all(r["samples_per_s"] > 0 and r["mean_train_loss"] > 0 for r in train.values())
    assert train["plmkit"]["speed_of_plmkit"] == 1.0

    serve = result["serve"]
    for mode in ("batching_on", "batching_off"):
        for clients in ("1", "4"):
            figures = serve[mode][clients]
            assert figures["requests_per_s"] > 0 and 0 < figures["p50_ms"] <= figures["p99_ms"]
        health = serve[mode]["health"]
        assert health["requests"] >= 2 * serve["requests"]  # every request reached the model
    assert serve["batching_off"]["health"]["largest_batch"] == 1
    assert serve["batching_on"]["health"]["batches"] < serve["batching_on"]["health"]["requests"]

    mfu = result["mfu"]
    assert mfu["peak"]["fp32_gflops"] > 0
    assert 0 < mfu["inference_plmkit_torch"]["mfu_fp32"] < 1.5
    assert set(k for k in mfu if k.startswith("train_")) == {f"train_tiny_{r}" for r in train}

    text = bench.tables(result)  # the README's tables
    for title in ("Batch inference", "Fine-tuning tiny", "Server", "Model-FLOPs utilisation"):
        assert title in text
    assert text.count("| plmkit_torch |") == 1 and "| trainer_best |" in text and "| on |" in text


@pytest.mark.slow
def test_int8_smoothing_bench_scores_every_alpha_against_fp32(tmp_path):
    """bench/int8_smoothing.py on the quick models: each alpha's graph scores every check record, alpha 0 is
    export's unsmoothed int8 (the same flips), and the fp32 accuracy is the exported model's."""
    import json

    from plmkit import api

    here = Path(__file__).resolve().parents[2] / "bench"
    modules = {}
    for name in ("throughput", "int8_smoothing"):
        spec = importlib.util.spec_from_file_location(name, here / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    model, onnx_dir, _, test = modules["throughput"].quick_models(tmp_path)
    result = modules["int8_smoothing"].main(["--model", model, "--onnx", onnx_dir, "--data", test, "--alphas", "0,0.7"])
    assert result["records"] == 64 and set(result["alphas"]) == {"0.0", "0.7"}
    fp32 = json.loads((Path(onnx_dir) / "export.json").read_text())["fp32"]
    assert result["fp32_accuracy"] == pytest.approx(fp32["onnx_accuracy"])
    unsmoothed = api.export(model, tmp_path / "plain8", quantize="int8", check=test, smooth=0.0)["int8"]
    assert result["alphas"]["0.0"]["flips"] == round((1 - unsmoothed["agreement"]) * 64)
    for figures in result["alphas"].values():
        assert 0 <= figures["flips"] <= 64 and figures["margin_change_mean"] > 0
        assert 0 < figures["max_score_difference"] < 1.0
