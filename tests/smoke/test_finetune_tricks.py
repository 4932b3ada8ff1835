"""ULMFiT's fine-tuning tricks on a tiny BERT (hidden 32, 2 layers): slanted triangular rates,
layer-wise (discriminative) rates and gradual unfreezing, alone and in real training runs."""

from __future__ import annotations

import pytest
import torch
from conftest import cut_and_resume
from safetensors.torch import load_file

from plmkit import api
from plmkit.config import LoopConfig
from plmkit.errors import ConfigError
from plmkit.tasks.classification import build_sequence_classifier
from plmkit.tasks.tagging import build_tagger
from plmkit.train.loop import LoopState
from plmkit.train.optim import (
    build_schedule,
    default_param_groups,
    discriminative_lrs,
    finetune_param_groups,
    gradual_unfreezer,
    layer_groups,
    named_layer_groups,
    slanted_triangular,
    unfrozen_count,
)

FAST = {"progress": False, "batch_size": 16, "mixed_precision": "no"}
GROUPS = ["embeddings", "layer.0", "layer.1", "head"]


def record_lrs(seen: dict[int, list[float]]):
    """A callback keeping every optimiser group's rate at each step."""
    return lambda state: seen.__setitem__(state.step, list(state.lrs))


def lr_by_group(names: list[str], lrs: list[float]) -> dict[str, float]:
    """Rates by layer group ("layer.0.no_decay" counts as "layer.0"); the decay and no-decay halves must agree."""
    out: dict[str, float] = {}
    for name, lr in zip(names, lrs, strict=True):
        group = name.removesuffix(".no_decay")
        assert out.setdefault(group, lr) == lr, name
        out[group] = lr
    return out


def classifier(tiny_model_dir):
    torch.manual_seed(0)
    return build_sequence_classifier(str(tiny_model_dir), ["bad", "good"])


# ---- slanted triangular rates ----


def test_slanted_triangular_known_points():
    assert slanted_triangular(0.0, 0.1, 32.0) == pytest.approx(1 / 32)
    assert slanted_triangular(0.1, 0.1, 32.0) == pytest.approx(1.0)
    assert slanted_triangular(1.0, 0.1, 32.0) == pytest.approx(1 / 32)
    assert slanted_triangular(0.05, 0.1, 32.0) == pytest.approx((1 + 0.5 * 31) / 32)  # halfway up
    assert slanted_triangular(0.55, 0.1, 32.0) == pytest.approx((1 + 0.5 * 31) / 32)  # halfway down
    assert slanted_triangular(0.3, 0.2, 1.0) == 1.0  # ratio 1: constant
    rates = [slanted_triangular(p / 100, 0.25, 8.0) for p in range(101)]
    assert max(rates) == pytest.approx(1.0) and rates.index(max(rates)) == 25
    assert rates[:26] == sorted(rates[:26]) and rates[25:] == sorted(rates[25:], reverse=True)


def test_stlr_rates_in_a_real_run(tiny_model_dir, toy_data, tmp_path):
    seen: dict[int, list[float]] = {}
    api.train(
        str(toy_data["train"]),
        tmp_path / "stlr",
        callbacks=[record_lrs(seen)],
        overrides={
            "model": str(tiny_model_dir),
            "epochs": 2,
            "lr": 1e-3,
            "schedule": "stlr",
            "cut_frac": 0.2,
            "ratio": 8,
            **FAST,
        },
    )
    total = len(seen)
    assert total == 20 and sorted(seen) == list(range(1, 21))  # 160 examples, batches of 16, 2 epochs
    for step, lrs in seen.items():
        # the rate of step s was set by s - 1 scheduler steps; build_schedule takes each step's midpoint
        expected = 1e-3 * slanted_triangular((step - 1 + 0.5) / total, 0.2, 8.0)
        assert lrs == pytest.approx([expected] * len(lrs), rel=1e-9), step
    rates = [seen[s][0] for s in range(1, 21)]  # the peak is the first step whose midpoint passes cut_frac
    assert rates[:5] == sorted(rates[:5]) and rates[4:] == sorted(rates[4:], reverse=True) and rates[4] == max(rates)


