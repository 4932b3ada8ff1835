"""`plmkit probe-layers` and `plmkit compare` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest

from plmkit.cli import main
from plmkit.errors import ConfigError
from plmkit.experiments.compare import compare
from plmkit.experiments.probe import probe_layers

FAST = {"progress": "false", "batch_size": "16", "log_steps": "1"}


def test_probe_layers_trains_one_probe_per_layer_on_one_extraction(tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / "probe"
    result = probe_layers(
        "classification",
        str(tiny_model_dir),
        str(toy_data["train"]),
        out,
        dev=str(toy_data["dev"]),
        overrides=FAST | {"epochs": "3", "lr": "5e-3", "cache_dir": str(tmp_path / "cache")},
    )
    rows = result["layers"]
    assert [r["layer"] for r in rows] == [0, 1, 2]  # embeddings and the two layers
    assert [r["cache_hit"] for r in rows] == [False, True, True]  # the encoder ran once
    assert all(0.5 <= r["dev_accuracy"] <= 1.0 for r in rows)
    assert result["best_layer"] == max(range(3), key=lambda i: rows[i]["dev_accuracy"])
    assert json.loads((out / "results.json").read_text())["layers"] == rows
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "results.md").read_text()
    assert "| embeddings |" in md and "![" in md and "probe.png" in (out / "results.html").read_text()


def test_probe_layers_cli_on_tagging(tiny_model_dir, toy_ner, tmp_path, capsys):
    out = tmp_path / "probe-ner"
    code = main(
        [
            "probe-layers",
            "--task",
            "ner",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(toy_ner["train"]),
            "--dev",
            str(toy_ner["dev"]),
            "--output",
            str(out),
            "epochs=2",
            "lr=1e-2",
            "progress=false",
            f"cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["probe"] == "softmax" and result["metric"] == "dev_f1" and len(result["layers"]) == 3
    assert all(r["dev_f1"] is not None for r in result["layers"])


def test_compare_runs_five_variants_and_writes_the_report(tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / "cmp"
    result = compare(
        "classification",
        str(tiny_model_dir),
        str(toy_data["train"]),
        out,
        dev=str(toy_data["dev"]),
        test=str(toy_data["test"]),
        feature_lr=5e-3,
        overrides=FAST | {"epochs": "2", "lr": "3e-3", "cache_dir": str(tmp_path / "cache")},
    )
    runs = {r["run"]: r for r in result["runs"]}
    assert list(runs) == [
        "features, last layer",
        "features, scalar mix",
        "partial, bottom 1 cached",
        "fine-tuning",
        "fine-tuning + tricks",
    ]
    assert all(r["test_accuracy"] is not None and r["dev_accuracy"] is not None for r in runs.values())
    assert (
        runs["features, last layer"]["extract_seconds"] is not None and runs["fine-tuning"]["extract_seconds"] is None
    )
    assert runs["partial, bottom 1 cached"]["extract_seconds"] is not None
    # same budget: every run takes the same number of optimiser steps
    assert len({r["steps"] for r in runs.values()}) == 1
    # the tricks' unfreezing is paced by plain fine-tuning's steps: all 4 groups open half-way
    assert runs["fine-tuning + tricks"]["unfreeze_every"] == -(-runs["fine-tuning"]["steps"] // 8)
    assert len(result["layer_weights"]["weights"]) == 3
    # the shared cache_dir served the feature runs and was left out of the others (where it does nothing)
    assert list((tmp_path / "cache").rglob("*.safetensors"))
    for name in ("report.md", "report.html", "results.json", "learning_curves.png", "layer_weights.png"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert all(f"| {name} |" in md for name in runs)
    assert "<table>" in (out / "report.html").read_text() or "<table" in (out / "report.html").read_text()
    assert not (out / "models").exists()  # models are dropped unless kept


def test_compare_checks_every_config_before_running(tiny_model_dir, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        compare("classification", str(tiny_model_dir), str(toy_data["train"]), tmp_path / "x", overrides={"nope": "1"})
    assert not (tmp_path / "x").exists()
