"""Fine-tuning end to end on a tiny model: learning, saving, resuming, predicting."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import stop_at
from safetensors.torch import load_file

from plmkit import api
from plmkit.errors import TrainingError

FAST = {"progress": "false", "batch_size": "16", "lr": "3e-3", "log_steps": "1"}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "model"
    result = api.train(
        str(toy_data["train"]),
        out,
        dev=str(toy_data["dev"]),
        overrides={"model": str(tiny_model_dir), "epochs": "6", **FAST},
    )
    return out, result


def test_tiny_model_learns_separable_task(trained):
    out, result = trained
    assert result["dev_metrics"]["dev_accuracy"] == 1.0
    meta = json.loads((out / "plmkit.json").read_text())
    assert meta["labels"] == ["bad", "good"] and meta["task"] == "classification"
    assert meta["dev_metrics"]["dev_accuracy"] == 1.0


def test_saved_dir_is_huggingface_with_user_labels(trained, toy_data):
    from transformers import pipeline

    out, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert set(config["id2label"].values()) == {"bad", "good"}
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    texts = ["好棒赞的东西", "差坏烂糟的东西", "优美爱的东西"]
    ours = [api.predict(out, text=t)[0]["label"] for t in texts]
    hf = [r["label"] for r in pipeline("text-classification", model=str(out), device="cpu")(texts)]
    assert ours == hf == ["good", "bad", "good"]


def test_reload_gives_identical_predictions(trained, toy_data, tmp_path):
    out, _ = trained
    first = api.predict(out, input=str(toy_data["test"]), output=tmp_path / "p.jsonl")
    second = api.predict(out, input=str(toy_data["test"]), output=tmp_path / "p.csv")
    assert first == second
    lines = (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["text"] for line in lines] == [r["text"] for r in first]  # input order kept
    header = (tmp_path / "p.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "text,label,p(bad),p(good)"
    scored = api.evaluate(out, str(toy_data["test"]))
    assert scored["accuracy"] == 1.0 and scored["examples"] == 40


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_resume_after_interruption_matches_uninterrupted_run(tiny_model_dir, toy_data, tmp_path):
    common = {"model": str(tiny_model_dir), "epochs": "2", "save_steps": "3", "dropout": "0.2", **FAST}
    api.train(str(toy_data["train"]), tmp_path / "full", dev=str(toy_data["dev"]), overrides=common)

    # an epoch is 10 steps: this dies mid-epoch 2, after the checkpoint at step 12
    with pytest.raises(KeyboardInterrupt):
        api.train(
            str(toy_data["train"]),
            tmp_path / "cut",
            dev=str(toy_data["dev"]),
            overrides=common,
            callbacks=[stop_at(14)],
        )
    state = json.loads((tmp_path / "cut" / "checkpoint" / "loop_state.json").read_text())
    assert state["step"] == 12 and state["epoch"] == 1 and state["batches_done"] == 2
    resumed = api.train(
        str(toy_data["train"]), tmp_path / "cut", dev=str(toy_data["dev"]), overrides=common, resume=True
    )
    assert resumed["steps"] == 20
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert full.keys() == cut.keys()
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def three_epochs(tiny_model_dir, toy_data, tmp_path_factory):
    """An uninterrupted 3-epoch run (10 steps an epoch, a checkpoint every 3 steps) and its options; no dev
    data, so the saved model is the one at the end (with dev data it is the best epoch's, which can hide a
    later epoch that went differently)."""
    common = {"model": str(tiny_model_dir), "epochs": "3", "save_steps": "3", "dropout": "0.2", **FAST}
    out = tmp_path_factory.mktemp("three") / "full"
    api.train(str(toy_data["train"]), out, overrides=common)
    return common, _weights(out)


@pytest.mark.parametrize("cut", [4, 7, 10, 11, 16, 20, 24, 29])
def test_resume_in_any_epoch_matches_the_uninterrupted_run(three_epochs, toy_data, tmp_path, cut):
    """Cut after step `cut` (mid-epoch in each epoch, and at the epoch boundaries 10 and 20), resumed from the
    last checkpoint: the same final weights bit for bit. A resumed process once replayed epoch 1's batch
    order in its later epochs (Accelerate's loader set the sampler's epoch from its own pass count)."""
    common, full = three_epochs
    with pytest.raises(KeyboardInterrupt):
        api.train(str(toy_data["train"]), tmp_path, overrides=common, callbacks=[stop_at(cut)])
    resumed = api.train(str(toy_data["train"]), tmp_path, overrides=common, resume=True)
    assert resumed["steps"] == 30
    cut_weights = _weights(tmp_path)
    for name in full:
        torch.testing.assert_close(cut_weights[name], full[name], rtol=0, atol=0, msg=name)


def test_a_finished_run_leaves_no_checkpoint_and_saves_its_last_model(tiny_model_dir, toy_data, tmp_path):
    """Checkpoints exist while the run goes on (here every 3 steps); at the end the model is saved and the
    checkpoint removed, not written once more. Without dev data the saved model is the one at the end."""
    seen: list[bool] = []
    out = tmp_path / "m"
    overrides = {"model": str(tiny_model_dir), "epochs": "2", "save_steps": "3", **FAST}
    look = lambda state: seen.append((out / "checkpoint").is_dir())  # noqa: E731
    result = api.train(str(toy_data["train"]), out, overrides=overrides, callbacks=[look])
    assert result["steps"] == 20 and any(seen) and not (out / "checkpoint").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary entries either
    with pytest.raises(KeyboardInterrupt):  # the same run cut after step 20's optimiser step, before the end
        api.train(str(toy_data["train"]), tmp_path / "cut", overrides=overrides, callbacks=[stop_at(20)])
    last = json.loads((tmp_path / "cut" / "checkpoint" / "loop_state.json").read_text())
    assert last["step"] == 18  # the checkpoint of step 18 is kept until the model is saved
    saved = load_file(str(out / "model.safetensors"))
    resumed = api.train(str(toy_data["train"]), tmp_path / "cut", overrides=overrides, resume=True)
    assert resumed["steps"] == 20
    for name, tensor in load_file(str(tmp_path / "cut" / "model.safetensors")).items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0, msg=name)


def test_runs_with_different_precision_in_one_process(tiny_model_dir, toy_data, tmp_path):
    """The Python API trains twice in one process with another precision each time (accelerate's
    state is process-wide; a CPU with native bf16 picks bf16 for `auto`)."""
    for n, precision in enumerate(("no", "bf16", "no")):
        result = api.train(
            str(toy_data["train"]),
            tmp_path / str(n),
            overrides={
                "model": str(tiny_model_dir),
                "epochs": "1",
                "max_steps": "2",
                "mixed_precision": precision,
                **FAST,
            },
        )
        assert result["steps"] == 2


def test_resume_without_checkpoint_is_an_error_that_says_why_and_what_to_do(tiny_model_dir, toy_data, tmp_path):
    overrides = {"model": str(tiny_model_dir), "epochs": "1", "save_steps": "5", **FAST}
    with pytest.raises(TrainingError, match="no checkpoint to resume from: it stopped before its first checkpoint "
                       r"\(every save_steps=5 steps.*run without --resume to start afresh"):  # fmt: skip
        api.train(str(toy_data["train"]), tmp_path / "none", overrides=overrides, resume=True)
    with pytest.raises(KeyboardInterrupt):  # killed at step 3, before the checkpoint of step 5
        api.train(str(toy_data["train"]), tmp_path / "early", overrides=overrides, callbacks=[stop_at(3)])
    with pytest.raises(TrainingError, match="before its first checkpoint"):
        api.train(str(toy_data["train"]), tmp_path / "early", overrides=overrides, resume=True)
    api.train(str(toy_data["train"]), tmp_path / "done", overrides=overrides)
    with pytest.raises(TrainingError, match="the run finished"):
        api.train(str(toy_data["train"]), tmp_path / "done", overrides=overrides, resume=True)


def test_nan_loss_stops_training_and_saves_nothing(tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match="loss became nan"):
        api.train(
            str(toy_data["train"]),
            out,
            dev=str(toy_data["dev"]),
            overrides={"model": str(tiny_model_dir), **FAST, "lr": "1e30", "max_grad_norm": "0"},
        )
    assert not (out / "model.safetensors").exists()


def test_pair_and_regression_tasks(tiny_model_dir, tmp_path):
    from conftest import toy_rows, write_jsonl

    rows = toy_rows(120, seed=3)
    pairs = [{"text": t, "text_pair": "东西", "label": y} for t, y in rows]
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = api.train(
        str(tmp_path / "pairs.jsonl"),
        tmp_path / "pair",
        dev=str(tmp_path / "pairs.jsonl"),
        overrides={"task": "pair", "model": str(tiny_model_dir), "epochs": "5", **FAST},
    )
    assert out["dev_metrics"]["dev_accuracy"] >= 0.95
    row = api.predict(tmp_path / "pair", text="好棒的", text_pair="东西")[0]
    assert row["label"] == "good" and set(row["probabilities"]) == {"bad", "good"}

    scores = [{"text": t, "text_pair": "东西", "label": 1.0 if y == "good" else -1.0} for t, y in rows]
    write_jsonl(tmp_path / "scores.jsonl", scores)
    out = api.train(
        str(tmp_path / "scores.jsonl"),
        tmp_path / "reg",
        dev=str(tmp_path / "scores.jsonl"),
        overrides={"task": "regression", "model": str(tiny_model_dir), "epochs": "5", **FAST},
    )
    assert out["dev_metrics"]["dev_pearson"] > 0.9 and out["dev_metrics"]["dev_spearman"] > 0.8
    assert api.predict(tmp_path / "reg", text="好棒的", text_pair="东西")[0]["score"] > 0


def test_shipped_minilm_loads_and_fine_tunes(tmp_path):
    from conftest import write_jsonl

    texts = [
        ("what a great movie", "pos"),
        ("awful and boring", "neg"),
        ("I loved it", "pos"),
        ("terrible acting", "neg"),
    ] * 8
    write_jsonl(tmp_path / "en.jsonl", [{"text": t, "label": y} for t, y in texts])
    out = api.train(
        str(tmp_path / "en.jsonl"),
        tmp_path / "minilm",
        overrides={
            "model": "minilm-en",
            "epochs": "1",
            "max_steps": "3",
            "progress": "false",
            "batch_size": "8",
            "lr": "1e-4",
        },
    )
    assert out["steps"] == 3
    assert (tmp_path / "minilm" / "model.safetensors").is_file()
    row = api.predict(tmp_path / "minilm", text="a wonderful film")[0]
    assert row["label"] in {"pos", "neg"} and abs(sum(row["probabilities"].values()) - 1) < 1e-4


def test_cli_end_to_end(tiny_model_dir, toy_data, tmp_path, capsys):
    from plmkit.cli import main

    out = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "--model",
                str(tiny_model_dir),
                "--train",
                str(toy_data["train"]),
                "--dev",
                str(toy_data["dev"]),
                "--output",
                str(out),
                "epochs=5",
                "progress=false",
                "batch_size=16",
                "lr=3e-3",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", str(toy_data["test"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["accuracy"] == 1.0 and sum(map(sum, metrics["confusion"])) == 40
    report = out / "eval-test"  # evaluate's pictures and page, beside the model by default
    assert sorted(p.name for p in report.iterdir()) == ["confusion.png", "metrics.json", "report.html", "report.md"]
    assert json.loads((report / "metrics.json").read_text()) == metrics
    assert main(["predict", "--model", str(out), "--text", "差坏烂的东西"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] == "bad"
    assert (
        main(["predict", "--model", str(out), "--input", str(toy_data["test"]), "--output", str(tmp_path / "o.jsonl")])
        == 0
    )
    assert len((tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()) == 40


def test_fast_dropout_draws_other_masks_and_learns_as_well(tiny_model_dir, toy_data, tmp_path):
    """fast_dropout (the default) and PyTorch's dropout: without dropout (hidden and attention) the run is the
    same bit for bit (no mask drawn, attention the fused kernel's); with dropout the masks differ and both learn."""
    undropped = tmp_path / "undropped"
    shutil.copytree(tiny_model_dir, undropped)
    config = json.loads((undropped / "config.json").read_text())
    (undropped / "config.json").write_text(json.dumps(config | {"attention_probs_dropout_prob": 0.0}))
    (undropped / "manifest.json").unlink()  # config.json changed on purpose: the manifest would refuse it
    weights = {}
    for fast in ("true", "false"):
        for model, p in ((undropped, "0.0"), (tiny_model_dir, "0.2")):
            out = tmp_path / f"{fast}-{p}"
            overrides = {"model": str(model), "epochs": "6", "dropout": p, "fast_dropout": fast, **FAST}
            result = api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=overrides)
            assert result["dev_metrics"]["dev_accuracy"] == 1.0
            weights[fast, p] = _weights(out)
    for name, tensor in weights["true", "0.0"].items():
        torch.testing.assert_close(weights["false", "0.0"][name], tensor, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(weights["false", "0.2"][n], t) for n, t in weights["true", "0.2"].items())


def test_resume_refuses_other_data_batch_size_or_seed_and_names_it(tiny_model_dir, toy_data, tmp_path):
    common = {"model": str(tiny_model_dir), "epochs": "2", "save_steps": "3", **FAST}
    with pytest.raises(KeyboardInterrupt):
        api.train(str(toy_data["train"]), tmp_path, overrides=common, callbacks=[stop_at(5)])
    refused = {
        "batch_size: 16 then, 8 now": (toy_data["train"], {"batch_size": "8"}),
        "seed: 42 then, 7 now": (toy_data["train"], {"seed": "7"}),
        "training examples: 160 then, 40 now; training data (token ids) differ": (toy_data["dev"], {}),
    }
    for message, (data, change) in refused.items():
        with pytest.raises(TrainingError, match="the checkpoint was made from other training data or options") as info:
            api.train(str(data), tmp_path, overrides=common | change, resume=True)
        assert message in str(info.value) and "run without --resume to start afresh" in str(info.value)
    # the same data and options: it resumes
    assert api.train(str(toy_data["train"]), tmp_path, overrides=common, resume=True)["steps"] == 20