# ---- layer groups and discriminative rates ----


def test_layer_groups_partition_bert_classifier(tiny_model_dir):
    model = classifier(tiny_model_dir)
    named = named_layer_groups(model)
    assert [g for g, _ in named] == GROUPS
    groups = layer_groups(model)
    everything = [n for n, _ in model.named_parameters()]
    assert sorted(n for g in groups for n in g) == sorted(everything) and sum(map(len, groups)) == len(everything)
    embeddings, layer0, layer1, head = groups
    assert all(n.startswith("bert.embeddings.") for n in embeddings)
    assert all(n.startswith("bert.encoder.layer.0.") for n in layer0)
    assert {n for n in layer1 if not n.startswith("bert.encoder.layer.1.")} == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
    }
    assert head == ["classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("head", ["softmax", "bilstm_crf"])
def test_layer_groups_partition_tagger(tiny_model_dir, head):
    model = build_tagger(str(tiny_model_dir), ["O", "B-PER", "I-PER"], head=head, scheme="bio")
    named = dict(named_layer_groups(model))
    assert list(named) == GROUPS
    everything = [n for n, _ in model.named_parameters()]
    assert sorted(n for g in named.values() for n in g) == sorted(everything)
    assert all(n.startswith("encoder.embeddings.") for n in named["embeddings"])
    assert all(n.startswith(f"encoder.encoder.layer.{i}.") for i in (0, 1) for n in named[f"layer.{i}"])
    assert named["head"] == [n for n in everything if not n.startswith("encoder.")]
    assert {n.split(".")[0] for n in named["head"]} == (
        {"classifier"} if head == "softmax" else {"lstm", "classifier", "crf"}
    )


def test_discriminative_lrs():
    assert discriminative_lrs(2, 1e-3, 0.5) == pytest.approx([2.5e-4, 5e-4, 1e-3, 1e-3])
    assert discriminative_lrs(3, 1.0, 0.9, head_lr=5.0) == pytest.approx([0.9**3, 0.9**2, 0.9, 1.0, 5.0])
    assert discriminative_lrs(4, 2e-5, 1.0) == [2e-5] * 6


def test_finetune_param_groups_without_decay_match_the_default(tiny_model_dir):
    model = classifier(tiny_model_dir)
    groups = finetune_param_groups(model, 0.01, 1e-3)
    assert all(g["lr"] == 1e-3 for g in groups)
    assert [g["name"] for g in groups] == [n + s for n in GROUPS for s in ("", ".no_decay")]

    def by_decay(gs):
        return {wd: {id(p) for g in gs if g["weight_decay"] == wd for p in g["params"]} for wd in (0.0, 0.01)}

    assert by_decay(groups) == by_decay(default_param_groups(model, 0.01))
    decayed = finetune_param_groups(model, 0.01, 1e-3, 0.5, head_lr=3e-3)
    rates = lr_by_group([g["name"] for g in decayed], [g["lr"] for g in decayed])
    assert rates == pytest.approx({"embeddings": 2.5e-4, "layer.0": 5e-4, "layer.1": 1e-3, "head": 3e-3})


def test_layer_lr_decay_in_a_real_run(tiny_model_dir, toy_data, tmp_path):
    seen: dict[int, list[float]] = {}
    api.train(
        str(toy_data["train"]),
        tmp_path / "llrd",
        callbacks=[record_lrs(seen)],
        overrides={
            "model": str(tiny_model_dir),
            "epochs": 1,
            "lr": 1e-3,
            "layer_lr_decay": 0.5,
            "schedule": "constant",
            "warmup_ratio": 0,
            **FAST,
        },
    )
    names = [g["name"] for g in finetune_param_groups(classifier(tiny_model_dir), 0.01, 1e-3)]
    assert len(seen) == 10
    for lrs in seen.values():
        assert lr_by_group(names, lrs) == pytest.approx(
            {"embeddings": 2.5e-4, "layer.0": 5e-4, "layer.1": 1e-3, "head": 1e-3}
        )


# ---- gradual unfreezing ----


def test_unfrozen_count():
    assert [unfrozen_count(e, 999, 0, 4) for e in range(6)] == [1, 2, 3, 4, 4, 4]
    assert [unfrozen_count(0, s, 5, 4) for s in (0, 4, 5, 9, 10, 15, 100)] == [1, 1, 2, 2, 3, 4, 4]


def test_gradual_unfreezer_sets_requires_grad_top_down(tiny_model_dir):
    model = classifier(tiny_model_dir)
    named = named_layer_groups(model)
    params = dict(model.named_parameters())

    def trainable() -> list[str]:
        flags = {g: {params[n].requires_grad for n in names} for g, names in named}
        assert all(len(f) == 1 for f in flags.values()), flags  # a group is all trainable or all frozen
        return [g for g, f in flags.items() if f == {True}]

    per_epoch = gradual_unfreezer(model, layer_groups(model), every=0)
    for epoch, expected in [
        (0, ["head"]),
        (1, ["layer.1", "head"]),
        (2, ["layer.0", "layer.1", "head"]),
        (3, GROUPS),
        (7, GROUPS),
    ]:
        per_epoch(LoopState(epoch=epoch, step=1000))
        assert trainable() == expected, epoch
        per_epoch(LoopState(epoch=epoch, step=1000))  # idempotent
        assert trainable() == expected, epoch
    per_epoch(LoopState(epoch=1))  # a run resumed at an earlier point freezes again what it must
    assert trainable() == ["layer.1", "head"]

    per_steps = gradual_unfreezer(model, layer_groups(model), every=3)
    for step, count in [(0, 1), (2, 1), (3, 2), (5, 2), (6, 3), (9, 4), (50, 4)]:
        per_steps(LoopState(epoch=0, step=step))
        assert trainable() == GROUPS[-count:], step


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_gradual_unfreeze_leaves_frozen_groups_as_pretrained(tiny_model_dir, toy_data, tmp_path):
    """Two epochs: the head alone, then the head and layer 1; layer 0 and the embeddings never train."""
    out = tmp_path / "unfreeze"
    api.train(
        str(toy_data["train"]),
        out,
        overrides={"model": str(tiny_model_dir), "epochs": 2, "lr": 3e-3, "gradual_unfreeze": True, **FAST},
    )
    base, tuned = _weights(tiny_model_dir), _weights(out)
    frozen = [n for n in base if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [n for n in base if n.startswith("bert.encoder.layer.1.")]
    assert len(frozen) == 5 + 16 and len(trained) == 16
    for name in frozen:
        torch.testing.assert_close(tuned[name], base[name], rtol=0, atol=0, msg=name)
    assert all(not torch.equal(tuned[n], base[n]) for n in trained if n.endswith("weight"))


def test_freeze_layers_trains_only_the_top(tiny_model_dir, toy_data, tmp_path):
    """freeze_layers=1: the embeddings and layer 0 stay as pretrained; layer 1 and the head train."""
    out = tmp_path / "frozen"
    api.train(
        str(toy_data["train"]),
        out,
        overrides={"model": str(tiny_model_dir), "epochs": 1, "lr": 3e-3, "freeze_layers": 1, **FAST},
    )
    base, tuned = _weights(tiny_model_dir), _weights(out)
    frozen = [n for n in base if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))]
    trained = [n for n in base if n.startswith("bert.encoder.layer.1.") and n.endswith("weight")]
    for name in frozen:
        torch.testing.assert_close(tuned[name], base[name], rtol=0, atol=0, msg=name)
    assert trained and all(not torch.equal(tuned[n], base[n]) for n in trained)


