"""The CRF layer against brute force over all tag paths, its scheme constraints, and a tiny training run."""

from __future__ import annotations

import itertools

import pytest
import torch

from plmkit.models.crf import CRF, allowed_transitions

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def random_crf(num_tags: int, seed: int, **masks) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(num_tags, **masks)
    for p in (crf.crf.start_transitions, crf.crf.end_transitions, crf.crf.transitions):
        torch.nn.init.normal_(p)
    return crf


def lengths_mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, T)


def path_score(crf: CRF, emissions: torch.Tensor, path) -> torch.Tensor:
    """start[y0] + sum emissions + sum transitions + end[y_last] for one sequence's emissions (len, K)."""
    c = crf.crf
    s = c.start_transitions[path[0]] + c.end_transitions[path[-1]]
    s = s + sum(emissions[t, y] for t, y in enumerate(path))
    return s + sum(c.transitions[a, b] for a, b in zip(path, path[1:]))


def all_paths(num_tags: int, length: int, allowed=None):
    paths = itertools.product(range(num_tags), repeat=length)
    return [p for p in paths if allowed is None or allowed(p)]


def bio_valid(labels: list[str], path) -> bool:
    """A path is valid IOB2 when every I-X follows B-X or I-X."""
    prev = "O"
    for y in path:
        tag = labels[y]
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


def test_nll_matches_brute_force():
    num_tags, steps, lengths = 3, 4, [4, 1, 3]
    crf = random_crf(num_tags, seed=0)
    emissions = torch.randn(len(lengths), steps, num_tags)  # (B, U, K)
    tags = torch.randint(num_tags, (len(lengths), steps))  # (B, T)
    mask = lengths_mask(lengths, steps)
    tags[~mask] = -100  # padding labels must be ignored
    expected = []
    with torch.no_grad():
        for b, n in enumerate(lengths):
            scores = torch.stack([path_score(crf, emissions[b], p) for p in all_paths(num_tags, n)])
            gold = path_score(crf, emissions[b], tags[b, :n].tolist())
            expected.append(torch.logsumexp(scores, 0) - gold)
        got = crf.nll(emissions, tags, mask)
    assert got.shape == ()
    assert torch.allclose(got, torch.stack(expected).mean(), atol=1e-5)


def test_decode_matches_brute_force_argmax():
    num_tags, steps, lengths = 3, 5, [5, 2, 1, 4]
    crf = random_crf(num_tags, seed=1)
    emissions = torch.randn(len(lengths), steps, num_tags)  # (B, U, K)
    got = crf.decode(emissions, lengths_mask(lengths, steps))
    assert got.dtype == torch.long and got.shape == (len(lengths), steps)
    with torch.no_grad():
        for b, n in enumerate(lengths):
            paths = all_paths(num_tags, n)
            best = max(paths, key=lambda p: path_score(crf, emissions[b], p).item())
            assert got[b, :n].tolist() == list(best)
            assert (got[b, n:] == -1).all()


def test_decode_with_bio_constraints_matches_brute_force_over_allowed_paths():
    num_tags, steps, lengths = len(BIO), 4, [4, 3, 1]
    start, trans, end = allowed_transitions(BIO, "bio")
    crf = random_crf(num_tags, seed=2, start=start, trans=trans, end=end)
    emissions = 2 * torch.randn(len(lengths), steps, num_tags)  # (B, U, K)
    got = crf.decode(emissions, lengths_mask(lengths, steps))
    with torch.no_grad():
        for b, n in enumerate(lengths):
            paths = all_paths(num_tags, n, allowed=lambda p: bio_valid(BIO, p))
            best = max(paths, key=lambda p: path_score(crf, emissions[b], p).item())
            assert got[b, :n].tolist() == list(best)
            assert (got[b, n:] == -1).all()
    # the unconstrained optimum is invalid here, the constrained decode is not
    strong = torch.zeros(1, 4, num_tags)  # (1, U, K)
    strong[0, 0, BIO.index("I-PER")] = 50.0
    strong[0, 1, BIO.index("O")] = 50.0
    strong[0, 2, BIO.index("I-PER")] = 50.0
    strong[0, 3, BIO.index("I-LOC")] = 50.0
    full = torch.ones(1, 4, dtype=torch.bool)
    free = CRF(num_tags).decode(strong, full)[0].tolist()
    assert not bio_valid(BIO, free)
    constrained = crf.decode(strong, full)[0].tolist()
    assert bio_valid(BIO, constrained)
    assert constrained[1] == BIO.index("O")


def test_allowed_transitions_bio():
    start, trans, end = allowed_transitions(BIO, "bio")
    i = BIO.index
    assert start.dtype == torch.bool and start.shape == (5,) and trans.shape == (5, 5) and end.shape == (5,)
    assert not trans[i("O"), i("I-PER")]
    assert trans[i("B-PER"), i("I-PER")] and trans[i("I-PER"), i("I-PER")]
    assert not trans[i("B-PER"), i("I-LOC")] and not trans[i("I-PER"), i("I-LOC")]
    assert trans[i("I-PER"), i("B-LOC")] and trans[i("O"), i("B-PER")] and trans[i("B-LOC"), i("O")]
    assert not start[i("I-PER")] and not start[i("I-LOC")] and start[i("O")] and start[i("B-PER")]
    assert end.all()
    assert int(trans.sum()) == 25 - 6  # O, B-Y, I-Y -> I-X for each of the two types
    with pytest.raises(ValueError, match="X-PER"):
        allowed_transitions(["O", "B-PER", "X-PER"], "bio")
    with pytest.raises(ValueError, match="S-PER"):
        allowed_transitions(["O", "S-PER"], "bio")


