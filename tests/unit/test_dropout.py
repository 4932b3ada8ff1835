"""plmkit.models.dropout: masks with the rate asked for, independent and seeded; attention with them whose
gradient is the formula's; a model switched to them predicts exactly as before and trains."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from plmkit.models.dropout import (
    NAME,
    FastDropout,
    _Attention,
    fast_dropout,
    keep_mask,
    restore_attention,
    use_fast_dropout,
)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_keep_mask_drops_the_share_asked_for(p):
    torch.manual_seed(0)
    keep = keep_mask((400, 1000), p)
    assert keep.shape == (400, 1000) and keep.dtype == torch.bool
    dropped = 1 - keep.float().mean().item()
    assert abs(dropped - p) < 0.003  # 400k draws: the standard error is below 0.001
    # every position of a 64-bit draw (its four 16-bit quarters, the top one with its sign bit) is fair
    for quarter in range(4):
        assert abs(1 - keep.view(-1)[quarter::4].float().mean().item() - p) < 0.006


def test_keep_masks_are_seeded_and_independent():
    torch.manual_seed(3)
    a, b = keep_mask((50_001,), 0.5), keep_mask((50_001,), 0.5)
    torch.manual_seed(3)
    assert torch.equal(keep_mask((50_001,), 0.5), a)  # the same generator state: the same mask
    both = (a & b).float().mean().item()  # independent: P(kept in both) = 0.25
    assert abs(both - 0.25) < 0.01 and not torch.equal(a, b)
    neighbours = (a[1:] & a[:-1]).float().mean().item()  # and within one mask, neighbours too
    assert abs(neighbours - 0.25) < 0.01


def test_fast_dropout_zeroes_or_scales_each_element_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.rand(200, 500) + 1.0
    y = fast_dropout(x, 0.2)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.8)
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01
    assert fast_dropout(x, 0.2, training=False) is x and fast_dropout(x, 0.0) is x
    x.requires_grad_(True)
    (fast_dropout(x, 0.2) * 3).sum().backward()  # the gradient flows through the kept elements only
    assert set(x.grad.unique().tolist()) == {0.0, 3 / 0.8}


def test_attention_gradients_are_the_formulas():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.zeros(2, 1, 1, 5, dtype=torch.float64)
    bias[1, ..., 3:] = torch.finfo(torch.float64).min  # the second text has two padding tokens
    keep = keep_mask((2, 3, 5, 5), 0.3)

    def formula(q, k, v):
        probs = torch.softmax(q @ k.transpose(2, 3) * 0.5 + bias, dim=-1)
        return torch.where(keep, probs, 0.0) / 0.7 @ v

    out = _Attention.apply(q, k, v, bias, keep, 0.5, 1 / 0.7)
    assert torch.allclose(out, formula(q, k, v))
    grad = torch.randn_like(out)
    ours = torch.autograd.grad(out, (q, k, v), grad)
    theirs = torch.autograd.grad(formula(q, k, v), (q, k, v), grad)
    assert all(torch.allclose(a, b) for a, b in zip(ours, theirs))
    assert torch.autograd.gradcheck(lambda q, k, v: _Attention.apply(q, k, v, bias, keep, 0.5, 1 / 0.7), (q, k, v))


def tiny_classifier() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        attention_probs_dropout_prob=0.3, hidden_dropout_prob=0.3, num_labels=2, attn_implementation="sdpa",
    )  # fmt: skip
    return BertForSequenceClassification(config)


def test_a_switched_model_predicts_as_before_and_trains():
    model = tiny_classifier()
    ids = torch.randint(1, 50, (4, 9))
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[2, 6:] = 0  # padding: the attention mask reaches plmkit's attention function
    model.eval()
    before = model(input_ids=ids, attention_mask=mask).logits
    use_fast_dropout(model)
    assert model.config._attn_implementation == NAME
    assert sum(isinstance(m, FastDropout) for m in model.modules()) == sum(
        isinstance(m, torch.nn.Dropout) for m in model.modules()
    )
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, before)  # eval: sdpa itself, no dropout
    model.train()
    torch.manual_seed(1)
    one = model(input_ids=ids, attention_mask=mask).logits
    torch.manual_seed(1)
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, one)  # seeded
    assert not torch.allclose(one, before)  # and dropped something
    labels = torch.tensor([0, 1, 0, 1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    restore_attention(model)
    assert model.config._attn_implementation == "sdpa"
