"""Masking: choosing positions (token / whole word / span), the 80/10/10 rule, reproducible dynamic masks."""

from __future__ import annotations

import pytest
import torch

from plmkit.pretrain.masking import (
    IGNORE_INDEX,
    choose_spans,
    choose_tokens,
    choose_whole_words,
    corrupt,
    example_generator,
    span_length_probs,
)

N_SEQ, LENGTH, VOCAB, MASK_ID = 2000, 100, 1000, 4
FIRST_REAL_ID = 5  # ids 0-4 are specials, as in a BERT vocabulary


def _ids(gen: torch.Generator) -> torch.Tensor:
    return torch.randint(FIRST_REAL_ID, VOCAB, (LENGTH,), generator=gen)


def _candidates() -> torch.Tensor:
    cand = torch.ones(LENGTH, dtype=torch.bool)
    cand[0] = cand[-1] = False  # [CLS] ... [SEP]
    cand[60:] = False  # padding
    return cand


@pytest.fixture(scope="module")
def draws():
    """2000 sequences: ids, candidates, chosen, corrupted, labels."""
    cand = _candidates()
    out = []
    for i in range(N_SEQ):
        gen = example_generator(0, 0, i)
        ids = _ids(gen)
        chosen = choose_tokens(cand, 0.15, gen)
        corrupted, labels = corrupt(ids, chosen, MASK_ID, VOCAB, gen)
        out.append((ids, chosen, corrupted, labels))
    ids, chosen, corrupted, labels = (torch.stack(t) for t in zip(*out))
    return cand, ids, chosen, corrupted, labels


def test_choose_tokens_rate(draws):
    cand, _, chosen, _, _ = draws
    n_cand = int(cand.sum())
    assert n_cand == 59
    per_seq = chosen.sum(1)
    assert (per_seq == round(0.15 * n_cand)).all()  # round(8.85) == 9, every sequence
    rate = chosen.sum().item() / (N_SEQ * n_cand)
    assert abs(rate - 0.15) < 0.01


def test_choose_tokens_never_picks_non_candidates(draws):
    cand, _, chosen, _, _ = draws
    assert not chosen[:, ~cand].any()
    # and the choice is spread over every candidate position
    per_position = chosen[:, cand].float().mean(0)
    assert (per_position > 0.08).all() and (per_position < 0.24).all()


def test_choose_tokens_full_length_rate():
    cand = torch.ones(LENGTH, dtype=torch.bool)
    total = sum(int(choose_tokens(cand, 0.15, example_generator(1, 0, i)).sum()) for i in range(N_SEQ))
    assert total / (N_SEQ * LENGTH) == pytest.approx(0.15, abs=0.01)


def test_choose_tokens_edge_cases():
    gen = torch.Generator().manual_seed(0)
    none = torch.zeros(10, dtype=torch.bool)
    assert not choose_tokens(none, 0.15, gen).any()
    one = torch.zeros(10, dtype=torch.bool)
    one[3] = True
    chosen = choose_tokens(one, 0.15, gen)  # at least one when any exist
    assert chosen.tolist() == one.tolist()
    assert choose_tokens(torch.ones(10, dtype=torch.bool), 1.0, gen).all()
    assert choose_tokens(torch.ones(10, dtype=torch.bool), 0.15, gen).dtype == torch.bool


def test_corrupt_80_10_10(draws):
    _, ids, chosen, corrupted, _ = draws
    n = chosen.sum().item()
    assert n > 15000
    masked = (corrupted == MASK_ID) & chosen
    kept = (corrupted == ids) & chosen
    replaced = (corrupted != ids) & (corrupted != MASK_ID) & chosen
    assert masked.sum() + kept.sum() + replaced.sum() == n
    assert masked.sum().item() / n == pytest.approx(0.8, abs=0.02)
    assert replaced.sum().item() / n == pytest.approx(0.1, abs=0.02)
    assert kept.sum().item() / n == pytest.approx(0.1, abs=0.02)
    # random replacements are real vocabulary ids
    assert corrupted[replaced].min() >= 0 and corrupted[replaced].max() < VOCAB


def test_corrupt_touches_only_chosen(draws):
    _, ids, chosen, corrupted, _ = draws
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    assert not (corrupted[~chosen] == MASK_ID).any()


def test_labels(draws):
    _, ids, chosen, _, labels = draws
    assert (labels[~chosen] == IGNORE_INDEX).all()
    assert torch.equal(labels[chosen], ids[chosen])
    assert ((labels != IGNORE_INDEX) == chosen).all()


