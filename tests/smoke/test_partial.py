"""mode=partial: the bottom of the encoder runs once and is cached; the top and the head train on
its output. The views must compute what the whole model computes, and an fp32 run without
dropout must train exactly as fine-tuning with the same layers frozen."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import cut_and_resume, stop_at
from safetensors.torch import load_file

from plmkit import api
from plmkit.errors import ConfigError, TrainingError
from plmkit.models.partial import keep_bottom_layers, split
from plmkit.tasks.classification import build_sequence_classifier
from plmkit.tasks.tagging import build_tagger

FAST = {"progress": False, "batch_size": 16, "mixed_precision": "no"}


def _ids(vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 9), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _comparable(weights: dict[str, torch.Tensor]) -> list[str]:
    """Every weight but the attention keys' biases: softmax ignores them, so their gradient is
    rounding noise (about 1e-9), which Adam's normalisation turns into full-size steps of any sign."""
    return [n for n in weights if not n.endswith("key.bias")]


@pytest.fixture(scope="module")
def still_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny BERT with every dropout off, so fine-tuning's frozen bottom computes what the cache holds."""
    out = tmp_path_factory.mktemp("still") / "tiny-bert"
    shutil.copytree(tiny_model_dir, out)
    config = json.loads((out / "config.json").read_text())
    config |= {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    (out / "config.json").write_text(json.dumps(config))
    (out / "manifest.json").unlink()  # config.json changed on purpose: the manifest would refuse it
    return out


@pytest.mark.parametrize("head", ["cls", "pool"])
def test_views_compute_what_the_classifier_computes(tiny_model_dir, head):
    model = build_sequence_classifier(str(tiny_model_dir), ["a", "b"], head=head).eval()
    ids, mask = _ids(model.config.vocab_size if head == "cls" else model.config.encoder_config.vocab_size)
    bottom, top = split(model, 1)
    hidden = bottom(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
    torch.testing.assert_close(
        top(inputs_embeds=hidden, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
    )
    whole, parts = list(model.parameters()), list(bottom.parameters()) + list(top.parameters())
    assert len(parts) == len(whole) and {id(p) for p in parts} == {id(p) for p in whole}  # shared, each once
    assert len(model.base_model.encoder.layer) == 2 and "embeddings" in model.base_model._modules  # left as it was


def test_views_compute_what_the_tagger_computes(tiny_model_dir):
    model = build_tagger(str(tiny_model_dir), ["O", "B-PER", "I-PER"], head="crf", scheme="bio").eval()
    ids, mask = _ids(model.config.vocab_size)
    unit_pos = torch.tensor([[1, 2, 3], [1, 4, 5], [1, 2, 0]])  # (B, U)
    unit_mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]]).bool()
    bottom, top = split(model, 1)
    hidden = bottom(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(
        top(None, mask, unit_pos, unit_mask, inputs_embeds=hidden), model(ids, mask, unit_pos, unit_mask)
    )


def test_views_of_electra_skip_its_embedding_projection():
    """ELECTRA's embeddings are narrower than its layers; the cached states are already layer-wide."""
    from transformers import ElectraConfig, ElectraForSequenceClassification

    config = ElectraConfig(
        vocab_size=60,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = ElectraForSequenceClassification(config).eval()
    ids, mask = _ids(60)
    bottom, top = split(model, 2)
    hidden = bottom(input_ids=ids, attention_mask=mask).last_hidden_state
    assert hidden.shape[-1] == 32
    torch.testing.assert_close(
        top(inputs_embeds=hidden, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
    )


def test_albert_and_bad_depths_are_refused(tiny_model_dir):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    config = AlbertConfig(
        vocab_size=60,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    albert = AlbertForSequenceClassification(config)
    with pytest.raises(ConfigError, match="laid out like BERT.*share one set of weights"):
        split(albert, 1)
    model = build_sequence_classifier(str(tiny_model_dir), ["a", "b"])
    for n in (0, 2):
        with pytest.raises(ConfigError, match=r"freeze_layers: mode=partial caches the bottom N layers, N in \[1, 1\]"):
            split(model, n)


def test_partial_classification_trains_as_finetuning_with_the_bottom_frozen(still_model_dir, toy_data, tmp_path):
    """fp32, no dropout: caching the frozen bottom changes nothing but the cost. The saved model is
    an ordinary one: it reads token ids, and evaluating it gives the dev accuracy training reported."""
    common = {"model": str(still_model_dir), "epochs": 3, "lr": 3e-3, "freeze_layers": 1, **FAST}
    ref = api.train(str(toy_data["train"]), tmp_path / "finetune", dev=str(toy_data["dev"]), overrides=common)
    got = api.train(
        str(toy_data["train"]), tmp_path / "partial", dev=str(toy_data["dev"]), overrides=common | {"mode": "partial"}
    )
    a, b = _weights(tmp_path / "finetune"), _weights(tmp_path / "partial")
    assert a.keys() == b.keys()
    for name in _comparable(a):
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    assert got["dev_metrics"]["dev_accuracy"] == ref["dev_metrics"]["dev_accuracy"] > 0.9
    assert api.evaluate(tmp_path / "partial", str(toy_data["dev"]))["accuracy"] == got["dev_metrics"]["dev_accuracy"]
    base = load_file(str(still_model_dir / "model.safetensors"))
    assert all(torch.equal(b[n], base[n]) for n in base if n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")))


@pytest.mark.parametrize("bigram_buckets", [0, 64])
def test_partial_tagging_trains_as_finetuning_with_the_bottom_frozen(
    still_model_dir, toy_ner, tmp_path, bigram_buckets
):
    common = {
        "task": "ner",
        "head": "crf",
        "model": str(still_model_dir),
        "epochs": 2,
        "lr": 3e-3,
        "freeze_layers": 1,
        "bigram_buckets": bigram_buckets,
        "bigram_dim": 4,
        **FAST,
    }
    ref = api.train(str(toy_ner["train"]), tmp_path / "finetune", dev=str(toy_ner["dev"]), overrides=common)
    got = api.train(
        str(toy_ner["train"]), tmp_path / "partial", dev=str(toy_ner["dev"]), overrides=common | {"mode": "partial"}
    )
    a, b = _weights(tmp_path / "finetune"), _weights(tmp_path / "partial")
    for name in _comparable(a):
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
    assert got["dev_metrics"]["dev_f1"] == pytest.approx(ref["dev_metrics"]["dev_f1"])
    assert api.evaluate(tmp_path / "partial", str(toy_ner["dev"]))["f1"] == pytest.approx(got["dev_metrics"]["dev_f1"])


def test_partial_needs_a_depth_to_cache(tiny_model_dir, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="freeze_layers: mode=partial caches the bottom N layers"):
        api.train(
            str(toy_data["train"]),
            tmp_path / "m",
            overrides={"model": str(tiny_model_dir), "mode": "partial", "epochs": 1, **FAST},
        )


def test_partial_refuses_gradual_unfreezing(tiny_model_dir, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="gradual_unfreeze: not with mode=partial"):
        api.train(
            str(toy_data["train"]),
            tmp_path / "m",
            overrides={
                "model": str(tiny_model_dir),
                "mode": "partial",
                "freeze_layers": 1,
                "gradual_unfreeze": True,
                **FAST,
            },
        )
    assert not (tmp_path / "m").exists()  # refused before anything ran or was written


def test_partial_run_resumes_exactly(tiny_model_dir, toy_data, tmp_path):
    """A partial run cut at step 7 and resumed from its step-6 checkpoint (the cache is rebuilt, the top's
    weights and optimiser come back) ends with the weights of the uninterrupted run."""
    common = {
        "model": str(tiny_model_dir),
        "mode": "partial",
        "freeze_layers": 1,
        "epochs": 1,
        "lr": 3e-3,
        "save_steps": 3,
        **FAST,
    }
    api.train(str(toy_data["train"]), tmp_path / "full", overrides=common)
    cut_and_resume(str(toy_data["train"]), tmp_path / "cut", common, step=7)
    full, cut = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    for name in full:
        torch.testing.assert_close(cut[name], full[name], rtol=0, atol=0, msg=name)
    assert not (tmp_path / "cut" / "checkpoint").exists()  # a finished run leaves none behind
    with pytest.raises(KeyboardInterrupt):
        api.train(str(toy_data["train"]), tmp_path / "other", overrides=common, callbacks=[stop_at(4)])
    with pytest.raises(TrainingError, match="the checkpoint does not fit this model"):  # refused, not misloaded
        api.train(
            str(toy_data["train"]),
            tmp_path / "other",
            overrides=common | {"freeze_layers": 0, "mode": "finetune"},
            resume=True,
        )


# ---- keep_layers: the top of the encoder dropped ----


@pytest.mark.parametrize("head", ["cls", "pool"])
def test_kept_layers_compute_what_the_bottom_of_the_whole_model_computes(tiny_model_dir, head):
    model = build_sequence_classifier(str(tiny_model_dir), ["a", "b"], head=head).eval()
    base = model.bert if head == "cls" else model.encoder
    ids, mask = _ids(base.config.vocab_size)
    layer_1 = base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1]  # (B, T, H)
    keep_bottom_layers(model, 1)
    assert len(base.encoder.layer) == 1 and base.config.num_hidden_layers == 1
    torch.testing.assert_close(base(input_ids=ids, attention_mask=mask).last_hidden_state, layer_1)


@pytest.mark.parametrize("task", ["classification", "ner"])
def test_kept_layers_train_save_and_reload_as_a_shallower_model(tiny_model_dir, toy_data, toy_ner, task, tmp_path):
    data, head = (toy_data, "pool") if task == "classification" else (toy_ner, "crf")
    out = tmp_path / task
    got = api.train(
        str(data["train"]),
        out,
        dev=str(data["dev"]),
        overrides={
            "task": task,
            "model": str(tiny_model_dir),
            "head": head,
            "keep_layers": 1,
            "epochs": 1,
            "lr": 3e-3,
            **FAST,
        },
    )
    weights = _weights(out)
    assert any(".layer.0." in n for n in weights) and not any(".layer.1." in n for n in weights)
    saved = json.loads((out / "config.json").read_text())
    assert (saved.get("encoder_config") or saved)["num_hidden_layers"] == 1
    main = "dev_accuracy" if task == "classification" else "dev_f1"
    scores = api.evaluate(out, str(data["dev"]))  # reloads the 1-layer model from its directory
    assert scores[main.removeprefix("dev_")] == pytest.approx(got["dev_metrics"][main])
    assert got["dev_metrics"][main] > 0.8  # it learnt the toy task from layer 0's output


def test_keep_layers_out_of_range_or_in_feature_mode_is_refused(tiny_model_dir, toy_data, tmp_path):
    with pytest.raises(ConfigError, match=r"keep_layers: keeps the bottom N layers, N in \[1, 2\]"):
        api.train(
            str(toy_data["train"]), tmp_path / "a", overrides={"model": str(tiny_model_dir), "keep_layers": 3, **FAST}
        )
    with pytest.raises(ConfigError, match="keep_layers: applies to modes finetune and partial"):
        api.train(
            str(toy_data["train"]),
            tmp_path / "b",
            overrides={"model": str(tiny_model_dir), "keep_layers": 1, "mode": "features", **FAST},
        )
