"""A pretraining corpus larger than memory: its lines read as they are needed, its segments tokenized once
into flat files on disk and read back one segment at a time.

`CorpusLines` iterates the lines of the corpus files (and builtin corpora) anew each time, holding none of
them. `tokenized_corpus` packs them (`plmkit.pretrain.objectives.iter_packed`, a batch of lines at a time)
into OUTPUT/.corpus: every segment's token ids end to end in one file, their word ids (less the segment's
first) in another, and per segment where it starts and its first word id. The folder is written whole or
not at all (`plmkit.io.atomic_dir`), keyed by a digest of the corpus files, the tokenizer, max_length and
whole_word, reused while the key holds (a resumed run tokenizes nothing) and removed when the run
finishes. `PackedCorpus` reads a segment as `pack_corpus` gives it, {"ids", "words"}; `Rows` is the
training or held-out share of them, by index. What memory holds grows with the number of segments only:
16 bytes a segment (where each starts, its first word id), and the held-out indices.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plmkit import faults
from plmkit.data.builtin import CORPORA
from plmkit.data.readers import iter_corpus_file
from plmkit.errors import DataError
from plmkit.io import atomic_dir, existing_dir
from plmkit.pretrain.objectives import iter_packed, pack_budget
from plmkit.train.processes import is_main_process, main_first

CACHE = ".corpus"  # under the run's output
FORMAT = 1  # what the files hold and how packing cuts segments: a change makes earlier caches miss
FLUSH_TOKENS = 1 << 20  # tokens buffered before they are written


class CorpusLines:
    """The lines of corpus files (stripped, blank lines skipped) and builtin corpora (`builtin:NAME`), in
    order, read from the files each time it is iterated: nothing holds them all. An unknown builtin name and
    a missing file are refused at once; the errors of reading a file (its encoding, its bytes) when reading
    reaches them; a corpus without a line at the end of a pass."""

    def __init__(self, specs: Sequence[str], encoding: str = "utf-8"):
        self.specs, self.encoding = list(specs), encoding
        for spec in self.specs:
            if spec.startswith("builtin:"):
                name = spec.split(":", 1)[1]
                if name not in CORPORA:
                    known = ", ".join("builtin:" + c for c in CORPORA)
                    raise DataError(f"{spec!r}: unknown corpus; known: {known}")
            else:
                iter_corpus_file(spec, encoding)  # not found, a directory, an unknown encoding: now

    def __iter__(self) -> Iterator[str]:
        empty = True
        for spec in self.specs:
            builtin = spec.startswith("builtin:")
            source = CORPORA[spec.split(":", 1)[1]]() if builtin else iter_corpus_file(spec, self.encoding)
            for line in source:
                empty = False
                yield line
        if empty:
            raise DataError(f"{', '.join(self.specs)}: the corpus is empty")

    def digest(self) -> str:
        """Of what the lines are read from: each file's bytes, each builtin corpus's lines, and the encoding."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.encoding, len(self.specs)]).encode())
        for spec in self.specs:
            if spec.startswith("builtin:"):
                h.update(f"\0{spec}\0".encode())
                for line in CORPORA[spec.split(":", 1)[1]]():
                    h.update(line.encode() + b"\n")
                continue
            h.update(f"\0file {os.path.getsize(spec)}\0".encode())
            with open(spec, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
        return h.hexdigest()


def corpus_key(lines: CorpusLines, tokenizer, max_length: int, whole_word: bool) -> str:
    """What the tokenized corpus is made from: the corpus, the tokenizer (its whole definition), max_length,
    whole_word (and jieba's version with it), and the libraries and format that write it."""
    import tokenizers

    made = {
        "format": FORMAT,
        "corpus": lines.digest(),
        "max_length": max_length,
        "whole_word": whole_word,
        "tokenizers": tokenizers.__version__,
        "byteorder": sys.byteorder,
    }
    if whole_word:
        import jieba

        made["jieba"] = jieba.__version__
    h = hashlib.blake2b(json.dumps(made, sort_keys=True).encode(), digest_size=16)
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    return h.hexdigest()


def write_packed(
    folder: Path, lines: Iterable[str], tokenizer, max_length: int, whole_word: bool, key: str
) -> dict[str, Any]:
    """Pack `lines` into `folder` (replacing what is there only once all is written); returns its meta.

    ids.bin: the token ids of every segment, end to end (uint16 where the vocabulary allows, else uint32);
    words.bin: each token's word id less its segment's first (uint32); offsets.bin: where each segment starts
    in them, and the end (int64, segments + 1); bases.bin: each segment's first word id (int64)."""
    ids_type = "H" if len(tokenizer) <= 1 << 16 else "I"
    counted = _Counted(lines)
    meta: dict[str, Any] = {"format": FORMAT, "key": key, "ids": np.dtype(ids_type).name, "words": "uint32"}
    with atomic_dir(folder) as tmp:
        names = ("ids", "words", "offsets", "bases")
        files = {name: open(tmp / f"{name}.bin", "wb") for name in names}
        try:
            ids, words, offsets, bases = array(ids_type), array("I"), array("q", [0]), array("q")
            total = segments = 0

            def flush() -> None:
                for name, buffer in zip(names, (ids, words, offsets, bases)):
                    buffer.tofile(files[name])
                    del buffer[:]
                faults.point("corpus.pack")

            for seg_ids, seg_words in iter_packed(counted, tokenizer, max_length, whole_word):
                base = seg_words[0]  # word ids rise through a segment: its first is its least
                ids.extend(seg_ids)
                words.extend([w - base for w in seg_words])
                bases.append(base)
                total += len(seg_ids)
                segments += 1
                offsets.append(total)
                if len(ids) >= FLUSH_TOKENS:
                    flush()
            flush()
        finally:
            for f in files.values():
                f.close()
        meta |= {"segments": segments, "tokens": total, "lines": counted.n}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


class _Counted:
    """The lines of an iterable, counted as they pass."""

    def __init__(self, lines: Iterable[str]):
        self.lines, self.n = lines, 0

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            self.n += 1
            yield line


def _index(i, n: int, what: str) -> int:
    """Index `i` of a sequence of `n` (negative from the end), or an IndexError naming `what` it counts."""
    i = int(i) + n if int(i) < 0 else int(i)
    if not 0 <= i < n:
        raise IndexError(f"{what} {i} of {n}")
    return i


class PackedCorpus(Sequence):
    """The segments in a folder `write_packed` wrote: segment i as {"ids": [...], "words": [...]}, read from the
    files when asked for (positioned reads: nothing of the files is mapped or kept)."""

    def __init__(self, folder: Path, meta: dict[str, Any]):
        self.folder, self.meta = Path(folder), meta
        self.lines, self.tokens = int(meta["lines"]), int(meta["tokens"])
        self.offsets = np.fromfile(self.folder / "offsets.bin", dtype=np.int64)  # (segments + 1,)
        self.bases = np.fromfile(self.folder / "bases.bin", dtype=np.int64)  # (segments,)
        self.ids_type, self.words_type = np.dtype(meta["ids"]), np.dtype(meta["words"])
        self._fds: tuple[int, int, int] | None = None  # (pid, ids fd, words fd): a forked process opens its own

    @classmethod
    def open(cls, folder: Path, key: str) -> tuple[PackedCorpus | None, str]:
        """The corpus in `folder` when it is whole and made from `key`; else None and why not."""
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("key") != key:
                return None, "made from another corpus, tokenizer or options"
            n, tokens = int(meta["segments"]), int(meta["tokens"])
            sizes = {
                "ids": tokens * np.dtype(meta["ids"]).itemsize,
                "words": tokens * np.dtype(meta["words"]).itemsize,
                "offsets": (n + 1) * 8,
                "bases": n * 8,
            }
            for name, size in sizes.items():
                if (folder / f"{name}.bin").stat().st_size != size:
                    return None, f"{name}.bin is not the size its meta.json gives"
            corpus = cls(folder, meta)
        except (OSError, ValueError, KeyError, TypeError) as e:
            return None, f"unreadable ({e})"
        steps = np.diff(corpus.offsets)
        if corpus.offsets[0] != 0 or corpus.offsets[-1] != tokens or (steps <= 0).any():
            return None, "offsets.bin does not cut the tokens into segments"
        return corpus, ""

    def __len__(self) -> int:
        return len(self.bases)

    def lengths(self) -> np.ndarray:
        """(segments,) int64: the tokens of each."""
        return np.diff(self.offsets)

    def _read(self, fd: int, dtype: np.dtype, start: int, end: int) -> np.ndarray:
        size = (end - start) * dtype.itemsize
        raw = os.pread(fd, size, start * dtype.itemsize)
        if len(raw) != size:
            raise DataError(f"{self.folder}: a file of the tokenized corpus is shorter than it was written")
        return np.frombuffer(raw, dtype=dtype)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = _index(i, len(self), "segment")
        if self._fds is None or self._fds[0] != os.getpid():
            self._fds = (
                os.getpid(),
                os.open(self.folder / "ids.bin", os.O_RDONLY),
                os.open(self.folder / "words.bin", os.O_RDONLY),
            )
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        ids = self._read(self._fds[1], self.ids_type, start, end)
        words = self._read(self._fds[2], self.words_type, start, end).astype(np.int64) + self.bases[i]
        return {"ids": ids.tolist(), "words": words.tolist()}

    def close(self) -> None:
        fds = getattr(self, "_fds", None)  # None too where __init__ did not finish
        if fds is not None and fds[0] == os.getpid():
            os.close(fds[1])
            os.close(fds[2])
        self._fds = None

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fds": None}


class Rows(Sequence):
    """Segments of a corpus by index: those in `held` (sorted), or with `rest`, all the others, in order."""

    has_input_ids = False  # a segment's ids are under "ids": the loop's `made_from` digests the lengths alone

    def __init__(self, corpus: Sequence, held: np.ndarray, rest: bool = False):
        self.corpus, self.held, self.rest = corpus, np.asarray(held, dtype=np.int64), rest
        # the k-th held index less k: how many of the others come before it
        self._before = self.held - np.arange(len(self.held))

    def __len__(self) -> int:
        return len(self.corpus) - len(self.held) if self.rest else len(self.held)

    def corpus_index(self, i: int) -> int:
        """The corpus's index of row i."""
        if not self.rest:
            return int(self.held[i])
        return i + int(np.searchsorted(self._before, i, side="right"))

    def lengths(self) -> np.ndarray:
        """(rows,) int64: each row's tokens, from the corpus's offsets (no segment is read)."""
        lengths = np.asarray(self.corpus.lengths(), dtype=np.int64)
        return np.delete(lengths, self.held) if self.rest else lengths[self.held]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.corpus[self.corpus_index(_index(i, len(self), "row"))]


def tokenized_corpus(lines: CorpusLines, output: Path, tokenizer, max_length: int, whole_word: bool) -> PackedCorpus:
    """The corpus packed for `tokenizer` in OUTPUT/.corpus: the one there when it was made from the same
    corpus, tokenizer and options and is whole, else packed anew. Under `accelerate launch` the main process
    packs it and the others open it."""
    pack_budget(tokenizer, max_length)  # a max_length without room for text: refused before reading anything
    folder, key = Path(output) / CACHE, corpus_key(lines, tokenizer, max_length, whole_word)

    def make() -> PackedCorpus:
        found = existing_dir(folder)
        corpus, why = PackedCorpus.open(found, key) if found is not None else (None, "")
        if corpus is not None:
            if is_main_process():
                print(f"corpus: {corpus.lines} lines, tokenized before, read from {folder}")
            return corpus
        if is_main_process():
            print(f"corpus: tokenizing into {folder}" + (f" (the one there is {why})" if why else ""))
        write_packed(folder, lines, tokenizer, max_length, whole_word, key)
        corpus, why = PackedCorpus.open(folder, key)
        if corpus is None:
            raise DataError(f"{folder}: the tokenized corpus just written cannot be read: {why}")
        return corpus

    return main_first(make)


def discard(output: Path) -> None:
    """Remove OUTPUT/.corpus (and the twin an interrupted swap leaves): a finished run has no use for it."""
    folder = Path(output) / CACHE
    for path in (folder, folder.with_name(folder.name + ".old")):
        shutil.rmtree(path, ignore_errors=True)
