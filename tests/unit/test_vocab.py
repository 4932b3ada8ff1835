"""Vocabulary pruning on a tiny WordPiece BERT (hidden 32, 2 layers): ids remapped, outputs kept."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.models.vocab import in_scripts, parse_scripts, prune_vocab


def test_wordpiece_pruning_keeps_the_outputs_on_its_corpus(tiny_model_dir, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    corpus = ["好棒赞的东西", "差坏烂的东西"]
    report = prune_vocab(str(tiny_model_dir), tmp_path / "pruned", corpus=corpus)
    before = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    assert report.kept < before and report.unknown_tokens == 0 and report.changed_texts == 0
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())
    assert config["vocab_size"] == report.kept and config["plmkit_pruned_from"]["vocab_size"] == before
    outputs = []
    for path in (tiny_model_dir, tmp_path / "pruned"):
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForMaskedLM.from_pretrained(path, use_safetensors=True).eval()
        enc = tok(corpus, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(**enc, output_hidden_states=True)
        kept_ids = [tok.convert_ids_to_tokens(i) for i in enc["input_ids"][0].tolist()]
        outputs.append((out.hidden_states[-1], kept_ids, out.logits.argmax(-1)))
        assert tok.pad_token_id == model.config.pad_token_id  # the padding id was remapped with the rest
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=1e-6)
    assert outputs[0][1] == outputs[1][1]  # the same pieces, under new ids


def test_script_sets_are_named():
    assert parse_scripts("cjk, ascii") == ["cjk", "ascii"]
    assert in_scripts("##东", ["cjk"]) and not in_scripts("##é", ["ascii"])
    from plmkit.errors import ConfigError

    with pytest.raises(ConfigError, match="known: cjk, ascii, punct"):
        parse_scripts("cyrillic")
