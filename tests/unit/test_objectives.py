"""Pretraining objectives: sentence pairs (NSP, SOP), span masking with SBO, replaced token detection."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from plmkit.data.truncation import layout
from plmkit.errors import ConfigError
from plmkit.pretrain.masking import IGNORE_INDEX
from plmkit.pretrain.objectives import (
    SpanBoundaryHead,
    mlm_collate,
    pack_corpus,
    pair_collate,
    rtd_labels,
    rtd_loss,
    sample_replacements,
    sbo_loss,
    span_collate,
)
from plmkit.pretrain.pairs import nsp_pair, sop_pair, split_pair

PAD, CLS, SEP, MASK = 0, 2, 3, 4


def _bert_backend():
    """A backend whose post-processor frames [CLS] A [SEP] and [CLS] A [SEP] B [SEP] with the ids above."""
    from tokenizers import Tokenizer, models, processors

    vocab = {"[PAD]": PAD, "[UNK]": 1, "[CLS]": CLS, "[SEP]": SEP, "[MASK]": MASK, "a": 5, "b": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
    )
    return backend


class StubTokenizer:
    """What the collate functions read from a tokenizer: the special ids, the vocabulary size, and the
    special-token layout (from its backend's post-processor, as with a real tokenizer)."""

    pad_token_id, cls_token_id, sep_token_id, mask_token_id = PAD, CLS, SEP, MASK

    def __init__(self, vocab_size: int = 100_000):
        self.vocab_size = vocab_size
        self.backend_tokenizer = _bert_backend()

    def __len__(self) -> int:
        return self.vocab_size


def _segments(n: int, word_size: int = 1, longest: int = 40) -> list[dict]:
    """Segment k holds ids 1000 * (k + 1) + j, so every token says where it came from; words of word_size
    tokens, numbered across the corpus as pack_corpus numbers them."""
    gen = torch.Generator().manual_seed(0)
    segments, next_word = [], 0
    for k in range(n):
        length = int(torch.randint(3, longest, (1,), generator=gen))
        words = [next_word + j // word_size for j in range(length)]
        segments.append({"ids": [1000 * (k + 1) + j for j in range(length)], "words": words})
        next_word = words[-1] + 1
    return segments


def _items(segments: list[dict], epoch: int = 0) -> list[tuple[int, int, dict]]:
    return [(epoch, i, s) for i, s in enumerate(segments)]


def _originals(batch: dict) -> torch.Tensor:
    """The ids before corruption: the labels where a position was chosen."""
    return torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])  # (B, T)


def _halves(batch: dict, row: int) -> tuple[list[int], list[int]]:
    """Check the [CLS] A [SEP] B [SEP] layout and its token types; return the original A and B."""
    n = int(batch["attention_mask"][row].sum())
    ids = _originals(batch)[row, :n].tolist()
    types = batch["token_type_ids"][row, :n].tolist()
    n_a = types.index(1) - 2 if 1 in types else n - 3
    assert types == [0] * (n_a + 2) + [1] * (n - n_a - 2)
    assert ids[0] == CLS and ids[n_a + 1] == SEP and ids[-1] == SEP
    assert (batch["token_type_ids"][row, n:] == 0).all() and (batch["input_ids"][row, n:] == PAD).all()
    return ids[1 : n_a + 1], ids[n_a + 2 : -1]


# ---- pairs ----


def test_split_pair_cuts_uniformly_into_two_non_empty_halves():
    ids = list(range(10, 20))
    cuts = Counter()
    for i in range(1800):
        a, b = split_pair(ids, torch.Generator().manual_seed(i))
        assert a and b and a + b == ids
        cuts[len(a)] += 1
    assert sorted(cuts) == list(range(1, 10))
    assert all(abs(c / 1800 - 1 / 9) < 0.03 for c in cuts.values())
    assert split_pair([7, 8], torch.Generator()) == ([7], [8])
    with pytest.raises(ValueError):
        split_pair([7], torch.Generator())


