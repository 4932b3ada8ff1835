"""Every model family pretrains a few steps on a tiny config (the loss falls), saves in a form
AutoModel reopens, and fine-tunes with `plmkit train`; real Hugging Face checkpoints of each
family, built here on tiny configs, load for fine-tuning and for continued pretraining."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plmkit import api
from plmkit.errors import ConfigError, ModelError

TINY = {
    "hidden_size": "32",
    "num_layers": "2",
    "num_heads": "2",
    "intermediate_size": "64",
    "vocab_size": "400",
    "max_length": "40",
    "epochs": "6",
    "batch_size": "16",
    "lr": "5e-3",
    "log_steps": "4",
    "progress": "false",
    "heldout_fraction": "0.1",
}
FAMILY = {  # each family's own options, small enough for the tiny config
    "bert": {"nsp": "true"},
    "albert": {"albert.embedding_size": "16", "albert.sharing": "attention"},
    "roberta": {},
    "electra": {"electra.generator_size": "0.5"},
    "spanbert": {},
    "gpt": {},
    "elmo": {},
}
FINE_TUNE = {"epochs": "6", "progress": "false", "batch_size": "16", "lr": "3e-3"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from conftest import toy_rows, toy_tagged

    from plmkit.data.builtin import CORPORA

    cycle = "子丑寅卯辰巳午未申酉戌亥"  # every character is fixed by its neighbours: learnable by any objective
    lines = [(cycle * 4)[k : k + 30] for k in range(12)] * 10 + [t for t, _ in toy_rows(120, seed=5)]
    lines += CORPORA["reviews"]()[:300]  # real text, so that a byte-level BPE has something to merge
    lines += ["".join(chars) for chars, _ in toy_tagged(100, seed=9)]  # the characters of the toy NER task
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _auto_model(path: Path):
    from transformers import AutoModel

    from plmkit.models.encoders import register_plmkit_models

    register_plmkit_models()
    return AutoModel.from_pretrained(str(path), use_safetensors=True)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(FAMILY))
def test_family_pretrains_reloads_and_fine_tunes(arch, corpus, toy_data, tmp_path):
    out = tmp_path / arch
    result = api.pretrain([str(corpus)], out, overrides=TINY | FAMILY[arch] | {"arch": arch})
    losses = [loss for _, loss in result["losses"]]
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5]), losses  # averaged: batches of cycles and of reviews differ
    dev = [h["dev_loss"] for h in result["history"]]
    assert min(dev) < dev[0]
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["arch"] == arch and log["losses"] == result["losses"]

    encoder = _auto_model(out)  # the saved directory is a Hugging Face model directory
    assert encoder.config.hidden_size == 32
    hidden = encoder(input_ids=torch.tensor([[2, 7, 9, 3]]), output_hidden_states=True).hidden_states
    assert len(hidden) == 3 and hidden[-1].shape == (1, 4, 32)

    tuned = api.train(
        str(toy_data["train"]), tmp_path / "tuned", dev=str(toy_data["dev"]), overrides=FINE_TUNE | {"model": str(out)}
    )
    assert tuned["dev_metrics"]["dev_accuracy"] >= 0.85, tuned["dev_metrics"]


def test_electra_keeps_the_generator_and_shares_embeddings(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "electra"
    api.pretrain(
        [str(corpus)], out, overrides=TINY | {"arch": "electra", "epochs": "1", "electra.generator_size": "0.5"}
    )
    disc, gen = _auto_model(out), AutoModelForMaskedLM.from_pretrained(str(out / "generator"))
    assert gen.config.hidden_size == 16 and disc.config.hidden_size == 32
    assert torch.equal(gen.electra.embeddings.word_embeddings.weight, disc.embeddings.word_embeddings.weight)
    continued = api.pretrain(
        [str(corpus)],
        tmp_path / "more",
        overrides=TINY
        | {
            "arch": "electra",
            "init": str(out),
            "epochs": "1",
            "max_steps": "2",
            "log_steps": "1",
            "electra.generator_size": "0.5",
        },
    )
    assert continued["losses"]


def test_albert_sharing_survives_pretraining_and_reload(corpus, tmp_path):
    from transformers import AutoModelForPreTraining

    from plmkit.models.encoders import register_plmkit_models

    register_plmkit_models()
    counts = {}
    for sharing in ("all", "attention", "ffn"):
        out = tmp_path / sharing
        result = api.pretrain(
            [str(corpus)],
            out,
            overrides=TINY
            | {
                "arch": "albert",
                "epochs": "1",
                "num_layers": "3",
                "albert.embedding_size": "16",
                "albert.sharing": sharing,
            },
        )
        reloaded = AutoModelForPreTraining.from_pretrained(str(out), use_safetensors=True)
        counts[sharing] = sum(p.numel() for p in reloaded.parameters())
        assert counts[sharing] == result["parameters"]
        assert reloaded.albert.embeddings.word_embeddings.weight.shape[1] == 16  # factorised: E = 16 < H = 32
    assert counts["all"] < counts["attention"] and counts["all"] < counts["ffn"]


def test_spanbert_keeps_its_boundary_head_for_continued_pretraining(corpus, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "span"
    api.pretrain([str(corpus)], out, overrides=TINY | {"arch": "spanbert", "epochs": "1"})
    head = load_file(str(out / "sbo_head.safetensors"))
    more = tmp_path / "more"
    api.pretrain(
        [str(corpus)], more, overrides=TINY | {"arch": "spanbert", "init": str(out), "max_steps": "2", "lr": "1e-3"}
    )
    after = load_file(str(more / "sbo_head.safetensors"))
    key = next(iter(head))
    assert 0 < (after[key] - head[key]).abs().max().item() < 0.1  # trained on from the saved head, not re-drawn


@pytest.mark.parametrize("family", ["bert", "albert", "roberta", "electra", "gpt2"])
def test_hugging_face_checkpoints_of_each_family_fine_tune_and_continue(family, corpus, toy_data, tmp_path):
    """Checkpoints as the Hub holds them (HF classes and configs, safetensors), built on tiny configs."""
    import transformers as tf

    from plmkit.models.saving import save_model_dir
    from plmkit.pretrain.run import read_corpus
    from plmkit.pretrain.tokenizer import train_byte_bpe, train_wordpiece

    lines = read_corpus([str(corpus)])
    tok = (
        train_byte_bpe(lines, 400, "roberta" if family == "roberta" else "gpt")
        if family in ("roberta", "gpt2")
        else train_wordpiece(lines, 400)
    )
    size = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
    )
    model = {
        "bert": lambda: tf.BertForPreTraining(tf.BertConfig(**size)),
        "albert": lambda: tf.AlbertForPreTraining(tf.AlbertConfig(embedding_size=16, **size)),
        "roberta": lambda: tf.RobertaForMaskedLM(
            tf.RobertaConfig(max_position_embeddings=130, type_vocab_size=1, **size)
        ),
        "electra": lambda: tf.ElectraForPreTraining(tf.ElectraConfig(embedding_size=32, **size)),
        "gpt2": lambda: tf.GPT2LMHeadModel(
            tf.GPT2Config(
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_inner=64,
                vocab_size=len(tok),
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        ),
    }[family]()
    hub = tmp_path / f"hub-{family}"
    save_model_dir(hub, model, tok)

    tuned = api.train(
        str(toy_data["train"]),
        tmp_path / "tuned",
        dev=str(toy_data["dev"]),
        overrides=FINE_TUNE | {"model": str(hub), "max_length": "64"},
    )
    assert tuned["dev_metrics"]["dev_accuracy"] >= 0.85
    arch = {"gpt2": "gpt"}.get(family, family)
    more = api.pretrain(
        [str(corpus)],
        tmp_path / "more",
        overrides=TINY
        | {
            "arch": arch,
            "init": str(hub),
            "max_steps": "3",
            "epochs": "1",
            "log_steps": "1",
            "nsp": str(family == "bert"),
        },
    )
    assert len(more["losses"]) >= 1 and (tmp_path / "more" / "model.safetensors").is_file()


def test_a_checkpoint_of_another_family_is_refused(tiny_model_dir, corpus, tmp_path):
    with pytest.raises(ModelError, match="bert checkpoint cannot continue as arch 'gpt'"):
        api.pretrain([str(corpus)], tmp_path / "x", overrides=TINY | {"arch": "gpt", "init": str(tiny_model_dir)})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"arch": "gpt", "whole_word": "true"}, "whole_word: arch 'gpt'"),
        ({"arch": "roberta", "nsp": "true"}, "nsp: next-sentence prediction is a bert objective"),
        ({"arch": "albert", "albert.embedding_size": "64"}, "factorised embeddings need E <= H"),
        (
            {"arch": "albert", "albert.embedding_size": "16", "albert.sharing": "layers"},
            "albert.sharing: 'layers' is not one of: all, attention, ffn, none",
        ),
        ({"arch": "bart"}, "unknown arch 'bart'; known: albert, bert, electra, elmo, gpt, roberta, spanbert"),
    ],
)
def test_bad_family_options_are_named(overrides, message, corpus, tmp_path):
    with pytest.raises((ConfigError, ValueError), match=message):
        api.pretrain([str(corpus)], tmp_path / "x", overrides=TINY | overrides)


def test_elmo_layers_feed_the_scalar_mix_in_feature_mode(corpus, toy_data, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "elmo"
    api.pretrain([str(corpus)], out, overrides=TINY | {"arch": "elmo", "epochs": "2"})
    result = api.train(
        str(toy_data["train"]),
        tmp_path / "features",
        dev=str(toy_data["dev"]),
        overrides={
            "model": str(out),
            "mode": "features",
            "feature_cache": "memory",
            "epochs": "8",
            "lr": "3e-3",
            "progress": "false",
            "batch_size": "16",
        },
    )
    assert result["dev_metrics"]["dev_accuracy"] >= 0.85
    meta = json.loads((tmp_path / "features" / "plmkit.json").read_text())
    assert len(meta["layer_weights"]) == 3  # token layer + 2 biLSTM layers, mixed
    head = load_file(str(tmp_path / "features" / "head.safetensors"))
    assert {"layers.weights", "layers.gamma"} <= set(head)  # the mix is saved with the head


@pytest.mark.parametrize("arch, epochs", [("gpt", 4), ("elmo", 12)])
def test_families_outside_bert_tag_entities(arch, epochs, corpus, toy_ner, tmp_path):
    """The tagger reads each family's own dropout name (GPT-2: resid_pdrop) and last hidden state."""
    out = tmp_path / arch
    api.pretrain([str(corpus)], out, overrides=TINY | {"arch": arch, "epochs": "1"})
    result = api.train(
        str(toy_ner["train"]),
        tmp_path / "ner",
        dev=str(toy_ner["dev"]),
        overrides={"task": "ner", "model": str(out), "epochs": str(epochs), "lr": "3e-3", "progress": "false"},
    )
    assert result["dev_metrics"]["dev_f1"] >= 0.85, result["dev_metrics"]