def test_gradual_unfreeze_by_steps_resumes_exactly(tiny_model_dir, toy_data, tmp_path):
    """unfreeze_every=4: a run cut at step 7 and resumed from its step-6 checkpoint ends as the uninterrupted one."""
    common = {
        "model": str(tiny_model_dir),
        "epochs": 1,
        "lr": 3e-3,
        "gradual_unfreeze": True,
        "unfreeze_every": 4,
        "save_steps": 3,
        **FAST,
    }
    api.train(str(toy_data["train"]), tmp_path / "full", overrides=common)
    cut_and_resume(str(toy_data["train"]), tmp_path / "cut", common, step=7)
    full, cut, base = _weights(tmp_path / "full"), _weights(tmp_path / "cut"), _weights(tiny_model_dir)
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=0, msg=name)
    # 10 steps, a group every 4: the head, then layer 1 from step 5, layer 0 from step 9; never the embeddings
    assert all(torch.equal(full[n], base[n]) for n in base if n.startswith("bert.embeddings."))
    assert not torch.equal(
        full["bert.encoder.layer.0.attention.self.query.weight"],
        base["bert.encoder.layer.0.attention.self.query.weight"],
    )


# ---- the tagging runner ----


def test_tagging_runner_layer_rates_head_lr_and_unfreezing(tiny_model_dir, toy_ner, tmp_path):
    seen: dict[int, list[float]] = {}
    out = tmp_path / "ner"
    api.train(
        str(toy_ner["train"]),
        out,
        callbacks=[record_lrs(seen)],
        overrides={
            "task": "ner",
            "head": "softmax",
            "model": str(tiny_model_dir),
            "epochs": 2,
            "lr": 1e-3,
            "head_lr": 3e-3,
            "layer_lr_decay": 0.5,
            "schedule": "constant",
            "warmup_ratio": 0,
            "gradual_unfreeze": True,
            **FAST,
        },
    )
    tagger = build_tagger(str(tiny_model_dir), ["O", "B-PER", "I-PER"], head="softmax", scheme="bio")
    names = [g["name"] for g in finetune_param_groups(tagger, 0.01, 1e-3)]
    assert seen
    for lrs in seen.values():
        assert lr_by_group(names, lrs) == pytest.approx(
            {"embeddings": 2.5e-4, "layer.0": 5e-4, "layer.1": 1e-3, "head": 3e-3}
        )
    base, tuned = _weights(tiny_model_dir), _weights(out)  # saved under Hugging Face's names: bert.…
    for name in (n for n in base if n.startswith(("bert.embeddings.", "bert.encoder.layer.0."))):
        torch.testing.assert_close(tuned[name], base[name], rtol=0, atol=0, msg=name)
    assert not torch.equal(
        tuned["bert.encoder.layer.1.output.dense.weight"], base["bert.encoder.layer.1.output.dense.weight"]
    )


