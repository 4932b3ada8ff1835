"""ELMo: causality of each direction, padding invariance, a learnable LM, save/reload through the Auto classes."""

from __future__ import annotations

import pytest
import torch

from plmkit.models.elmo import (
    ElmoConfig,
    ElmoForLanguageModeling,
    ElmoForSequenceClassification,
    ElmoModel,
    char_table,
    register_auto_classes,
)

PAD = 0
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *"我爱北京天安门好棒赞优美差坏烂糟恨丑一二三四五六七八九十",
    "hello",
    "world",
    "##ing",
    "ing",
    "##s",
    "a",
    "abcdefghijkl",
]
TOKEN_IDS = {token: i for i, token in enumerate(VOCAB)}
LSTM = 16  # lstm_size: each direction's half of hidden_size 32


def tiny_config(token_encoder: str = "embedding", **overrides) -> ElmoConfig:
    kwargs = dict(
        vocab_size=len(VOCAB),
        embedding_size=16,
        hidden_size=2 * LSTM,
        num_hidden_layers=2,
        pad_token_id=PAD,
        hidden_dropout_prob=0.0,
    )
    if token_encoder == "char_cnn":
        kwargs.update(
            token_encoder="char_cnn",
            char_vocab_size=char_table(TOKEN_IDS, 6)[1],
            char_embedding_size=8,
            char_filters=[[1, 8], [2, 8], [3, 16]],
            max_token_chars=6,
        )
    return ElmoConfig(**{**kwargs, **overrides})