def test_corrupt_custom_probabilities():
    ids = torch.arange(FIRST_REAL_ID, FIRST_REAL_ID + 50)
    chosen = torch.zeros(50, dtype=torch.bool)
    chosen[::2] = True
    out, labels = corrupt(ids, chosen, MASK_ID, VOCAB, torch.Generator().manual_seed(3), mask_prob=1.0, random_prob=0.0)
    assert (out[chosen] == MASK_ID).all() and torch.equal(out[~chosen], ids[~chosen])
    out, _ = corrupt(ids, chosen, MASK_ID, VOCAB, torch.Generator().manual_seed(3), mask_prob=0.0, random_prob=0.0)
    assert torch.equal(out, ids)
    assert out.shape == ids.shape and labels.dtype == ids.dtype


def _word_ids(gen: torch.Generator) -> torch.Tensor:
    """[CLS] w w w ... [SEP] with word lengths 1-4, -1 for the specials."""
    ids, word = [-1], 0
    while len(ids) < LENGTH - 1:
        size = min(int(torch.randint(1, 5, (1,), generator=gen)), LENGTH - 1 - len(ids))
        ids += [word] * size
        word += 1
    return torch.tensor(ids + [-1])


def test_whole_words_only_and_rate():
    total_chosen = total_candidates = 0
    for i in range(N_SEQ):
        gen = example_generator(5, 0, i)
        word_ids = _word_ids(gen)
        chosen = choose_whole_words(word_ids, 0.15, gen)
        assert not chosen[word_ids < 0].any()
        for w in word_ids[word_ids >= 0].unique():
            in_word = chosen[word_ids == w]
            assert in_word.all() or not in_word.any()
        total_chosen += int(chosen.sum())
        total_candidates += int((word_ids >= 0).sum())
    assert total_chosen / total_candidates == pytest.approx(0.15, abs=0.01)


def test_whole_words_picks_varied_words():
    word_ids = torch.tensor([-1] + [w for w in range(20) for _ in range(5)] + [-1])
    first_words = set()
    for i in range(200):
        chosen = choose_whole_words(word_ids, 0.15, example_generator(0, 0, i))
        assert int(chosen.sum()) == 15  # three five-token words
        first_words.add(int(word_ids[chosen.nonzero()[0]]))
    assert len(first_words) > 10


def test_whole_words_edge_cases():
    gen = torch.Generator().manual_seed(0)
    assert not choose_whole_words(torch.full((6,), -1), 0.15, gen).any()
    one_long_word = torch.tensor([-1, 0, 0, 0, 0, 0, 0, -1])
    assert choose_whole_words(one_long_word, 0.15, gen).tolist() == [False] + [True] * 6 + [False]


def _mask(seed: int, epoch: int, index: int):
    gen = example_generator(seed, epoch, index)
    ids = torch.arange(FIRST_REAL_ID, FIRST_REAL_ID + LENGTH)
    chosen = choose_tokens(torch.ones(LENGTH, dtype=torch.bool), 0.15, gen)
    return corrupt(ids, chosen, MASK_ID, VOCAB, gen)


def test_same_seed_epoch_index_same_output():
    a_ids, a_labels = _mask(42, 3, 17)
    b_ids, b_labels = _mask(42, 3, 17)
    assert torch.equal(a_ids, b_ids) and torch.equal(a_labels, b_labels)


def test_dynamic_masking_differs_by_epoch_index_and_seed():
    base = _mask(42, 0, 17)[1]
    assert not torch.equal(base, _mask(42, 1, 17)[1])
    assert not torch.equal(base, _mask(42, 0, 18)[1])
    assert not torch.equal(base, _mask(43, 0, 17)[1])
    # over many epochs nearly every position gets its turn
    positions = torch.stack([_mask(42, e, 17)[1] != IGNORE_INDEX for e in range(50)])
    assert positions.any(0).float().mean() > 0.95
    masks = {tuple(p.nonzero().squeeze(-1).tolist()) for p in positions}
    assert len(masks) == 50


def test_example_generator_is_independent_of_global_seed():
    torch.manual_seed(0)
    a = torch.rand(5, generator=example_generator(1, 2, 3))
    torch.manual_seed(999)
    torch.rand(10)
    b = torch.rand(5, generator=example_generator(1, 2, 3))
    assert torch.equal(a, b)