# ---- bad values ----


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("layer_lr_decay", 0, "layer_lr_decay"),
        ("layer_lr_decay", 1.5, "layer_lr_decay"),
        ("unfreeze_every", -1, "unfreeze_every"),
        ("freeze_layers", 2, r"freeze_layers: 2 is not in \[0, 1\]"),
        ("freeze_layers", -1, "freeze_layers"),
        ("cut_frac", 0, "cut_frac"),
        ("ratio", 0.5, "ratio"),
        ("schedule", "foo", "linear, constant, stlr"),
    ],
)
def test_bad_values_are_config_errors(tiny_model_dir, toy_data, tmp_path, key, value, message):
    overrides = {"model": str(tiny_model_dir), "epochs": 1, key: value, **FAST}
    if key in ("cut_frac", "ratio"):
        overrides["schedule"] = "stlr"
    with pytest.raises(ConfigError, match=message):
        api.train(str(toy_data["train"]), tmp_path / "bad", overrides=overrides)
    assert not (tmp_path / "bad" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "cfg",
    [LoopConfig(schedule="stlr", cut_frac=1.0), LoopConfig(schedule="stlr", ratio=0.9), LoopConfig(schedule="cosine")],
)
def test_build_schedule_checks_its_options(cfg):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError):
        build_schedule(optimizer, cfg, 10)