def tiny(model_class=ElmoModel, token_encoder: str = "embedding", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = model_class(tiny_config(token_encoder, **overrides))
    if token_encoder == "char_cnn":
        model.set_char_table(char_table(TOKEN_IDS, 6)[0])
    return model.eval()


def test_char_table_marks_pieces_and_truncates():
    table, n_chars = char_table(TOKEN_IDS, 6)
    assert table.shape == (len(VOCAB), 6)
    ing, piece = table[TOKEN_IDS["ing"]], table[TOKEN_IDS["##ing"]]
    assert torch.equal(ing[1:], piece[1:]) and ing[0] != piece[0]  # same characters, different start marker
    assert ing.tolist()[-1] == 0 and ing.tolist()[4] != 0  # [start, i, n, g, end, pad]
    assert table[TOKEN_IDS["abcdefghijkl"]].ne(0).all()  # cut to 4 characters between the markers
    assert int(table.max()) < n_chars
    assert torch.equal(char_table(TOKEN_IDS, 6)[0], table)  # deterministic


@pytest.mark.parametrize("token_encoder", ["embedding", "char_cnn"])
def test_each_direction_sees_only_its_side(token_encoder):
    model = tiny(token_encoder=token_encoder)
    ids = torch.randint(5, len(VOCAB), (1, 9), generator=torch.Generator().manual_seed(1))  # (1, T)
    j = 4
    changed = ids.clone()
    changed[0, j] = 5 if ids[0, j] != 5 else 6
    with torch.no_grad():
        a = model(ids, output_hidden_states=True).hidden_states
        b = model(changed, output_hidden_states=True).hidden_states
    for k, (x, y) in enumerate(zip(a, b)):
        diff = (x - y).abs()[0]  # (T, H)
        fwd, bwd = diff[:, :LSTM].amax(-1), diff[:, LSTM:].amax(-1)  # (T,) each
        assert fwd[:j].max() == 0 and bwd[j + 1 :].max() == 0, k
        assert fwd[j] > 0 and bwd[j] > 0, k
        if k > 0:  # LSTM layers carry the change on: forward to the end, backward to the start
            assert fwd[-1] > 0 and bwd[0] > 0, k


@pytest.mark.parametrize("token_encoder", ["embedding", "char_cnn"])
def test_padding_changes_no_real_position(token_encoder):
    model = tiny(token_encoder=token_encoder)
    short = torch.tensor([[2, 7, 8, 9, 10, 3]])  # (1, 6)
    long = torch.tensor([[2, 11, 12, 13, 14, 15, 16, 17, 18, 3]])  # (1, 10)
    batch = torch.full((2, 10), PAD)
    batch[0, :6], batch[1] = short[0], long[0]
    mask = (batch != PAD).long()  # (2, 10)
    with torch.no_grad():
        alone = model(short, output_hidden_states=True).hidden_states
        padded = model(batch, attention_mask=mask, output_hidden_states=True).hidden_states
        garbage = batch.clone()
        garbage[0, 6:] = 20  # what sits under the padding does not matter either
        other = model(garbage, attention_mask=mask, output_hidden_states=True).hidden_states
    for x, y, z in zip(alone, padded, other):
        torch.testing.assert_close(y[0, :6], x[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(z[0, :6], x[0], atol=1e-5, rtol=0)
        assert y[0, 6:].abs().max() == 0  # padded positions are zeroed


def test_left_padding_is_refused():
    model = tiny()
    with pytest.raises(ValueError, match="right-padded"):
        model(torch.tensor([[0, 0, 7, 8]]), attention_mask=torch.tensor([[0, 0, 1, 1]]))


def test_hidden_states_are_every_layer():
    model = tiny(num_hidden_layers=3)
    ids = torch.randint(5, len(VOCAB), (2, 7))
    out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 4
    assert all(h.shape == (2, 7, 2 * LSTM) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    layer0 = out.hidden_states[0]
    assert torch.equal(layer0[..., :LSTM], layer0[..., LSTM:])  # [x; x]
    assert model(ids).hidden_states is None
    assert model(ids, return_dict=False)[0].shape == (2, 7, 2 * LSTM)


def test_language_model_learns_a_cycle():
    model = tiny(ElmoForLanguageModeling).train()
    cycle = torch.arange(5, 17)  # 12 tokens, repeated
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        starts = torch.randint(0, 12, (8, 1), generator=gen)  # (B, 1)
        ids = cycle[(starts + torch.arange(16)) % 12]  # (B, T)
        lengths = torch.randint(8, 17, (8, 1), generator=gen)  # (B, 1)
        mask = (torch.arange(16) < lengths).long()  # (B, T)
        loss = model(ids.masked_fill(mask == 0, PAD), attention_mask=mask).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], (losses[0], losses[-5:])


def test_lm_loss_counts_real_positions_only():
    model = tiny(ElmoForLanguageModeling)
    ids = torch.tensor([[2, 7, 8, 9, 3, PAD, PAD]])
    mask = (ids != PAD).long()
    with torch.no_grad():
        alone = model(ids[:, :5]).loss
        padded = model(ids, attention_mask=mask)
    torch.testing.assert_close(padded.loss, alone)
    assert padded.logits.shape == padded.backward_logits.shape == (1, 7, len(VOCAB))


def test_save_and_reload_through_auto_classes(tmp_path):
    from transformers import AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

    ids = torch.randint(5, len(VOCAB), (2, 6))
    model = tiny()
    model.save_pretrained(tmp_path / "base")
    again = AutoModel.from_pretrained(tmp_path / "base", use_safetensors=True).eval()
    assert type(again) is ElmoModel
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(again(ids).last_hidden_state, model(ids).last_hidden_state, atol=0, rtol=0)

    lm = tiny(ElmoForLanguageModeling, seed=1)
    lm.save_pretrained(tmp_path / "lm")
    assert (
        type(AutoModelForPreTraining.from_pretrained(tmp_path / "lm", use_safetensors=True)) is ElmoForLanguageModeling
    )
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "lm", use_safetensors=True, num_labels=3)
    assert type(classifier) is ElmoForSequenceClassification
    lm_state = lm.elmo.state_dict()
    assert all(torch.equal(v, lm_state[k]) for k, v in classifier.elmo.state_dict().items())
    assert classifier.eval()(ids, attention_mask=torch.ones_like(ids)).logits.shape == (2, 3)
    assert classifier(ids).loss is None
    assert classifier(ids, labels=torch.tensor([0, 2])).loss.ndim == 0


def test_char_cnn_round_trip_keeps_the_table(tmp_path):
    from transformers import AutoModel

    model = tiny(token_encoder="char_cnn")
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path, use_safetensors=True).eval()
    table = again.embeddings.char_cnn.token_chars
    assert torch.equal(table, char_table(TOKEN_IDS, 6)[0])
    ids = torch.randint(5, len(VOCAB), (2, 6))
    with torch.no_grad():
        torch.testing.assert_close(again(ids).last_hidden_state, model(ids).last_hidden_state, atol=0, rtol=0)


def test_char_cnn_without_a_table_says_so():
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="set_char_table"):
        ElmoModel(tiny_config("char_cnn"))(torch.tensor([[5, 6]]))


def test_layer_groups_and_registration():
    from plmkit.train.optim import named_layer_groups

    register_auto_classes()  # importing registered them already; again is harmless
    groups = dict(named_layer_groups(tiny(ElmoForSequenceClassification)))
    assert list(groups) == ["embeddings", "layer.0", "layer.1", "head"]
    assert all(".layers.1." in name for name in groups["layer.1"])
    assert {name.split(".")[0] for name in groups["head"]} == {"scalar_mix", "classifier"}
    config = tiny_config()
    assert (config.hidden_size, config.num_hidden_layers, config.hidden_dropout_prob, config.pad_token_id) == (
        32,
        2,
        0.0,
        0,
    )
    assert getattr(config, "type_vocab_size", 0) == 0
    with pytest.raises(ValueError, match="odd"):
        ElmoConfig(hidden_size=33)