def test_sop_pair_swaps_half_the_time_and_says_so():
    a, b = [1, 2, 3], [4, 5]
    labels = []
    for i in range(4000):
        first, second, label = sop_pair(a, b, torch.Generator().manual_seed(i))
        assert (first, second) == ((b, a) if label == 1 else (a, b))
        labels.append(label)
    assert set(labels) == {0, 1}
    assert sum(labels) / len(labels) == pytest.approx(0.5, abs=0.03)


def test_nsp_pair_replaces_b_half_the_time_and_says_so():
    a, b, random_b = [1, 2, 3], [4, 5], [8, 9]
    labels = []
    for i in range(4000):
        first, second, label = nsp_pair(a, b, random_b, torch.Generator().manual_seed(i))
        assert first == a and second == (random_b if label == 1 else b)
        labels.append(label)
    assert sum(labels) / len(labels) == pytest.approx(0.5, abs=0.03)


def _pair_batch(kind: str, segments: list[dict], epoch: int = 0, **kw) -> dict:
    args = dict(tokenizer=StubTokenizer(), seed=1, rate=0.15, whole_word=False, dynamic=True, kind=kind, pool=segments)
    return pair_collate(_items(segments, epoch), **(args | kw))


def test_sop_batches():
    segments = _segments(400)
    batch = _pair_batch("sop", segments)
    assert batch["pair_labels"].shape == (400,)
    for row, seg in enumerate(segments):
        first, second = _halves(batch, row)
        assert first and second
        swapped = int(batch["pair_labels"][row]) == 1
        assert (second + first if swapped else first + second) == seg["ids"][
            :-1
        ]  # the end of B cut for the 3rd special
        assert (
            int(batch["attention_mask"][row].sum()) == len(seg["ids"]) + 2
        )  # fits wherever MLM's [CLS] seg [SEP] fits
    assert batch["pair_labels"].float().mean().item() == pytest.approx(0.5, abs=0.08)


def test_nsp_batches():
    segments = _segments(400)
    batch = _pair_batch("nsp", segments)
    assert set(batch["pair_labels"].tolist()) == {0, 1}
    for row, seg in enumerate(segments):
        a, b = _halves(batch, row)
        assert a and b and a == seg["ids"][: len(a)]
        if int(batch["pair_labels"][row]) == 0:
            assert a + b == seg["ids"][:-1]  # the real continuation
        else:
            source = b[0] // 1000 - 1
            assert source != row  # another segment
            other = segments[source]["ids"]
            start = other.index(b[0])
            assert b == other[start : start + len(b)]  # a slice of it, as long as the B it replaces
            assert len(b) == min(len(seg["ids"]) - 1 - len(a), len(other))
        assert int(batch["attention_mask"][row].sum()) <= len(seg["ids"]) + 2
    assert batch["pair_labels"].float().mean().item() == pytest.approx(0.5, abs=0.08)


@pytest.mark.parametrize("kind", ["nsp", "sop"])
def test_pair_batches_mask_only_tokens_at_the_rate(kind):
    segments = _segments(300)
    batch = _pair_batch(kind, segments)
    chosen = batch["labels"] != IGNORE_INDEX  # (B, T)
    originals = _originals(batch)
    assert not chosen[(originals == CLS) | (originals == SEP) | (batch["attention_mask"] == 0)].any()
    n_tokens = batch["attention_mask"].sum(1) - 3  # (B,)
    expected = torch.clamp((0.15 * n_tokens.double()).round().long(), min=1)
    assert torch.equal(chosen.sum(1), expected)
    masked = (batch["input_ids"] == MASK) & chosen
    assert masked.sum().item() / chosen.sum().item() == pytest.approx(0.8, abs=0.06)


def test_pair_batches_mask_whole_words_within_a_half():
    segments = _segments(200, word_size=3)
    batch = _pair_batch("sop", segments, whole_word=True)
    word_of = {i: w for s in segments for i, w in zip(s["ids"], s["words"])}
    chosen = batch["labels"] != IGNORE_INDEX
    for row in range(len(segments)):
        n_a = len(_halves(batch, row)[0])
        originals = _originals(batch)[row].tolist()
        groups: dict[tuple[int, int], set[bool]] = {}
        for t in range(int(batch["attention_mask"][row].sum())):
            if originals[t] in word_of:
                half = 0 if t <= n_a else 1
                groups.setdefault((half, word_of[originals[t]]), set()).add(bool(chosen[row, t]))
        assert all(len(v) == 1 for v in groups.values())  # a word (or its part in one half) is all in or all out


