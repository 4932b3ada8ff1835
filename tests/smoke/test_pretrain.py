"""Pretraining smoke test: a tiny BERT's masked-LM loss falls, and the result fine-tunes."""

from __future__ import annotations

import json

import pytest

from plmkit import api


def test_tiny_pretraining_lowers_loss_and_fine_tunes(tmp_path, toy_data):
    from conftest import toy_rows

    corpus = tmp_path / "corpus.txt"
    cycle = "子丑寅卯辰巳午未申酉戌亥"  # a masked character is fixed by its neighbours: learnable
    lines = [(cycle * 3)[k : k + 20] for k in range(12)] * 30 + [t for t, _ in toy_rows(100, seed=5)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "bert"
    result = api.pretrain(
        [str(corpus)],
        out,
        overrides={
            "hidden_size": "32",
            "num_layers": "2",
            "num_heads": "2",
            "intermediate_size": "64",
            "vocab_size": "200",
            "max_length": "64",
            "epochs": "8",
            "batch_size": "16",
            "lr": "5e-3",
            "log_steps": "5",
            "progress": "false",
            "heldout_fraction": "0.1",
        },
    )
    losses = [loss for _, loss in result["losses"]]
    assert losses[-1] < 0.6 * losses[0]
    dev = [h["dev_loss"] for h in result["history"]]
    assert min(dev) < dev[0]
    log = json.loads((out / "pretrain_log.json").read_text())
    assert log["losses"] == result["losses"] and log["config"]["hidden_size"] == 32
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()

    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(out)).config.hidden_size == 32
    tuned = api.train(
        str(toy_data["train"]),
        tmp_path / "tuned",
        dev=str(toy_data["dev"]),
        overrides={"model": str(out), "epochs": "5", "progress": "false", "batch_size": "16", "lr": "3e-3"},
    )
    assert tuned["dev_metrics"]["dev_accuracy"] >= 0.9


def test_whole_word_masking_pretrains(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("我们在北京大学学习中文。\n今天天气很好，我们去公园散步。\n" * 30, encoding="utf-8")
    result = api.pretrain(
        [str(corpus)],
        tmp_path / "wwm",
        overrides={
            "hidden_size": "32",
            "num_layers": "2",
            "num_heads": "2",
            "intermediate_size": "64",
            "whole_word": "true",
            "max_length": "32",
            "epochs": "3",
            "batch_size": "8",
            "log_steps": "1",
            "progress": "false",
            "heldout_fraction": "0",
        },
    )
    assert result["losses"] and (tmp_path / "wwm" / "model.safetensors").is_file()


def test_continued_pretraining_starts_from_the_checkpoint(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    corpus = tmp_path / "c.txt"
    corpus.write_text("子丑寅卯辰巳午未申酉戌亥\n" * 40, encoding="utf-8")
    out = tmp_path / "continued"
    api.pretrain(
        [str(corpus)],
        out,
        overrides={
            "init": str(tiny_model_dir),
            "epochs": "1",
            "max_steps": "2",
            "batch_size": "8",
            "lr": "1e-3",
            "progress": "false",
            "heldout_fraction": "0",
            "log_steps": "1",
        },
    )
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    key = "bert.embeddings.word_embeddings.weight"
    assert after[key].shape == before[key].shape  # same vocabulary: the checkpoint's tokenizer was kept
    assert (out / "tokenizer.json").read_text() == (tiny_model_dir / "tokenizer.json").read_text()
    delta = (after[key] - before[key]).abs().max().item()
    assert 0 < delta < 0.1  # trained a little from the checkpoint, not re-initialised


def test_linear_schedule_gives_every_step_a_rate():
    import torch

    from plmkit.config import LoopConfig
    from plmkit.train.optim import build_schedule

    for total in (1, 2, 10):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = build_schedule(opt, LoopConfig(warmup_ratio=0.1), total)
        rates = []
        for _ in range(total):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert all(r > 0 for r in rates), rates
        if total == 10:
            assert rates.index(max(rates)) == 1 and rates[-1] < rates[1]  # up over the warmup, then down


_TRAIN_IN_A_FRESH_PROCESS = """
import json, sys
from plmkit.data.builtin import CORPORA
from plmkit.pretrain.tokenizer import train_byte_bpe, train_wordpiece
lines = CORPORA["reviews"]()[:1500] + ["the tokenizer trains on words like these %d times" % k for k in range(60)]
wp, bpe = train_wordpiece(lines, vocab_size=5000), train_byte_bpe(lines, vocab_size=600)
print(json.dumps([wp.backend_tokenizer.to_str(), bpe.backend_tokenizer.to_str()]))
"""


@pytest.mark.slow
def test_trained_vocabularies_are_the_same_in_every_process():
    """The tokenizers trainer numbers WordPiece's ## pieces in hash-map order, which each process
    seeds anew (huggingface/tokenizers#1794): plmkit renumbers them by a fixed rule."""
    import subprocess
    import sys

    runs = [
        subprocess.run(
            [sys.executable, "-c", _TRAIN_IN_A_FRESH_PROCESS], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(3)
    ]
    assert runs[0] == runs[1] == runs[2]
    vocab = json.loads(json.loads(runs[0])[0])["model"]["vocab"]
    assert any(t.startswith("##") and len(t) > 3 for t in vocab)  # merged continuation pieces: a real test


def test_the_fixed_continuation_pieces_stay_ordinary_pieces():
    from plmkit.data.builtin import CORPORA
    from plmkit.pretrain.tokenizer import SPECIAL_TOKENS, train_wordpiece

    lines = CORPORA["reviews"]()[:1500] + ["the tokenizer trains on words like these"] * 30
    tok = train_wordpiece(lines, vocab_size=5000)
    assert sorted(tok.all_special_tokens) == sorted(SPECIAL_TOKENS)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    pieces = tok.tokenize("tokenizers 好评")
    assert "##s" in pieces and pieces[-2:] == ["好", "评"]
    assert tok.decode(tok("tokenizers 好评")["input_ids"], skip_special_tokens=True) == "tokenizers 好 评"
    assert tok.tokenize("##好") == ["#", "#", "好"]  # the text "##好" is not a token: the pieces are not added tokens
