"""Feature extraction: a frozen encoder run once, every layer cached, heads trained on the cache."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import NEG, POS, write_csv
from safetensors.torch import load_file

from plmkit import api
from plmkit.errors import ConfigError
from plmkit.models.pooling import pool
from plmkit.models.scalar_mix import ScalarMix

FAST = {"progress": "false", "batch_size": "16", "lr": "5e-3", "log_steps": "1", "mode": "features"}


def _run(tiny_model_dir, data, out, cache, **overrides):
    return api.train(
        str(data["train"]),
        out,
        dev=str(data["dev"]),
        overrides={"model": str(tiny_model_dir), "cache_dir": str(cache), **FAST, **overrides},
    )


@pytest.fixture(scope="module")
def mixed(tiny_model_dir, toy_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("features")
    return d, _run(tiny_model_dir, toy_data, d / "model", d / "cache", epochs="8")


def test_head_learns_on_cached_layers_and_encoder_stays_frozen(mixed, tiny_model_dir, toy_data):
    d, result = mixed
    assert result["dev_metrics"]["dev_accuracy"] == 1.0
    assert result["cache_hit"] is False and len(list((d / "cache").glob("*.safetensors"))) == 2  # train and dev
    weights = result["layer_weights"]
    assert len(weights) == 3 and abs(sum(weights) - 1) < 1e-5  # embeddings + 2 layers
    assert weights != pytest.approx([1 / 3] * 3, abs=1e-4)  # the mix was learned
    meta = json.loads((d / "model" / "plmkit.json").read_text())
    assert meta["mode"] == "features" and meta["head"] == "mlp" and meta["layer_weights"] == weights
    assert (d / "model" / "layer_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    saved = load_file(str(d / "model" / "model.safetensors"))
    shared = [k for k in saved if "encoder.layer.1" in k]
    assert shared and all(torch.equal(saved[k], base["bert." + k]) for k in shared)
    assert api.evaluate(d / "model", str(toy_data["test"]))["accuracy"] >= 0.95
    assert [r["label"] for r in (api.predict(d / "model", text=t)[0] for t in ("好棒赞的东西", "差坏烂糟的东西"))] == [
        "good",
        "bad",
    ]


def test_second_run_reads_the_cache_and_matches(mixed, tiny_model_dir, toy_data):
    d, first = mixed
    again = _run(tiny_model_dir, toy_data, d / "again", d / "cache", epochs="8")
    assert again["cache_hit"] is True
    assert again["layer_weights"] == first["layer_weights"]
    assert again["dev_metrics"]["dev_accuracy"] == first["dev_metrics"]["dev_accuracy"]
    assert len(list((d / "cache").glob("*.safetensors"))) == 2


def test_the_mapped_disk_cache_holds_what_memory_extraction_gives(mixed, tiny_model_dir, toy_data, tmp_path):
    """The disk cache is written through a file mapping and read back mapped: the same features as
    extraction into memory, so the same training to the last weight."""
    d, first = mixed
    in_memory = _run(
        tiny_model_dir, toy_data, tmp_path / "memory", tmp_path / "unused", epochs="8", feature_cache="memory"
    )
    assert not (tmp_path / "unused").exists()
    assert in_memory["layer_weights"] == first["layer_weights"]
    assert in_memory["dev_metrics"]["dev_accuracy"] == first["dev_metrics"]["dev_accuracy"]
    disk, memory = (
        load_file(str(d / "model" / "head.safetensors")),
        load_file(str(tmp_path / "memory" / "head.safetensors")),
    )
    assert disk.keys() == memory.keys() and all(torch.equal(disk[k], memory[k]) for k in disk)


def test_a_corrupt_cache_file_is_extracted_again(tiny_model_dir, toy_data, tmp_path, capsys):
    first = _run(tiny_model_dir, toy_data, tmp_path / "a", tmp_path / "cache", epochs="1")
    files = sorted((tmp_path / "cache").glob("*.safetensors"))
    files[0].write_bytes(b"not a safetensors file")  # a crash elsewhere, a full disk, a stray edit
    again = _run(tiny_model_dir, toy_data, tmp_path / "b", tmp_path / "cache", epochs="1")
    assert f"feature cache {files[0]} is unreadable" in capsys.readouterr().err
    assert again["cache_hit"] is False and again["dev_metrics"]["dev_accuracy"] == first["dev_metrics"]["dev_accuracy"]
    assert load_file(str(files[0]))["values"].dtype == torch.float16  # replaced by a good file


def test_changed_truncation_or_model_never_reuses_the_cache(mixed, tiny_model_dir, toy_data, tmp_path):
    d, _ = mixed
    short = _run(tiny_model_dir, toy_data, tmp_path / "short", d / "cache", epochs="1", max_length="8")
    assert short["cache_hit"] is False
    # the same architecture with other weights: same token ids, other fingerprint
    import shutil

    from safetensors.torch import save_file

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    state = load_file(str(other / "model.safetensors"))
    key = next(k for k in state if k.endswith("encoder.layer.0.output.dense.weight"))
    state[key] = state[key] + 0.01
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    (other / "manifest.json").unlink()  # weights changed on purpose: the manifest would refuse them
    changed = api.train(
        str(toy_data["train"]),
        tmp_path / "changed",
        dev=str(toy_data["dev"]),
        overrides={"model": str(other), "cache_dir": str(d / "cache"), **FAST, "epochs": "1"},
    )
    assert changed["cache_hit"] is False


def test_memory_cache_writes_nothing(tiny_model_dir, toy_data, tmp_path):
    result = _run(tiny_model_dir, toy_data, tmp_path / "m", tmp_path / "cache", epochs="1", feature_cache="memory")
    assert result["cache_hit"] is False and not (tmp_path / "cache").exists()


def test_fixed_layer_and_bilstm_head(tiny_model_dir, toy_data, tmp_path):
    result = _run(tiny_model_dir, toy_data, tmp_path / "l0", tmp_path / "cache", epochs="6", layers="0", head="bilstm")
    assert result["layer_weights"] == [1.0, 0.0, 0.0]
    assert result["dev_metrics"]["dev_accuracy"] >= 0.95
    assert not (tmp_path / "l0" / "layer_weights.png").exists()  # nothing learned to plot
    assert api.evaluate(tmp_path / "l0", str(toy_data["test"]))["accuracy"] >= 0.95


def test_scalar_mix_and_pooling():
    values = torch.randn(2, 4, 3, 5)  # (B, T, N+1, H)
    assert torch.equal(ScalarMix(3, 1)(values), values[:, :, 1])
    mix = ScalarMix(3)
    assert torch.allclose(mix(values), values.mean(2), atol=1e-6)  # uniform weights, gamma 1 at the start
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 0.0, 50.0]))
        mix.gamma.fill_(2.0)
    assert torch.allclose(mix(values), 2 * values[:, :, 2], atol=1e-4)
    x = torch.tensor([[[1.0], [3.0], [100.0]]])  # (1, 3, 1); the third position is padding
    assert pool(x, torch.tensor([[True, True, False]]), "mean_max").tolist() == [[2.0, 3.0]]


def test_tagging_on_cached_units(tiny_model_dir, toy_ner, tmp_path):
    out = tmp_path / "ner"
    result = api.train(
        str(toy_ner["train"]),
        out,
        dev=str(toy_ner["dev"]),
        overrides={
            "task": "ner",
            "model": str(tiny_model_dir),
            "cache_dir": str(tmp_path / "c"),
            **FAST,
            "epochs": "10",
            "lr": "1e-2",
        },
    )
    assert result["head"] == "bilstm_crf"
    assert result["dev_metrics"]["dev_f1"] >= 0.95
    assert api.evaluate(out, str(toy_ner["test"]))["f1"] >= 0.95
    row = api.predict(out, text="好甲子的辰京东西")[0]
    assert {(e["text"], e["type"], e["start"], e["end"]) for e in row["entities"]} == {
        ("甲子", "PER", 1, 3),
        ("辰京", "LOC", 4, 6),
    }


@pytest.mark.slow
def test_pair_esim_head_learns_a_relation(tiny_model_dir, tmp_path):
    """Label 'same' when both texts are made of the same kind of characters: only a head that
    compares the two texts can learn it."""
    rng = random.Random(5)

    def rows(n):
        out = []
        for _ in range(n):
            a, b = rng.choice([POS, NEG]), rng.choice([POS, NEG])
            out.append(
                (
                    "".join(rng.choice(a) for _ in range(rng.randint(2, 6))),
                    "".join(rng.choice(b) for _ in range(rng.randint(2, 6))),
                    "same" if a == b else "different",
                )
            )
        return out

    header = ("text", "text_pair", "label")
    data = {
        "train": write_csv(tmp_path / "train.csv", rows(300), header),
        "dev": write_csv(tmp_path / "dev.csv", rows(60), header),
    }
    result = api.train(
        str(data["train"]),
        tmp_path / "pair",
        dev=str(data["dev"]),
        overrides={
            "task": "pair",
            "model": str(tiny_model_dir),
            "cache_dir": str(tmp_path / "c"),
            **FAST,
            "epochs": "15",
        },
    )
    assert result["head"] == "esim"
    assert result["dev_metrics"]["dev_accuracy"] >= 0.9
    # unseen pairs through predict: one pair can sit near the boundary on some CPU's arithmetic, twenty cannot
    unseen = rows(20)
    predicted = api.predict(tmp_path / "pair", input=str(write_csv(tmp_path / "test.csv", unseen, header)))
    assert sum(p["label"] == label for p, (_, _, label) in zip(predicted, unseen)) >= 18
    row = api.predict(tmp_path / "pair", text="好棒", text_pair="赞美")[0]
    assert row["text_pair"] == "赞美" and row["label"] in ("same", "different")


def test_feature_mode_config_errors(tiny_model_dir, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="layer_lr_decay: applies to modes finetune and partial"):
        _run(tiny_model_dir, toy_data, tmp_path / "a", tmp_path / "c", layer_lr_decay="0.9")
    with pytest.raises(ConfigError, match="layers: 3 is out of range"):
        _run(tiny_model_dir, toy_data, tmp_path / "b", tmp_path / "c", layers="3")
    with pytest.raises(ConfigError, match="known: mlp, bilstm"):
        _run(tiny_model_dir, toy_data, tmp_path / "c2", tmp_path / "c", head="esim")
    with pytest.raises(ConfigError, match="mode: 'frozen' is not one of: finetune, partial, features"):
        _run(tiny_model_dir, toy_data, tmp_path / "d", tmp_path / "c", mode="frozen")