def test_pair_batches_are_reproducible_and_dynamic_masking_changes_them():
    segments = _segments(20)
    same = _pair_batch("nsp", segments, epoch=3)
    assert all(torch.equal(v, _pair_batch("nsp", segments, epoch=3)[k]) for k, v in same.items())
    assert not torch.equal(same["input_ids"], _pair_batch("nsp", segments, epoch=4)["input_ids"])
    static = _pair_batch("nsp", segments, epoch=3, dynamic=False)
    assert all(torch.equal(v, _pair_batch("nsp", segments, epoch=4, dynamic=False)[k]) for k, v in static.items())


def test_pair_batch_edge_cases():
    one_token = [{"ids": [1001], "words": [0]}, {"ids": [2001, 2002, 2003], "words": [1, 2, 3]}]
    batch = _pair_batch("nsp", one_token)
    assert batch["pair_labels"][0] == IGNORE_INDEX  # nothing to cut: no pair label
    assert _originals(batch)[0, :4].tolist() == [CLS, 1001, SEP, SEP]
    assert batch["pair_labels"][1] in (0, 1)
    with pytest.raises(ValueError, match="nsp, sop"):
        _pair_batch("mlm", one_token)


def test_pair_batches_fit_max_length_with_a_real_tokenizer():
    from plmkit.pretrain.tokenizer import train_wordpiece

    lines = ["子丑寅卯辰巳午未申酉戌亥", "甲乙丙丁戊己庚辛壬癸", "一二三四五六七八九十", "我爱北京天安门"] * 5
    tokenizer = train_wordpiece(lines, vocab_size=100)
    segments = pack_corpus(lines, tokenizer, max_length=14)
    assert max(len(s["ids"]) for s in segments) == 12  # full: [CLS] seg [SEP] is 14 long
    for kind in ("nsp", "sop"):
        batch = pair_collate(
            _items(segments),
            tokenizer=tokenizer,
            seed=0,
            rate=0.15,
            whole_word=False,
            dynamic=False,
            kind=kind,
            pool=segments,
        )
        assert batch["input_ids"].shape[1] == 14
        originals = _originals(batch)
        assert (originals[:, 0] == tokenizer.cls_token_id).all()
        assert ((originals == tokenizer.sep_token_id).sum(1) == 2).all()
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "pair_labels"}


def test_mlm_attention_mask_counts_a_replacement_equal_to_the_pad_id():
    """With a one-token vocabulary every random replacement is id 0, the pad id: still a real token."""
    segments = _segments(10)
    batch = mlm_collate(
        _items(segments), tokenizer=StubTokenizer(vocab_size=1), seed=0, rate=1.0, whole_word=False, dynamic=False
    )
    lengths = torch.tensor([len(s["ids"]) + 2 for s in segments])
    assert ((batch["input_ids"] == PAD) & (batch["labels"] != IGNORE_INDEX)).any()
    assert torch.equal(batch["attention_mask"].sum(1), lengths)


# ---- SpanBERT ----


def _span_batch(n: int = 200, max_len: int = 10, vocab_size: int = 100_000) -> dict:
    segments = _segments(n, longest=120)
    if vocab_size < 1000:
        segments = [{"ids": [5 + (i % (vocab_size - 5)) for i in s["ids"]], "words": s["words"]} for s in segments]
    return span_collate(
        _items(segments), tokenizer=StubTokenizer(vocab_size), seed=2, rate=0.15, dynamic=True, max_len=max_len
    )


@pytest.mark.parametrize("max_len", [10, 3])
def test_span_batches_have_unmasked_boundaries_and_offsets_in_range(max_len):
    batch = _span_batch(max_len=max_len)
    chosen = batch["labels"] != IGNORE_INDEX  # (B, T)
    lengths = batch["attention_mask"].sum(1)  # (B,)
    assert torch.equal(chosen.sum(1), torch.clamp((0.15 * (lengths - 2).double()).round().long(), min=1))
    for name in ("span_left", "span_right", "span_offset"):
        assert (batch[name][~chosen] == 0).all()
    for row, t in chosen.nonzero().tolist():
        left, right = int(batch["span_left"][row, t]), int(batch["span_right"][row, t])
        offset = int(batch["span_offset"][row, t])
        assert 0 <= left < t < right < int(lengths[row])
        assert not chosen[row, left] and not chosen[row, right]
        assert chosen[row, left + 1 : right].all()  # the whole span is masked
        assert right - left - 1 <= max_len and offset == t - left - 1 and 0 <= offset < max_len
    assert batch["span_offset"].max() == max_len - 1  # long spans do occur


