"""The disk feature cache: safetensors files written through a memory mapping and read back mapped."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from plmkit.train.feature_cache import CacheFormatError, read_mapped, write_mapped


def _specs():
    return {"offsets": (torch.int64, (4,)), "values": (torch.float16, (5, 3, 2)), "segments": (torch.int8, (5,))}


def test_written_through_the_mapping_and_read_by_safetensors_itself(tmp_path):
    path = tmp_path / "c.safetensors"
    values = torch.randn(5, 3, 2).half()
    with write_mapped(path, _specs(), {"format": "1"}) as t:
        assert not path.exists()  # nothing visible until the block ends
        t["values"][:] = values
        t["offsets"][:] = torch.tensor([0, 2, 2, 5])
        t["segments"][:] = torch.tensor([0, 1, 1, 2, 0], dtype=torch.int8)
    plain = load_file(str(path))  # the safetensors library reads the file as its own
    assert torch.equal(plain["values"], values) and plain["offsets"].tolist() == [0, 2, 2, 5]
    mapped = read_mapped(path)
    assert all(torch.equal(mapped[k], plain[k]) for k in plain)
    assert mapped["values"].dtype == torch.float16 and mapped["values"].shape == (5, 3, 2)


def test_reads_files_the_library_wrote_and_never_writes_back(tmp_path):
    path = tmp_path / "lib.safetensors"
    x = torch.arange(12, dtype=torch.float32).view(3, 4)
    save_file({"x": x, "n": torch.tensor([7, 8], dtype=torch.int64)}, str(path))
    mapped = read_mapped(path)
    assert torch.equal(mapped["x"], x) and mapped["n"].tolist() == [7, 8]
    mapped["x"][0, 0] = 99.0  # copy-on-write: the file keeps its bytes
    assert load_file(str(path))["x"][0, 0].item() == 0.0


def test_an_error_inside_the_block_leaves_no_file(tmp_path):
    path = tmp_path / "c.safetensors"
    with pytest.raises(RuntimeError, match="interrupted"):
        with write_mapped(path, _specs()) as t:
            t["values"][:2] = 1.0
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "header", "short"])
def test_a_damaged_file_is_refused_with_the_reason(tmp_path, damage):
    path = tmp_path / "c.safetensors"
    with write_mapped(path, _specs()) as t:
        t["values"][:] = 1.0
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-7], "header": data[:8] + b"{not json" + data[17:], "short": data[:5]}[damage])
    with pytest.raises(CacheFormatError):
        read_mapped(path)


def test_empty_tensors_round_trip(tmp_path):
    path = tmp_path / "e.safetensors"
    with write_mapped(path, {"values": (torch.float16, (0, 3, 2))}):
        pass
    assert read_mapped(path)["values"].shape == (0, 3, 2)
    assert load_file(str(path))["values"].shape == (0, 3, 2)