def test_gpt_classifies_by_the_last_real_token(corpus, tmp_path):
    """Right padding changes nothing, and the last real token (the end token plmkit's GPT tokenizer
    appends) sees the whole text, so changing the first token changes the logits."""
    from plmkit.data.truncation import encode
    from plmkit.tasks.classification import build_sequence_classifier, collate, forward

    out = tmp_path / "gpt"
    api.pretrain([str(corpus)], out, overrides=TINY | {"arch": "gpt", "epochs": "1"})
    from plmkit.models.encoders import load_tokenizer

    tok = load_tokenizer(str(out))
    model = build_sequence_classifier(str(out), ["bad", "good"], pad_token_id=tok.pad_token_id).eval()
    texts = ["好棒的东西", "差坏烂糟恨丑的东西，很长很长的一句话", "坏棒的东西"]
    feats = [encode(tok, t, None, 64, "head") for t in texts]
    assert feats[0]["input_ids"][-1] == tok.eos_token_id
    with torch.no_grad():
        together = forward(model, collate(feats, tok.pad_token_id))  # (3, 2)
        alone = [forward(model, collate([f], tok.pad_token_id))[0] for f in feats]
    for row, single in zip(together, alone):
        assert torch.allclose(row, single, atol=1e-5)
    assert not torch.allclose(alone[0], alone[2], atol=1e-4)  # only the first character differs