def test_span_boundary_head_shapes():
    head = SpanBoundaryHead(16, max_span_len=10)
    left, right = torch.randn(7, 16), torch.randn(7, 16)
    out = head(left, right, torch.arange(7))
    assert out.shape == (7, 16)
    small = SpanBoundaryHead(16, max_span_len=4, position_size=8)
    assert small.position.weight.shape == (4, 8)
    assert small(left, right, torch.tensor([0, 1, 2, 3, 0, 1, 2])).shape == (7, 16)


def test_sbo_uses_only_the_boundary_states():
    torch.manual_seed(0)
    vocab = 64
    batch = _span_batch(n=6, vocab_size=vocab)
    hidden = torch.randn(*batch["input_ids"].shape, 8, requires_grad=True)  # (B, T, H)
    head, decoder = SpanBoundaryHead(8), torch.nn.Linear(8, vocab)
    loss = sbo_loss(hidden, batch, head, decoder)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    chosen = batch["labels"] != IGNORE_INDEX  # (B, T)
    rows = chosen.nonzero()[:, 0]
    boundary = torch.zeros_like(chosen)
    boundary[rows, batch["span_left"][chosen]] = True
    boundary[rows, batch["span_right"][chosen]] = True
    touched = hidden.grad.abs().sum(-1) > 0  # (B, T)
    assert torch.equal(touched, boundary)
    assert not (touched & chosen).any()  # the masked positions' own states are never read


# ---- ELECTRA ----


def test_rtd_labels_mark_exactly_the_changed_tokens():
    original = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    replaced = torch.tensor([[5, 16, 7, 18], [9, 10, 12, 0]])
    labels = rtd_labels(original, replaced)
    assert labels.dtype == torch.float32
    assert labels.tolist() == [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]


def test_a_sample_equal_to_the_original_counts_as_original():
    original = torch.tensor([[2, 11, 12, 13, 3]])  # (B, T)
    masked = torch.tensor([[False, True, True, True, False]])
    logits = torch.full((3, 20), -30.0)  # (M, V): the generator is sure of the right tokens ...
    logits[0, 11] = logits[1, 12] = 30.0
    logits[2, 19] = 30.0  # ... except the last
    replaced = original.clone()
    replaced[masked] = sample_replacements(logits, torch.Generator().manual_seed(0))
    assert rtd_labels(original, replaced).tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]


def test_sample_replacements_follow_the_softmax():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = probs.log().repeat(20_000, 1).bfloat16().requires_grad_()  # (M, V)
    samples = sample_replacements(logits, torch.Generator().manual_seed(0))
    assert samples.shape == (20_000,) and samples.dtype == torch.long and not samples.requires_grad
    freq = torch.bincount(samples, minlength=3).float() / 20_000
    assert (freq - probs).abs().max() < 0.015
    again = sample_replacements(logits, torch.Generator().manual_seed(0))
    assert torch.equal(samples, again)


def test_rtd_loss_averages_over_real_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, requires_grad=True)  # (B, T)
    labels = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss = rtd_loss(logits, labels, mask)
    real = mask.bool()
    expected = F.binary_cross_entropy_with_logits(logits[real], labels[real], reduction="sum") / 8
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert (logits.grad[~real] == 0).all() and (logits.grad[real] != 0).all()


# ---- special tokens: each family's tokenizer frames the segments ----

