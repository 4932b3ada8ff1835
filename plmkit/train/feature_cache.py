"""Feature caches on disk as memory-mapped safetensors files.

Every layer of every training position is large (People's Daily NER: 1.5M characters × 13 layers
× 384 × 2 bytes = 15 GB), so the cache is never held whole in memory: extraction writes straight
into the file's mapping, and training reads it back mapped, so the operating system pages it in
and out as the batches touch it. The files are ordinary safetensors (`safetensors.safe_open`
reads them); plmkit maps them itself because the library's loaders copy every tensor into memory.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from plmkit.io import atomic_path

_DTYPES = {
    "F16": torch.float16,
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I8": torch.int8,
    "U8": torch.uint8,
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class CacheFormatError(ValueError):
    """A cache file that is not a complete, consistent safetensors file."""


@contextmanager
def write_mapped(
    path: str | Path, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]], metadata: dict[str, str] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield writable tensors (zeros) of the given dtypes and shapes, mapped onto a new safetensors
    file; when the block ends they are flushed and the file replaces `path` in one rename (on an
    error nothing is left behind)."""
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    begin = 0
    for name, (dtype, shape) in specs.items():
        nbytes = dtype.itemsize * math.prod(shape)
        header[name] = {"dtype": _NAMES[dtype], "shape": list(shape), "data_offsets": [begin, begin + nbytes]}
        begin += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-(8 + len(blob)) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    start = 8 + len(blob)
    with atomic_path(path) as tmp:
        with open(tmp, "r+b") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            f.truncate(start + begin)  # a sparse file: the pages are written as extraction fills them
            mm = mmap.mmap(f.fileno(), 0)
        try:
            tensors = {name: _view(mm, start, info) for name, info in header.items() if name != "__metadata__"}
            yield tensors
            del tensors
            mm.flush()
        finally:
            _close(mm)


def read_mapped(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, mapped copy-on-write (nothing is read until it is used, and
    nothing written to them reaches the file). Raises CacheFormatError when the file is truncated or
    its header does not describe its contents."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise CacheFormatError("shorter than a safetensors header")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise CacheFormatError("the header runs past the end of the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CacheFormatError(f"the header is not JSON ({e})") from None
        start = 8 + n
        if size == start:
            mm = None
        else:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = _DTYPES[info["dtype"]], tuple(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CacheFormatError(f"tensor {name!r} has a malformed entry") from None
        if end - begin != dtype.itemsize * math.prod(shape) or begin < 0 or start + end > size:
            raise CacheFormatError(f"tensor {name!r} does not fit its shape or the file")
        out[name] = _view(mm, start, info)  # an empty one never reads mm (None: all header)
    return out


def _view(mm, start: int, info: dict) -> torch.Tensor:
    dtype, shape = _DTYPES[info["dtype"]], tuple(info["shape"])
    begin, end = info["data_offsets"]
    if end == begin:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(mm, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=start + begin).view(shape)


def _close(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # a tensor still exports the buffer: the mapping closes when the last one goes
        pass