def _runs(chosen: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of chosen positions as (start, end), end inclusive."""
    edges = torch.nn.functional.pad(chosen.long(), (1, 1)).diff()
    starts = (edges == 1).nonzero().squeeze(-1).tolist()
    ends = ((edges == -1).nonzero().squeeze(-1) - 1).tolist()
    return list(zip(starts, ends))


def test_span_length_probs():
    probs = span_length_probs(0.2, 10)
    assert probs.shape == (10,) and float(probs.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(probs[0]) == pytest.approx(0.2 / (1 - 0.8**10), abs=1e-6)
    assert (probs[1:] / probs[:-1]).allclose(torch.full((9,), 0.8))  # geometric
    assert float((probs * torch.arange(1, 11)).sum()) == pytest.approx(3.8, abs=0.01)  # SpanBERT's mean
    assert span_length_probs(1.0, 5).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        span_length_probs(0.0)


def test_spans_hit_the_budget_and_stay_inside_candidates():
    for i in range(300):
        gen = example_generator(7, 0, i)
        length = int(torch.randint(3, 200, (1,), generator=gen))
        cand = torch.zeros(length + 20, dtype=torch.bool)
        cand[1 : length + 1] = True  # [CLS] ... [SEP] then padding
        if length > 40:
            cand[length // 2] = False  # a [SEP] in the middle, as in a sentence pair
        chosen = choose_spans(cand, 0.15, gen)
        assert int(chosen.sum()) == max(1, round(0.15 * int(cand.sum())))
        assert not chosen[~cand].any()
        for s, e in _runs(chosen):
            assert e - s + 1 <= 10
            assert cand[s : e + 1].all()  # contiguous candidates, never across a non-candidate


def test_spans_never_touch_each_other():
    """Spans are kept at least one position apart, so a span's boundaries are never masked."""
    cand = torch.ones(300, dtype=torch.bool)
    cand[0] = cand[-1] = False
    for i in range(200):
        chosen = choose_spans(cand, 0.3, example_generator(8, 0, i))
        assert int(chosen.sum()) == 89  # round(0.3 * 298)
        for s, e in _runs(chosen):
            assert not chosen[s - 1] and not chosen[e + 1]
            assert e - s + 1 <= 10  # so each maximal run is one span, no longer than max_len


def test_span_lengths_follow_the_clipped_geometric():
    """Long sequences at a low rate, so the budget cut and rejected overlaps barely shift the lengths."""
    cand = torch.ones(20_002, dtype=torch.bool)
    cand[0] = cand[-1] = False
    counts = torch.zeros(11)
    for i in range(30):
        for s, e in _runs(choose_spans(cand, 0.05, example_generator(9, 0, i))):
            counts[e - s + 1] += 1
    assert counts.sum() > 7000
    freq = counts[1:] / counts.sum()
    probs = span_length_probs(0.2, 10)
    assert float(freq[0]) == pytest.approx(0.2 / (1 - 0.8**10), abs=0.015)
    assert (freq - probs).abs().max() < 0.015
    assert float((freq * torch.arange(1, 11)).sum()) == pytest.approx(3.8, abs=0.1)


def test_span_length_parameters_are_used():
    cand = torch.ones(2002, dtype=torch.bool)
    cand[0] = cand[-1] = False
    singles = choose_spans(cand, 0.1, example_generator(0, 0, 0), p=1.0)
    assert all(s == e for s, e in _runs(singles))
    short = choose_spans(cand, 0.1, example_generator(0, 0, 0), p=0.05, max_len=3)
    assert max(e - s + 1 for s, e in _runs(short)) == 3


def test_spans_are_deterministic_per_seed():
    cand = torch.ones(128, dtype=torch.bool)
    cand[0] = cand[-1] = False
    a = choose_spans(cand, 0.15, torch.Generator().manual_seed(11))
    b = choose_spans(cand, 0.15, torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    others = {
        tuple(choose_spans(cand, 0.15, torch.Generator().manual_seed(s)).nonzero().squeeze(-1).tolist())
        for s in range(20)
    }
    assert len(others) == 20


def test_spans_edge_cases():
    gen = torch.Generator().manual_seed(0)
    assert not choose_spans(torch.zeros(8, dtype=torch.bool), 0.15, gen).any()
    one = torch.tensor([False, False, True, False])
    assert choose_spans(one, 0.15, gen).tolist() == one.tolist()  # at least one when any exist
    assert choose_spans(torch.ones(6, dtype=torch.bool), 0.15, gen).dtype == torch.bool
