"""Nothing let in: the package's source has no call that runs code from a user's file. Scanned with `ast`:
no `torch.load` without `weights_only=True`, no pickle (or marshal, shelve, dill), no `yaml.load` but
`safe_load`, no `eval`/`exec`, no `trust_remote_code=True` written in, no `shell=True`; and the server
binds to loopback unless told otherwise."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plmkit"
UNPICKLING = {"pickle", "cPickle", "marshal", "shelve", "dill", "joblib"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def _name(node: ast.AST) -> str:
    """`a.b.c` for an attribute chain or a name; '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _name(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def findings(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: what' for each unsafe call or import in `source`."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in UNPICKLING]
        if not isinstance(node, ast.Call):
            continue
        called = _name(node.func)
        true = {k.arg for k in node.keywords if isinstance(k.value, ast.Constant) and k.value.value is True}
        keywords = {k.arg for k in node.keywords if k.arg}
        if called.endswith("torch.load") or called == "load" and "weights_only" in keywords:
            if "weights_only" not in true:
                out.append(f"{where}: torch.load without weights_only=True")
        if called.startswith("yaml.") and called.split(".")[-1] in UNSAFE_YAML:
            out.append(f"{where}: {called} (use yaml.safe_load)")
        if called in ("eval", "exec", "__import__"):
            out.append(f"{where}: {called}()")
        if "trust_remote_code" in true:
            out.append(f"{where}: trust_remote_code=True written in")
        if "shell" in true:
            out.append(f"{where}: shell=True")
    return out


def test_the_scan_finds_each_kind_of_unsafe_call():
    """The scanner is not vacuous: every pattern it guards against is found in a snippet that has it."""
    snippet = """
import pickle
from marshal import loads
import torch, yaml, subprocess
torch.load("m.pt")
torch.load("m.pt", weights_only=False)
torch.load("m.pt", weights_only=True)
yaml.load(text)
yaml.safe_load(text)
eval("1 + 1")
model.eval()
AutoModel.from_pretrained(path, trust_remote_code=True)
subprocess.run("ls", shell=True)
"""
    found = [f.split(": ", 1)[1] for f in findings(snippet)]
    assert found == [
        "imports pickle",
        "imports marshal",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "yaml.load (use yaml.safe_load)",
        "eval()",
        "trust_remote_code=True written in",
        "shell=True",
    ]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_package_runs_nothing_from_a_users_file(path):
    assert findings(path.read_text(encoding="utf-8"), str(path)) == []


def test_the_server_binds_to_loopback_by_default():
    from plmkit.config import ServeConfig

    assert ServeConfig().host == "127.0.0.1"