def test_allowed_transitions_bioes():
    labels = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "E-LOC", "S-LOC"]
    i = labels.index
    start, trans, end = allowed_transitions(labels, "bioes")
    assert trans[i("B-PER"), i("I-PER")] and trans[i("B-PER"), i("E-PER")] and trans[i("I-PER"), i("E-PER")]
    assert not trans[i("B-PER"), i("O")] and not trans[i("B-PER"), i("E-LOC")] and not trans[i("I-PER"), i("S-PER")]
    assert trans[i("E-PER"), i("B-LOC")] and trans[i("S-PER"), i("S-LOC")] and trans[i("O"), i("S-PER")]
    assert not trans[i("O"), i("E-PER")] and not trans[i("S-LOC"), i("I-PER")]
    assert start.tolist() == [lab[0] in "OBS" for lab in labels]
    assert end.tolist() == [lab[0] in "OES" for lab in labels]
    with pytest.raises(ValueError, match="M-PER"):
        allowed_transitions(["O", "M-PER"], "bioes")


def test_allowed_transitions_bmes():
    labels = ["B", "M", "E", "S"]
    i = labels.index
    start, trans, end = allowed_transitions(labels, "bmes")
    assert not trans[i("B"), i("S")] and not trans[i("B"), i("B")] and trans[i("B"), i("E")]
    assert trans[i("M"), i("M")] and trans[i("E"), i("B")] and trans[i("S"), i("S")]
    assert not trans[i("E"), i("M")] and not trans[i("S"), i("E")]
    assert start.tolist() == [True, False, False, True]
    assert end.tolist() == [False, False, True, True]
    typed = ["B-N", "M-N", "E-N", "S-N", "B-V", "E-V"]
    _, trans, end = allowed_transitions(typed, "bmes")
    assert trans[0, 2] and not trans[0, 5] and trans[2, 4] and not end[0]
    for bad in (["B", "O"], ["B", "X-N"]):
        with pytest.raises(ValueError, match=bad[1]):
            allowed_transitions(bad, "bmes")
    assert all(m.all() for m in allowed_transitions(["anything", "goes"], "none"))
    with pytest.raises(ValueError, match="iobes2"):
        allowed_transitions(labels, "iobes2")


def test_crf_learns_transitions():
    """Entity words do not tell B from I: only the transitions can (B after O or at start, I after B/I)."""
    torch.manual_seed(0)
    vocab, num_tags, steps = 4, 3, 8  # words 0, 1 are outside, 2, 3 inside an entity; tags O, B, I
    lengths = [8, 8, 7, 6, 5, 8, 3, 8, 1, 6]
    words = torch.randint(vocab, (len(lengths), steps))  # (B, T)
    mask = lengths_mask(lengths, steps)
    gold = torch.zeros_like(words)
    for b in range(len(lengths)):
        for t in range(steps):
            if words[b, t] >= 2:
                gold[b, t] = 2 if t > 0 and words[b, t - 1] >= 2 else 1
    gold[~mask] = -100
    features = torch.nn.functional.one_hot(words, vocab).float()  # (B, T, V)
    linear = torch.nn.Linear(vocab, num_tags)
    crf = CRF(num_tags)
    optim = torch.optim.Adam([*linear.parameters(), *crf.parameters()], lr=0.1)
    first = None
    for _ in range(100):
        loss = crf(linear(features), gold, mask)
        first = loss.item() if first is None else first
        optim.zero_grad()
        loss.backward()
        optim.step()
    final = crf.nll(linear(features), gold, mask).item()
    assert final < 0.1 * first
    assert torch.equal(crf.decode(linear(features), mask), gold.masked_fill(~mask, -1))


@pytest.mark.parametrize("scheme", ["none", "bio"])
def test_decode_alone_equals_decode_in_padded_batch(scheme):
    crf = random_crf(len(BIO), seed=3, **dict(zip(("start", "trans", "end"), allowed_transitions(BIO, scheme))))
    torch.manual_seed(4)
    lengths = [3, 9, 1, 6]
    emissions = torch.randn(len(lengths), 9, len(BIO))  # (B, U, K)
    emissions[lengths_mask(lengths, 9) == 0] = 100 * torch.randn(1)  # padding must not matter
    batched = crf.decode(emissions, lengths_mask(lengths, 9))
    for b, n in enumerate(lengths):
        alone = crf.decode(emissions[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
        assert batched[b, :n].tolist() == alone[0].tolist()
        assert (batched[b, n:] == -1).all()


def test_from_labels_and_buffers():
    crf = CRF.from_labels(BIO, "bio")
    assert crf.num_tags == 5 and not crf.trans_allowed[0, 2]
    assert set(crf.state_dict()) == {"crf.start_transitions", "crf.end_transitions", "crf.transitions"}
    with pytest.raises(ValueError):
        CRF(3, trans=torch.ones(2, 2, dtype=torch.bool))
