"""The bad-input matrix (README, "Bad input"): one test per row, named after it. Each bad input to `plmkit
train`, `evaluate` or `predict` exits non-zero with one line on stderr that names the file, line and field (or
the option), no traceback, and leaves no output behind: the --output path does not exist afterwards (nor any
temporary beside it), or one that was there is unchanged. The rows accepted on purpose (a BOM, CRLF, a very
long text) say so in their names. Rows already tested on the command line elsewhere are not repeated here:
the README's table names those tests (tests/e2e/test_cli_errors.py).

In process (`plmkit.cli.main`), as `plmkit` runs it: the same argument parsing and error handling, without
a new interpreter's imports per row."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import toy_rows, write_csv, write_jsonl

from plmkit.cli import main


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    """A PLMKIT_DEBUG in the caller's environment would print tracebacks, which these tests check are absent."""
    monkeypatch.delenv("PLMKIT_DEBUG", raising=False)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, toy_data, tmp_path_factory) -> Path:
    """The tiny model fine-tuned for one epoch on the toy task (single texts, classes bad and good)."""
    out = tmp_path_factory.mktemp("bad-inputs") / "model"
    argv = ["train", "--model", tiny_model_dir, "--train", toy_data["train"], "--output", out]
    assert main([str(a) for a in [*argv, "epochs=1", "progress=false"]]) == 0
    return out


def refused(capsys, argv: list, *names, output: Path | None = None) -> str:
    """Run `plmkit ARGV`: exit 2, one line on stderr naming each of `names`, no traceback; `output` (the
    command's --output) not there afterwards, nor a temporary or lock file of it. The error line."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.startswith(f"plmkit {argv[0]}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for name in names:
        assert str(name) in err, (name, err)
    if output is not None:
        assert not output.exists(), f"{output} left behind"
        assert not [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]
    return err


def accepted(capsys, argv: list) -> str:
    """Run `plmkit ARGV`: exit 0, nothing on stderr but progress. Standard output."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "error" not in err and "Traceback" not in err
    return out


def train_argv(model, data, output, *extra) -> list:
    return ["train", "--model", model, "--train", data, "--output", output, "progress=false", *extra]


def refused_train(capsys, tmp_path, model, data, *names, extra=()) -> str:
    out = tmp_path / "out"
    return refused(capsys, train_argv(model, data, out, *extra), *names, output=out)


def model_copy(source: Path, tmp_path: Path, name: str, manifest: bool = False) -> Path:
    """A copy of a model directory to damage; without its manifest.json unless `manifest`, so the damage
    reaches the loaders instead of the manifest's check."""
    model = tmp_path / name
    shutil.copytree(source, model)
    if not manifest:
        (model / "manifest.json").unlink()
    return model


def edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    (model / "config.json").write_text(json.dumps(config | changes), encoding="utf-8")


def labelled_csv(tmp_path: Path, name: str = "data.csv") -> Path:
    return write_csv(tmp_path / name, toy_rows(20, seed=5))


# --- encodings ----------------------------------------------------------------------------------------------------


def test_bad_input_utf8_bom_is_accepted(capsys, trained, tmp_path):
    data = tmp_path / "bom.csv"  # the BOM sits before the header: read as part of it, no column would be 'text'
    data.write_bytes(b"\xef\xbb\xbf" + "text\n好棒的东西\n差坏的东西\n".encode())
    out = tmp_path / "pred.jsonl"
    accepted(capsys, ["predict", "--model", trained, "--input", data, "--output", out])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == ["好棒的东西", "差坏的东西"]


