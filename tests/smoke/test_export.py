"""`plmkit export` on tiny trained models: ONNX graphs that score as the PyTorch model does, int8,
and the exported directory read by predict, evaluate and serve."""

from __future__ import annotations

import json

import pytest
from conftest import toy_rows, write_csv, write_jsonl

from plmkit import api
from plmkit.cli import main
from plmkit.errors import ModelError

FAST = {"progress": "false", "batch_size": "16", "lr": "3e-3", "epochs": "2"}


@pytest.fixture(scope="module")
def models(tiny_model_dir, toy_data, toy_ner, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("export")
    base = {"model": str(tiny_model_dir), **FAST}
    api.train(str(toy_data["train"]), d / "cls", dev=str(toy_data["dev"]), overrides=base)
    api.train(str(toy_data["train"]), d / "pool", dev=str(toy_data["dev"]), overrides=base | {"head": "pool"})
    for head in ("crf", "softmax"):
        ner = base | {"task": "ner", "head": head}
        api.train(str(toy_ner["train"]), d / f"ner-{head}", dev=str(toy_ner["dev"]), overrides=ner)
    pairs = [(t, t2, y) for (t, y), (t2, _) in zip(toy_rows(80, 5), toy_rows(80, 6))]
    write_csv(d / "pairs.csv", pairs, header=("text", "text_pair", "label"))
    api.train(str(d / "pairs.csv"), d / "pair", overrides=base | {"task": "pair"})
    questions = [
        {"id": f"q{i}", "question": "是什么?", "context": f"好棒的东西子丑寅{'卯' * (i % 3)}差坏的东西",
         "answers": [{"text": "子丑寅", "answer_start": 5}]}
        for i in range(40)
    ]  # fmt: skip
    write_jsonl(d / "qa.jsonl", questions)
    qa = base | {"task": "qa", "max_length": 24, "max_query_length": 8, "doc_stride": 8}
    api.train(str(d / "qa.jsonl"), d / "qa", dev=str(d / "qa.jsonl"), overrides=qa)
    return {"dir": d, "toy": toy_data, "ner": toy_ner, "tiny": tiny_model_dir}


def test_exported_classifier_predicts_and_evaluates_as_pytorch(models, tmp_path):
    d, toy = models["dir"], models["toy"]
    report = api.export(d / "cls", tmp_path / "onnx")
    fp32 = report["fp32"]
    assert fp32["max_score_difference"] < 1e-5 and fp32["agreement"] == 1.0 and fp32["drop_points"] == 0.0
    assert fp32["records"] == 40 and report["check"] == str(toy["dev"])  # the model's own dev data
    out = tmp_path / "onnx"
    assert (out / "model.onnx").is_file() and not list(out.glob("*.safetensors"))  # the graph alone
    assert json.loads((out / "export.json").read_text()) == {k: v for k, v in report.items() if k != "output"}
    assert json.loads((out / "plmkit.json").read_text())["export"]["from"] == str(d / "cls")
    ours = api.predict(out, input=str(toy["test"]))  # 40 texts of other lengths than the export's sample
    theirs = api.predict(d / "cls", input=str(toy["test"]))
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    assert api.evaluate(out, str(toy["test"]))["accuracy"] == api.evaluate(d / "cls", str(toy["test"]))["accuracy"]


@pytest.mark.parametrize("name", ["pool", "ner-crf", "ner-softmax", "pair", "qa"])
def test_every_task_exports_with_parity(models, tmp_path, name):
    d = models["dir"]
    check = {"pair": str(d / "pairs.csv")}.get(name)
    report = api.export(d / name, tmp_path / name, check=check)
    assert report["fp32"]["max_score_difference"] < 1e-4, report
    assert report["fp32"]["agreement"] == 1.0
    assert (tmp_path / name / "decoder.safetensors").is_file() == (name == "ner-crf")  # the CRF decodes outside
    data = {"pair": str(d / "pairs.csv"), "qa": str(d / "qa.jsonl")}.get(name, str(models["ner"]["test"]))
    if name == "pool":
        data = str(models["toy"]["test"])
    assert api.evaluate(tmp_path / name, data) == api.evaluate(d / name, data)


def test_int8_reports_both_graphs_and_is_smaller(models, tmp_path):
    report = api.export(models["dir"] / "cls", tmp_path / "int8", quantize="int8")
    assert report["quantize"] == "int8" and set(report) >= {"fp32", "int8", "fp32_bytes", "bytes"}
    # every weight multiply smoothed (2 layers: attention, its output, the two feed-forward ones; the pooler's
    # and the classifier's), and the smoothed fp32 graph still scores as PyTorch
    assert report["smoothed"] >= 8 and report["fp32"]["max_score_difference"] < 1e-4
    assert report["bytes"] < report["fp32_bytes"]
    assert 0 < report["int8"]["max_score_difference"] < 0.1  # quantised: close, not equal
    assert report["int8"]["within_tolerance"] == (report["int8"]["drop_points"] <= 0.5)
    assert not (tmp_path / "int8" / "model.fp32.onnx").exists()
    assert api.predict(tmp_path / "int8", text="好棒的东西")[0]["label"] in ("good", "bad")


def test_cli_export_and_what_it_refuses(models, tmp_path, capsys):
    d = models["dir"]
    assert main(["export", "--model", str(d / "cls"), "--output", str(tmp_path / "x"), "--check-limit", "10"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out.strip().splitlines()[-1])["fp32"]["records"] == 10
    assert "fp32: max score difference" in out.err and "10 predictions agree" in out.err
    with pytest.raises(ModelError, match="smooth: 1.5 is not between 0 and 1"):
        api.export(d / "cls", tmp_path / "s", quantize="int8", smooth=1.5)
    with pytest.raises(ModelError, match="already an exported model"):
        api.export(tmp_path / "x", tmp_path / "y")
    features = tmp_path / "features"
    api.train(
        str(models["toy"]["train"]), features, overrides={**FAST, "model": str(models["tiny"]), "mode": "features"}
    )
    with pytest.raises(ModelError, match="feature-mode model"):
        api.export(features, tmp_path / "z")
    assert not (tmp_path / "z").exists() and not list(tmp_path.glob(".z.*"))  # nothing half-written


def test_smoothing_keeps_the_product_and_spares_quantisation_its_outlier_channel(tmp_path):
    """A MatMul whose input has one channel 100 times the others (as BERT's layer-norm outputs have):
    smoothed, the fp32 graph computes the same; quantised, its error is a fraction of the unsmoothed one's."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from plmkit.export.onnx import smooth_activations

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 8])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "plain.onnx")

    def inputs(n):
        x = rng.normal(size=(n, 16)).astype(np.float32)
        x[:, 3] *= 100.0  # the outlier channel
        return x

    calibration, x = inputs(64), inputs(256)
    (tmp_path / "smooth.onnx").write_bytes((tmp_path / "plain.onnx").read_bytes())
    assert smooth_activations(tmp_path / "smooth.onnx", [{"x": calibration}], 0.5) == 1
    run = lambda name: ort.InferenceSession(str(tmp_path / name)).run(None, {"x": x})[0]  # noqa: E731
    exact = x @ w
    np.testing.assert_allclose(run("smooth.onnx"), exact, rtol=1e-4, atol=1e-3)
    errors = {}
    for name in ("plain", "smooth"):
        quantize_dynamic(str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}8.onnx"), weight_type=QuantType.QInt8)
        errors[name] = float(np.abs(run(f"{name}8.onnx") - exact)[:, :].mean())
    assert errors["smooth"] < 0.5 * errors["plain"], errors