LAYOUT_LINES = [
    "我爱北京天安门 hello world 2024年，ＡＢＣ１２３。",
    "子丑寅卯辰巳午未申酉戌亥甲乙丙丁戊己庚辛壬癸",
    "一二三四五六七八九十",
    "好棒赞优美爱的东西",
    "差坏烂糟恨丑的东西",
    "the quick brown fox jumps over the lazy dog",
] * 4 + ["天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往秋收冬藏闰余成岁律吕调阳云腾致雨露结为霜金生丽水玉出昆冈" * 2]
PAIRS = [("我爱北京天安门", "hello world 2024"), ("好", "差坏烂糟"), ("the lazy dog", "一二三")]


def _family_tokenizer(arch: str):
    from plmkit.config import PretrainConfig
    from plmkit.pretrain.archs import ARCHS

    cfg = PretrainConfig(arch=arch, vocab_size=300, max_length=40, nsp=arch == "bert")
    return ARCHS.get(arch), cfg, ARCHS.get(arch).make_tokenizer(LAYOUT_LINES, cfg)


def _no_specials_tokenizer():
    """A WordPiece tokenizer whose backend adds no special tokens at all."""
    from plmkit.pretrain.tokenizer import train_wordpiece

    tok = train_wordpiece(LAYOUT_LINES, vocab_size=300)
    tok.backend_tokenizer.post_processor = None
    return tok


def _other_tokenizer(kind: str):
    from plmkit.pretrain.tokenizer import train_byte_bpe

    if kind == "roberta":
        return train_byte_bpe(LAYOUT_LINES, vocab_size=300, family="roberta")
    return _no_specials_tokenizer()


def _check_frames_like_the_tokenizer(tok) -> None:
    """Layout.frame of the text ids (single and pair) gives what tokenizer(text, text_pair) gives."""
    specials = layout(tok)
    for text, text_pair in PAIRS:
        a, b = (tok(t, add_special_tokens=False)["input_ids"] for t in (text, text_pair))
        for pair_ids, expected in [
            (None, tok(text, return_token_type_ids=True)),
            (b, tok(text, text_pair, return_token_type_ids=True)),
        ]:
            framed = specials.frame(a, pair_ids)
            assert framed["input_ids"] == expected["input_ids"]
            assert framed["token_type_ids"] == expected["token_type_ids"]
            n_text = len(a) + len(pair_ids or [])
            assert specials.n_special(pair=pair_ids is not None) == len(expected["input_ids"]) - n_text
            assert [s > 0 for s in framed["segments"]].count(True) == n_text


def _unframe(specials, ids: list[int], types: list[int]) -> tuple[list[int], list[int]]:
    """The one (A, B) that specials.frame(A, B) turns into ids and types."""
    pre, mid, post = map(len, specials.pair)
    found = []
    for n_a in range(len(ids) - specials.n_special(pair=True) + 1):
        a, b = ids[pre : pre + n_a], ids[pre + n_a + mid : len(ids) - post]
        framed = specials.frame(a, b)
        if framed["input_ids"] == ids and framed["token_type_ids"] == types:
            found.append((a, b))
    assert len(found) == 1, found
    return found[0]


def _check_pair_rows(batch: dict, segments: list[dict], specials, kind: str) -> None:
    """Every row is A and B framed by the layout, cut from its segment less the pair's extra specials;
    no special token is ever chosen for masking."""
    extra = specials.n_special(pair=True) - specials.n_special(pair=False)
    originals, chosen = _originals(batch), batch["labels"] != IGNORE_INDEX
    for row, seg in enumerate(segments):
        n = int(batch["attention_mask"][row].sum())
        ids, types = originals[row, :n].tolist(), batch["token_type_ids"][row, :n].tolist()
        a, b = _unframe(specials, ids, types)
        kept, label = seg["ids"][: max(2, len(seg["ids"]) - extra)], int(batch["pair_labels"][row])
        if kind == "sop":
            assert (b + a if label == 1 else a + b) == kept
        else:
            assert a == kept[: len(a)] and (label == 1 or a + b == kept)
        text = torch.tensor(specials.frame(a, b)["segments"]) > 0
        assert not chosen[row, :n][~text].any()