def test_bad_input_latin1_file(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "latin1.csv"
    data.write_bytes("text,label\ncafé bon,good\nmauvais,bad\n".encode("latin-1"))
    err = refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:2", "not valid utf-8", "0xe9")
    assert "GBK" not in err  # it does not decode as GB18030: no such hint


def test_bad_input_invalid_bytes_mid_file(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "mid.csv"
    data.write_bytes("text,label\n好棒,good\n差坏,bad\n".encode() + b"\xff\xfe,good\n" + "好,good\n".encode())
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:4", "byte 0xff")


# --- lines, rows, columns -----------------------------------------------------------------------------------------


def test_bad_input_crlf_is_accepted(capsys, trained, tmp_path):
    data = tmp_path / "crlf.csv"  # a label read as 'good\r' would be one training never saw
    data.write_bytes("text,label\r\n好棒的东西,good\r\n差坏的东西,bad\r\n".encode())
    out = tmp_path / "eval"
    result = json.loads(
        accepted(capsys, ["evaluate", "--model", trained, "--data", data, "--output", out, "--json"]).splitlines()[-1]
    )
    assert result["examples"] == 2 and (out / "metrics.json").is_file()


def test_bad_input_nul_byte(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "nul.csv"
    data.write_bytes("text,label\n好棒,good\n差\x00坏,bad\n".encode())
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:3", "field 'text'", "NUL")


def test_bad_input_ragged_row(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "ragged.csv"
    data.write_text("text,label\n好棒,good\n差坏\n", encoding="utf-8")
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:3", "1 columns, but the header has 2")


def test_bad_input_header_only(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "header.csv"
    data.write_text("text,label\n", encoding="utf-8")
    refused_train(capsys, tmp_path, tiny_model_dir, data, data, "no examples")


def test_bad_input_empty_file(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "empty.csv"
    data.write_bytes(b"")
    refused_train(capsys, tmp_path, tiny_model_dir, data, data, "file is empty")


def test_bad_input_missing_column(capsys, tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "lable.csv", [("好棒", "good"), ("差坏", "bad")], header=("text", "lable"))
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:1", "field 'label'", "no column 'label'", "lable")


def test_bad_input_extra_column(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "extra.csv"
    data.write_text("text,label\n好棒,good\n差坏,bad,bad\n", encoding="utf-8")
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:3", "3 columns, but the header has 2")


def test_bad_input_200000_character_text_is_accepted(capsys, trained, tmp_path):
    text = ("好棒赞优美爱" * 33_334)[:200_000]  # truncated to max_length (head), as the model was trained
    data = write_csv(tmp_path / "long.csv", [(text,)], header=("text",))
    out = tmp_path / "pred.jsonl"
    accepted(capsys, ["predict", "--model", trained, "--input", data, "--output", out])
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(row["text"]) == 200_000 and row["label"] in ("bad", "good")


# --- labels -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["abc", "nan", "inf"])
def test_bad_input_regression_label_not_a_finite_number(capsys, tiny_model_dir, tmp_path, label):
    data = write_csv(
        tmp_path / "scores.csv", [("好", "棒", "1.5"), ("差", "坏", label)], ("text", "text_pair", "label")
    )
    refused_train(
        capsys,
        tmp_path,
        tiny_model_dir,
        data,
        f"{data}:3",
        "field 'label'",
        repr(label),
        extra=["--task", "regression"],
    )


def test_bad_input_broken_jsonl_line(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"text": "好棒", "label": "good"}\n{"text": "差坏", label: "bad"}\n', encoding="utf-8")
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:2", "not valid JSON")


def test_bad_input_label_is_a_list(capsys, tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "list.jsonl", [{"text": "好棒", "label": "good"}, {"text": "差坏", "label": ["bad"]}])
    refused_train(capsys, tmp_path, tiny_model_dir, data, f"{data}:2", "field 'label'", "got a list")


# --- a directory where a file is expected -------------------------------------------------------------------------


def test_bad_input_directory_as_input_file(capsys, tiny_model_dir, tmp_path):
    data = tmp_path / "train.csv"
    data.mkdir()
    refused_train(capsys, tmp_path, tiny_model_dir, data, data, "is a directory")


def test_bad_input_directory_as_output_file(capsys, trained, tmp_path, monkeypatch):
    from plmkit.train import run

    out = tmp_path / "x.jsonl"
    out.mkdir()
    (out / "kept.txt").write_text("mine", encoding="utf-8")
    monkeypatch.setattr(run, "load", lambda *a, **k: pytest.fail("the model was loaded before the output was checked"))
    refused(capsys, ["predict", "--model", trained, "--text", "好棒", "--output", out], out, "is a directory")
    assert [p.name for p in out.iterdir()] == ["kept.txt"] and (out / "kept.txt").read_text(encoding="utf-8") == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]  # no temporary beside it


# --- model directories --------------------------------------------------------------------------------------------


def test_bad_input_pytorch_bin_beside_other_safetensors(capsys, tiny_model_dir, tmp_path):
    model = model_copy(tiny_model_dir, tmp_path, "renamed")
    (model / "model.safetensors").rename(model / "weights.safetensors")
    (model / "pytorch_model.bin").write_bytes(b"never read")
    refused_train(
        capsys, tmp_path, model, labelled_csv(tmp_path), model, "no model weights", "weights.safetensors", "rename"
    )


def test_bad_input_safetensors_changed_with_manifest(capsys, tiny_model_dir, tmp_path):
    model = model_copy(tiny_model_dir, tmp_path, "changed", manifest=True)
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    refused_train(capsys, tmp_path, model, labelled_csv(tmp_path), model, "model.safetensors is not the file")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_bad_input_corrupt_safetensors_without_manifest(capsys, tiny_model_dir, tmp_path, damage):
    model = model_copy(tiny_model_dir, tmp_path, damage)
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(weights[:-100] if damage == "truncated" else b"not a tensor file")
    err = refused_train(capsys, tmp_path, model, labelled_csv(tmp_path), model / "model.safetensors", "damaged")
    assert ("truncated" in err) == (damage == "truncated")


def test_bad_input_config_shapes_do_not_match_weights(capsys, trained, tmp_path):
    model = model_copy(trained, tmp_path, "wider")
    edit_config(model, hidden_size=64)
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--model", model, "--text", "好棒", "--output", out]
    refused(capsys, argv, model, "do not fit config.json", "word_embeddings", "[103, 64]", output=out)


def test_bad_input_damaged_plmkit_json(capsys, trained, tmp_path):
    for manifest, names in ((True, ["plmkit.json is not the file"]), (False, ["plmkit.json:1", "damaged"])):
        model = model_copy(trained, tmp_path, f"meta-{manifest}", manifest=manifest)
        (model / "plmkit.json").write_text('{"task": "classification",', encoding="utf-8")
        out = tmp_path / f"eval-{manifest}"
        refused(capsys, ["evaluate", "--model", model, "--data", labelled_csv(tmp_path), "--output", out], *names)
        assert not out.exists()


@pytest.mark.parametrize(
    "change, named",
    [
        ({"auto_map": {"AutoConfig": "custom.Config", "AutoModel": "custom.Model"}}, "auto_map"),
        ({"model_type": "frobnicator"}, "model_type 'frobnicator'"),
    ],
)
def test_bad_input_config_asks_for_remote_code(capsys, tiny_model_dir, tmp_path, change, named):
    model = model_copy(tiny_model_dir, tmp_path, "remote")
    edit_config(model, **change)
    data = labelled_csv(tmp_path)
    refused_train(capsys, tmp_path, model, data, model / "config.json", named, "trust_remote_code is off")


# --- options ------------------------------------------------------------------------------------------------------


def test_bad_input_head_tokens_not_below_max_length(capsys, tiny_model_dir, tmp_path):
    data = labelled_csv(tmp_path)
    extra = ["truncation=head_tail", "max_length=64", "head_tokens=64"]
    refused_train(capsys, tmp_path, tiny_model_dir, data, "head_tokens: 64 is not below max_length (64)", extra=extra)
    extra = ["truncation=tail", "head_tokens=16"]  # set where it does nothing
    refused_train(capsys, tmp_path, tiny_model_dir, data, "head_tokens: applies to truncation=head_tail", extra=extra)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_bad_input_fp16_on_cpu(capsys, tiny_model_dir, tmp_path):
    err = refused_train(capsys, tmp_path, tiny_model_dir, labelled_csv(tmp_path), extra=["mixed_precision=fp16"])
    assert err == "plmkit train: error: mixed_precision: fp16 needs a GPU; use bf16 or no\n"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("今天天气很好\n我们去公园散步\n", encoding="utf-8")
    out = tmp_path / "pretrained"
    argv = ["pretrain", "--corpus", corpus, "--output", out, "mixed_precision=fp16", "vocab_size=100"]
    err = refused(capsys, argv, output=out)
    assert err == "plmkit pretrain: error: mixed_precision: fp16 needs a GPU; use bf16 or no\n"


@pytest.mark.parametrize("lr", ["0", "-1e-5"])
def test_bad_input_lr_not_positive(capsys, tiny_model_dir, tmp_path, lr):
    refused_train(
        capsys,
        tmp_path,
        tiny_model_dir,
        labelled_csv(tmp_path),
        "command line: lr: expected a number > 0",
        extra=[f"lr={lr}"],
    )


def test_bad_input_epochs_zero(capsys, tiny_model_dir, tmp_path):
    refused_train(
        capsys, tmp_path, tiny_model_dir, labelled_csv(tmp_path), "epochs: expected int >= 1", extra=["epochs=0"]
    )


def test_bad_input_batch_size_zero(capsys, tiny_model_dir, tmp_path):
    data = labelled_csv(tmp_path)
    refused_train(capsys, tmp_path, tiny_model_dir, data, "batch_size: expected int >= 1", extra=["batch_size=0"])


def test_bad_input_key_given_twice(capsys, tiny_model_dir, tmp_path):
    data = labelled_csv(tmp_path)
    refused_train(
        capsys, tmp_path, tiny_model_dir, data, "command line: loop.lr: given twice", extra=["lr=1e-3", "loop.lr=2e-3"]
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 1.0e-3\nmax_length: 64\nlr: 2.0e-3\n", encoding="utf-8")
    refused_train(
        capsys, tmp_path, tiny_model_dir, data, f"{recipe}:3", "key 'lr' given twice", extra=["--config", recipe]
    )


# --- predict ------------------------------------------------------------------------------------------------------


def test_bad_input_text_pair_for_single_text_model(capsys, trained, tmp_path):
    out = tmp_path / "pred.jsonl"
    argv = ["predict", "--model", trained, "--text", "好棒", "--text-pair", "差坏", "--output", out]
    refused(capsys, argv, "field 'text_pair'", "single texts", output=out)


# --- the README's table -------------------------------------------------------------------------------------------


def test_every_test_the_readme_bad_input_table_names_exists():
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Bad input\n", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "test_" in line]
    names = {
        (path.name, line.split("(")[0].removeprefix("def "))
        for path in (root / "tests").rglob("test_*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("def test_")
    }
    for row in rows:
        cell = row.rstrip(" |").rsplit("|", 1)[1].strip().strip("`")
        file, _, name = cell.rpartition("::")
        assert (file or Path(__file__).name, name) in names, f"README names {cell}, which is not a test"
    assert len(rows) >= 30
