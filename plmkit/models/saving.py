"""The saved model directory: what Hugging Face opens, plus plmkit.json. Every file is
written to a temporary name and renamed into place, plmkit.json last.

Shapes (legend in plmkit/models/__init__.py): none; no tensors here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from plmkit.io import atomic_write_json, plain_mode, sweep_stale, temporary_prefix


def save_model_dir(path: str | Path, model, tokenizer, extra: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sweep_stale(path, "save")  # what a save killed mid-way left here
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix("save"), suffix=".tmp", dir=path))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for f in sorted(tmp.iterdir()):
            os.chmod(f, plain_mode())  # files written inside the private temporary folder may be private too
            os.replace(f, path / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, obj in (extra or {}).items():
        atomic_write_json(path / name, obj)