@pytest.mark.parametrize("arch", ["albert", "bert", "electra", "elmo", "gpt", "roberta", "spanbert"])
def test_each_family_frames_segments_as_its_tokenizer_frames_text(arch):
    spec, cfg, tok = _family_tokenizer(arch)
    _check_frames_like_the_tokenizer(tok)
    specials = layout(tok)
    lines = [text for pair in PAIRS for text in pair]
    line_ids = tok(lines, add_special_tokens=False)["input_ids"]
    segments = [{"ids": ids, "words": list(range(len(ids)))} for ids in line_ids]
    batch = spec.collate(_items(segments), tok, cfg, segments)
    originals = _originals(batch) if "labels" in batch else batch["input_ids"]
    if "pair_labels" in batch:  # bert (nsp) and albert (sop)
        _check_pair_rows(batch, segments, specials, "nsp" if arch == "bert" else "sop")
    else:  # a segment that is a whole line reads exactly as the tokenizer frames the line
        for row, line in enumerate(lines):
            expected = tok(line)["input_ids"]
            assert originals[row, : len(expected)].tolist() == expected
            assert int(batch["attention_mask"][row].sum()) == len(expected)
    packed = pack_corpus(LAYOUT_LINES, tok, cfg.max_length)
    assert max(len(s["ids"]) for s in packed) == cfg.max_length - specials.n_special(pair=False)
    assert spec.collate(_items(packed), tok, cfg, packed)["input_ids"].shape[1] == cfg.max_length  # full, not over


@pytest.mark.parametrize("kind", ["roberta", "none"])
def test_another_layout_frames_every_objective_within_max_length(kind):
    """<s> A </s></s> B </s> (two specials more for a pair than <s> A </s>), or no special tokens at all."""
    tok = _other_tokenizer(kind)
    _check_frames_like_the_tokenizer(tok)
    specials = layout(tok)
    assert specials.n_special(pair=False) == (2 if kind == "roberta" else 0)
    assert specials.n_special(pair=True) == (4 if kind == "roberta" else 0)
    segments = pack_corpus(LAYOUT_LINES, tok, max_length=14)
    assert max(len(s["ids"]) for s in segments) == 14 - specials.n_special(pair=False)
    for pair_kind in ("nsp", "sop"):
        batch = pair_collate(
            _items(segments),
            tokenizer=tok,
            seed=0,
            rate=0.15,
            whole_word=False,
            dynamic=False,
            kind=pair_kind,
            pool=segments,
        )
        assert batch["input_ids"].shape[1] == 14
        _check_pair_rows(batch, segments, specials, pair_kind)
    mlm = mlm_collate(_items(segments), tokenizer=tok, seed=0, rate=0.15, whole_word=False, dynamic=False)
    span = span_collate(_items(segments), tokenizer=tok, seed=0, rate=0.15, dynamic=False)
    for batch in (mlm, span):
        assert batch["input_ids"].shape[1] == 14
        originals, chosen = _originals(batch), batch["labels"] != IGNORE_INDEX
        for row, seg in enumerate(segments):
            framed = specials.frame(seg["ids"])
            n = len(framed["input_ids"])
            assert originals[row, :n].tolist() == framed["input_ids"] and int(batch["attention_mask"][row].sum()) == n
            assert not chosen[row, :n][torch.tensor(framed["segments"]) == 0].any()
            assert chosen[row].any()
    lengths = span["attention_mask"].sum(1)  # every span has a real position on either side
    for row, t in (span["labels"] != IGNORE_INDEX).nonzero().tolist():
        assert 0 <= int(span["span_left"][row, t]) < t < int(span["span_right"][row, t]) < int(lengths[row])


def test_max_length_must_leave_room_for_text_after_the_specials():
    tok = _family_tokenizer("bert")[2]
    with pytest.raises(ConfigError, match="max_length: 2 leaves no room"):
        pack_corpus(LAYOUT_LINES, tok, max_length=2)
    assert max(len(s["ids"]) for s in pack_corpus(LAYOUT_LINES, tok, max_length=3)) == 1
    assert max(len(s["ids"]) for s in pack_corpus(LAYOUT_LINES, _no_specials_tokenizer(), max_length=1)) == 1
    stub = layout(StubTokenizer())  # the stub's post-processor frames as bert's does
    assert (stub.single, stub.pair, stub.pair_types) == (((CLS,), (SEP,)), ((CLS,), (SEP,), (SEP,)), (0, 0, 0, 1, 1))
