"""A pretraining corpus read in pieces (plmkit.pretrain.corpus): the lines streamed from the files, the
segments tokenized once into OUTPUT/.corpus and read back one at a time, with exactly the segments, the
held-out split and therefore the weights of the in-memory path it replaced; the folder reused while it
matches, never used when damaged or half written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from plmkit import api
from plmkit.errors import ConfigError, DataError
from plmkit.pretrain import corpus as corpus_module
from plmkit.pretrain import objectives
from plmkit.pretrain.corpus import CACHE, CorpusLines, Rows, tokenized_corpus
from plmkit.pretrain.masking import example_generator
from plmkit.pretrain.run import heldout, read_corpus
from plmkit.pretrain.tokenizer import train_byte_bpe, train_wordpiece


def _old_pack_corpus(lines, tokenizer, max_length: int, whole_word: bool = False) -> list[dict[str, Any]]:
    """pack_corpus as it was before the corpus was read in pieces (the whole corpus through the tokenizer
    at once, every segment a list), kept here as the reference."""
    from plmkit.data.truncation import backend_and_layout, layout

    budget = max_length - layout(tokenizer).n_special(pair=False)
    encodings = backend_and_layout(tokenizer)[0].encode_batch(list(lines), add_special_tokens=False)
    segments: list[dict[str, Any]] = []
    ids: list[int] = []
    words: list[int] = []
    next_word = 0
    for n, enc in enumerate(encodings):
        line_ids = enc.ids
        if not line_ids:
            continue
        line_words = objectives.word_ids_for(lines[n], enc.offsets) if whole_word else list(range(len(line_ids)))
        for start in range(0, len(line_ids), budget):
            piece, piece_words = line_ids[start : start + budget], line_words[start : start + budget]
            if ids and len(ids) + len(piece) > budget:
                segments.append({"ids": ids, "words": words})
                ids, words = [], []
            ids += piece
            words += [w + next_word for w in piece_words]
            next_word += (max(piece_words) + 1) if piece_words else 0
    if ids:
        segments.append({"ids": ids, "words": words})
    return segments


def _old_held(segments: int, seed: int, fraction: float) -> set[int]:
    """The held-out segments as pretrain chose them before."""
    return {i for i in range(segments) if torch.rand(1, generator=example_generator(seed, -1, i)).item() < fraction}


def _old_split(segments: list, seed: int, fraction: float) -> tuple[list, list]:
    """The training and held-out segments as pretrain chose them before."""
    held = _old_held(len(segments), seed, fraction)
    return [s for i, s in enumerate(segments) if i not in held], [s for i, s in enumerate(segments) if i in held]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[Path]:
    from plmkit.data.builtin import CORPORA

    root = tmp_path_factory.mktemp("corpus")
    cycle = "子丑寅卯辰巳午未申酉戌亥"
    a, b = root / "a.txt", root / "b.txt"
    a.write_text("\n".join([(cycle * 4)[k : k + 30] for k in range(12)] * 4) + "\n\n   \n", encoding="utf-8")
    long_line = "我们在北京大学学习中文，" * 12  # longer than a segment: cut into several
    b.write_text("\n".join(CORPORA["reviews"]()[:150] + [long_line, "words like these 12345"]) + "\n", encoding="utf-8")
    return [a, b]


@pytest.fixture(scope="module")
def tokenizer(files):
    return train_wordpiece(read_corpus([str(f) for f in files]), vocab_size=400)


@pytest.mark.parametrize("whole_word", [False, True])
def test_packing_in_batches_gives_the_segments_of_packing_all_at_once(files, tokenizer, whole_word):
    lines = read_corpus([str(f) for f in files])
    expected = _old_pack_corpus(lines, tokenizer, 40, whole_word)
    assert len(expected) > 20
    for batch in (1, 7, 10_000):
        packed = [{"ids": i, "words": w} for i, w in objectives.iter_packed(lines, tokenizer, 40, whole_word, batch)]
        assert packed == expected
    assert objectives.pack_corpus(iter(lines), tokenizer, 40, whole_word) == expected


def test_the_tokenized_corpus_reads_back_every_segment_and_split(files, tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus_module, "FLUSH_TOKENS", 100)  # written in many pieces
    specs = [str(f) for f in files]
    lines = read_corpus(specs)
    expected = _old_pack_corpus(lines, tokenizer, 40)
    packed = tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False)
    assert "tokenizing into" in capsys.readouterr().out
    assert len(packed) == len(expected) and packed.lines == len(lines)
    assert packed.tokens == sum(len(s["ids"]) for s in expected)
    assert list(packed) == expected and packed[-1] == expected[-1] and packed[3:9] == expected[3:9]
    assert packed.meta["ids"] == "uint16"
    for fraction in (0.0, 0.1, 0.5, 1.0):
        held = heldout(len(packed), 7, fraction)
        train, dev = Rows(packed, held, rest=True), Rows(packed, held)
        old_train, old_dev = _old_split(expected, 7, fraction)
        assert list(train) == old_train and list(dev) == old_dev
        assert train.lengths().tolist() == [len(s["ids"]) for s in old_train]
        assert dev.lengths().tolist() == [len(s["ids"]) for s in old_dev]
        if old_train:
            assert train[-1] == old_train[-1] and train[2:5] == old_train[2:5]
    with pytest.raises(IndexError):
        packed[len(packed)]
    packed.close()


def test_the_loop_digests_the_segments_as_before_without_reading_them(files, tokenizer, tmp_path, monkeypatch):
    from plmkit.config import LoopConfig
    from plmkit.train.loop import made_from

    specs = [str(f) for f in files]
    expected = _old_pack_corpus(read_corpus(specs), tokenizer, 40)
    packed = tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False)
    train = Rows(packed, heldout(len(packed), 3, 0.2), rest=True)
    old_train, _ = _old_split(expected, 3, 0.2)
    monkeypatch.setattr(type(packed), "__getitem__", lambda self, i: pytest.fail("a segment was read"))
    cfg = LoopConfig()
    assert made_from(train, train.lengths(), cfg) == made_from(old_train, [len(s["ids"]) for s in old_train], cfg)


def _old_batches(lengths: list[int], size: int, seed: int, epoch: int, bucket_size: int, shuffle: bool) -> list:
    """BucketBatchSampler.batches as it was, over Python lists."""
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: lengths[i])
        return [order[i : i + size] for i in range(0, n, size)]
    gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
    order = torch.randperm(n, generator=gen).tolist()
    window = size * max(1, bucket_size)
    batches = []
    for start in range(0, n, window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


@pytest.mark.parametrize("shuffle", [True, False])
def test_the_batches_over_an_array_of_lengths_are_the_batches_over_a_list(shuffle):
    from plmkit.data.batching import BucketBatchSampler

    rng = np.random.default_rng(5)
    for n, size, bucket in [(0, 4, 2), (1, 4, 2), (101, 8, 2), (1000, 16, 50), (777, 5, 0)]:
        lengths = rng.integers(1, 20, n).tolist()  # many ties: the sort must be stable
        for epoch in (0, 3):
            sampler = BucketBatchSampler(np.array(lengths), size, 11, bucket, shuffle)
            sampler.set_epoch(epoch)
            expected = _old_batches(lengths, size, 11, epoch, bucket, shuffle)
            assert sampler.batches() == expected
            sampler.start = min(2, len(expected))
            got = list(sampler)
            assert got == expected[sampler.start :] and all(type(i) is int for b in got for i in b)


def test_a_vocabulary_past_65536_ids_is_kept_in_32_bits(files, tokenizer, tmp_path):
    class Large:
        backend_tokenizer = tokenizer.backend_tokenizer

        def __len__(self) -> int:
            return 70_000

    specs = [str(f) for f in files]
    packed = tokenized_corpus(CorpusLines(specs), tmp_path, Large(), 40, True)
    assert packed.meta["ids"] == "uint32"
    assert list(packed) == _old_pack_corpus(read_corpus(specs), tokenizer, 40, whole_word=True)


def test_the_tokenizer_trains_on_the_files_as_on_a_list_of_their_lines(files):
    specs = [str(f) for f in files]
    lines = read_corpus(specs)
    assert train_wordpiece(CorpusLines(specs), 400).backend_tokenizer.to_str() == (
        train_wordpiece(lines, 400).backend_tokenizer.to_str()
    )
    assert train_byte_bpe(CorpusLines(specs), 300).backend_tokenizer.to_str() == (
        train_byte_bpe(lines, 300).backend_tokenizer.to_str()
    )


def test_the_tokenized_corpus_is_reused_while_it_matches(files, tokenizer, tmp_path, monkeypatch, capsys):
    specs = [str(f) for f in files]
    first = list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False))
    capsys.readouterr()

    def no_packing(*args, **kwargs):
        raise AssertionError("tokenized again")

    with monkeypatch.context() as m:
        m.setattr(corpus_module, "iter_packed", no_packing)
        assert list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False)) == first
        assert "tokenized before" in capsys.readouterr().out
        # another max_length, whole_word, tokenizer or corpus is another tokenized corpus
        for options in ((32, False), (40, True)):
            with pytest.raises(AssertionError, match="tokenized again"):
                tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, *options)
        other = train_wordpiece(read_corpus(specs)[:60], vocab_size=400)
        with pytest.raises(AssertionError, match="tokenized again"):
            tokenized_corpus(CorpusLines(specs), tmp_path, other, 40, False)
        with pytest.raises(AssertionError, match="tokenized again"):
            tokenized_corpus(CorpusLines(specs[:1]), tmp_path, tokenizer, 40, False)
    assert list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False)) == first  # still there, whole


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda f: f.joinpath("ids.bin").write_bytes(f.joinpath("ids.bin").read_bytes()[:-2]), "ids.bin is not"),
        (lambda f: f.joinpath("words.bin").unlink(), "unreadable"),
        (lambda f: f.joinpath("meta.json").write_text("{"), "unreadable"),
        (lambda f: f.joinpath("offsets.bin").write_bytes(bytes(f.joinpath("offsets.bin").stat().st_size)), "offsets"),
    ],
)
def test_a_damaged_tokenized_corpus_is_made_again(files, tokenizer, tmp_path, damage, why, capsys):
    specs = [str(f) for f in files]
    expected = list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False))
    damage(tmp_path / CACHE)
    capsys.readouterr()
    assert list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False)) == expected
    out = capsys.readouterr().out
    assert "tokenizing into" in out and why in out


def test_a_tokenized_corpus_cut_short_leaves_the_previous_one_whole(files, tokenizer, tmp_path, monkeypatch):
    specs = [str(f) for f in files]
    expected = list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False))
    before = {p.name: p.read_bytes() for p in (tmp_path / CACHE).iterdir()}
    monkeypatch.setattr(corpus_module, "FLUSH_TOKENS", 50)

    def failing():
        yield from read_corpus(specs)[:100]
        raise DataError("the disk went away")

    with pytest.raises(DataError, match="went away"):
        corpus_module.write_packed(tmp_path / CACHE, failing(), tokenizer, 32, False, "another key")
    assert {p.name: p.read_bytes() for p in (tmp_path / CACHE).iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == [CACHE]  # no temporary left
    assert list(tokenized_corpus(CorpusLines(specs), tmp_path, tokenizer, 40, False)) == expected


def test_corpus_errors_are_named(files, tmp_path, tokenizer):
    with pytest.raises(DataError, match="unknown corpus"):
        CorpusLines(["builtin:nothing"])
    with pytest.raises(DataError, match="file not found"):
        CorpusLines([str(tmp_path / "missing.txt")])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="file is empty"):
        list(CorpusLines([str(blank)]))
    with pytest.raises(ConfigError, match="max_length: 2 leaves no room"):
        tokenized_corpus(CorpusLines([str(files[0])]), tmp_path, tokenizer, 2, False)
    assert not (tmp_path / CACHE).exists()


def test_a_gbk_corpus_is_refused_with_the_option_that_reads_it_and_read_with_it(tmp_path, capsys):
    """The hint names --encoding, and pretrain has it: the corpus is read in the encoding given."""
    from plmkit.cli import main

    corpus = tmp_path / "gbk.txt"
    corpus.write_bytes("今天天气很好\n我们去公园散步\n".encode("gbk"))
    out = tmp_path / "out"
    small = ["vocab_size=100", "hidden_size=32", "num_layers=1", "num_heads=2", "intermediate_size=64"]
    argv = ["pretrain", "--corpus", str(corpus), "--output", str(out), "max_steps=1", "progress=false", *small]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{corpus}:1: not valid utf-8" in err and "pass --encoding gbk" in err
    assert main([*argv, "--encoding", "gbk"]) == 0
    vocab = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert {"今", "天", "公", "园"} <= vocab.keys()  # the characters themselves, decoded from GBK


TINY = {
    "hidden_size": "32",
    "num_layers": "2",
    "num_heads": "2",
    "intermediate_size": "64",
    "vocab_size": "400",
    "max_length": "40",
    "epochs": "2",
    "batch_size": "8",
    "lr": "5e-3",
    "log_steps": "1",
    "progress": "false",
    "heldout_fraction": "0.1",
    "max_steps": "10",
}


class _InMemory(list):
    """The segments as pretrain held them before: a list, packed by the old function."""

    def __init__(self, segments: list, lines: int):
        super().__init__(segments)
        self.lines = lines

    def lengths(self) -> np.ndarray:
        return np.array([len(s["ids"]) for s in self], dtype=np.int64)

    def close(self) -> None:
        pass


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file saved under `path` (ELECTRA's generator, SpanBERT's head too)."""
    files = sorted(path.rglob("*.safetensors"))
    return {f"{f.relative_to(path)}:{k}": v for f in files for k, v in load_file(str(f)).items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    "options", [{"arch": "bert", "whole_word": "true"}, {"arch": "albert", "albert.embedding_size": "16"}]
)
def test_pretraining_from_disk_ends_with_the_weights_of_the_in_memory_path(files, tmp_path, monkeypatch, options):
    specs = [str(f) for f in files]

    def in_memory(lines, output, tokenizer, max_length, whole_word):
        text = read_corpus(specs)
        return _InMemory(_old_pack_corpus(text, tokenizer, max_length, whole_word), len(text))

    monkeypatch.setattr(objectives, "PACK_LINES", 37)  # the lines go through the tokenizer in several batches
    monkeypatch.setattr(corpus_module, "FLUSH_TOKENS", 500)  # and the segments reach the disk in several pieces
    on_disk = api.pretrain(specs, tmp_path / "disk", overrides=TINY | options)
    with monkeypatch.context() as m:
        m.setattr("plmkit.pretrain.run.tokenized_corpus", in_memory)
        m.setattr("plmkit.pretrain.run.heldout", lambda *args: np.array(sorted(_old_held(*args)), dtype=np.int64))
        in_ram = api.pretrain(specs, tmp_path / "ram", overrides=TINY | options)
    assert (
        on_disk["losses"] == in_ram["losses"] and on_disk["history"][0]["dev_loss"] == in_ram["history"][0]["dev_loss"]
    )
    assert (on_disk["lines"], on_disk["train_tokens_per_epoch"]) == (in_ram["lines"], in_ram["train_tokens_per_epoch"])
    disk, ram = _weights(tmp_path / "disk"), _weights(tmp_path / "ram")
    assert disk.keys() == ram.keys()
    for name in disk:
        assert torch.equal(disk[name], ram[name]), name
    assert not (tmp_path / "disk" / CACHE).exists()  # a finished run removes it


def _plmkit(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PLMKIT_FAULT"} | ({"PLMKIT_FAULT": fault} if fault else {})
    return subprocess.run([sys.executable, "-m", "plmkit", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_a_resumed_run_reads_the_corpus_it_tokenized_and_a_killed_packing_leaves_nothing(files, tmp_path):
    options = [f"{k}={v}" for k, v in (TINY | {"max_steps": "0", "epochs": "2", "save_steps": "4"}).items()]
    run = ["pretrain", *[a for f in files for a in ("--corpus", str(f))]]
    ref = _plmkit(*run, "--output", str(tmp_path / "ref"), *options)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "out"
    killed = _plmkit(*run, "--output", str(out), *options, fault="corpus.pack")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / CACHE).exists()  # the half-written one is a temporary, never the corpus
    killed = _plmkit(*run, "--output", str(out), *options, fault="step:6")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert "tokenizing into" in killed.stdout and (out / CACHE / "meta.json").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the first kill's temporary, swept

    resumed = _plmkit(*run, "--output", str(out), *options, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "tokenized before" in resumed.stdout and "tokenizing" not in resumed.stdout
    assert not (out / CACHE).exists()
    a, b = _weights(out), _weights(tmp_path / "ref")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
