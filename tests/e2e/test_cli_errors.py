"""The CLI on bad input: exit code 2 and one error line on stderr that names the problem; on a library's error,
exit code 1 and one line with its type and first line (the traceback with PLMKIT_DEBUG=1)."""

from __future__ import annotations

import shutil

import pytest
from conftest import toy_rows, write_csv, write_jsonl

from plmkit.cli import main


def _fails(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit code 2 and an error on stderr; return the error text."""
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    command = argv[0]
    assert err.startswith(f"plmkit {command}: error: "), err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    """The one-line form is what these tests check; a PLMKIT_DEBUG in the caller's environment would add tracebacks."""
    monkeypatch.delenv("PLMKIT_DEBUG", raising=False)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, toy_data, tmp_path_factory):
    """The tiny model fine-tuned for one epoch on the toy task by the CLI itself."""
    out = tmp_path_factory.mktemp("trained") / "model"
    rc = main(
        [
            "train",
            "--model",
            str(tiny_model_dir),
            "--train",
            str(toy_data["train"]),
            "--output",
            str(out),
            "epochs=1",
            "progress=false",
        ]
    )
    assert rc == 0
    assert (out / "plmkit.json").is_file() and (out / "model.safetensors").is_file()
    return out


def _train(tiny_model_dir, train, output, *extra) -> list[str]:
    return ["train", "--model", str(tiny_model_dir), "--train", str(train), "--output", str(output), *extra]


# --- train --------------------------------------------------------------------------------------------------------


def test_train_missing_file(capsys, tiny_model_dir, tmp_path):
    missing = tmp_path / "nope.csv"
    err = _fails(capsys, _train(tiny_model_dir, missing, tmp_path / "out"))
    assert str(missing) in err and "not found" in err
    assert not (tmp_path / "out").exists()


def test_train_bad_row_names_line_and_field(capsys, tiny_model_dir, tmp_path):
    path = write_csv(tmp_path / "train.csv", [("好棒", "good"), ("", "bad")])
    err = _fails(capsys, _train(tiny_model_dir, path, tmp_path / "out"))
    assert f"{path}:3" in err and "field 'text'" in err
    assert not (tmp_path / "out").exists()


def test_train_unknown_override_key(capsys, tiny_model_dir, toy_data, tmp_path):
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "nosuchkey=1"))
    assert "nosuchkey" in err and "valid keys" in err
    assert "max_length" in err and "loop.lr" in err
    assert not (tmp_path / "out").exists()


def test_train_override_without_equals(capsys, tiny_model_dir, toy_data, tmp_path):
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "epochs"))
    assert "key=value" in err and "'epochs'" in err


def test_train_bad_override_type(capsys, tiny_model_dir, toy_data, tmp_path):
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "epochs=many"))
    assert "epochs" in err and "'many'" in err


def test_train_missing_config_file(capsys, tiny_model_dir, toy_data, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "--config", str(recipe)))
    assert str(recipe) in err and "not found" in err


def test_train_unknown_task(capsys, tiny_model_dir, toy_data, tmp_path):
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "--task", "tagging"))
    assert "'tagging'" in err and "classification" in err


def test_train_max_length_above_model_limit(capsys, tiny_model_dir, toy_data, tmp_path):
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "max_length=100000"))
    assert "max_length" in err and "100000" in err and "128" in err
    assert not (tmp_path / "out").exists()


def test_train_model_dir_without_weights(capsys, tiny_model_dir, toy_data, tmp_path):
    model = tmp_path / "no-weights"
    model.mkdir()
    shutil.copy(tiny_model_dir / "config.json", model / "config.json")
    err = _fails(capsys, _train(model, toy_data["train"], tmp_path / "out"))
    assert str(model) in err and "no model weights" in err
    assert not (tmp_path / "out").exists()


class _Trap:
    """Unpickled, it makes a directory: the proof that a pickle was opened."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.mkdir, (self.path,)


def test_train_model_dir_with_pickled_weights_only(capsys, tiny_model_dir, toy_data, tmp_path):
    import pickle

    model = tmp_path / "pickled"
    model.mkdir()
    shutil.copy(tiny_model_dir / "config.json", model / "config.json")
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(tmp_path / "unpickled")))
    err = _fails(capsys, _train(model, toy_data["train"], tmp_path / "out"))
    assert "no model weights" in err and "pytorch_model.bin" in err and "never unpickles" in err
    assert not (tmp_path / "unpickled").exists() and not (tmp_path / "out").exists()


def test_train_missing_model_dir(capsys, toy_data, tmp_path):
    model = tmp_path / "nowhere"
    err = _fails(capsys, _train(model, toy_data["train"], tmp_path / "out"))
    assert "nowhere" in err and "not found" in err


def test_train_one_class(capsys, tiny_model_dir, tmp_path):
    path = write_csv(tmp_path / "one.csv", [(t, "good") for t, _ in toy_rows(20, seed=3)])
    err = _fails(capsys, _train(tiny_model_dir, path, tmp_path / "out"))
    assert str(path) in err and "one class" in err and "'good'" in err and "field 'label'" in err
    assert not (tmp_path / "out").exists()


def test_train_dev_label_unseen(capsys, tiny_model_dir, toy_data, tmp_path):
    dev = write_jsonl(tmp_path / "dev.jsonl", [{"text": "好棒", "label": "good"}, {"text": "还行", "label": "meh"}])
    err = _fails(capsys, _train(tiny_model_dir, toy_data["train"], tmp_path / "out", "--dev", str(dev)))
    assert f"{dev}:2" in err and "field 'label'" in err and "'meh'" in err


def test_train_gbk_file_hint_and_encoding_option(capsys, tiny_model_dir, tmp_path):
    path = tmp_path / "gbk.csv"
    rows = "text,label\n" + "".join(f"{t},{y}\n" for t, y in toy_rows(20, seed=4))
    path.write_bytes(rows.encode("gbk"))
    err = _fails(capsys, _train(tiny_model_dir, path, tmp_path / "out"))
    assert f"{path}:2" in err and "GBK" in err and "--encoding" in err
    assert not (tmp_path / "out").exists()
    # with --encoding gbk the file reads; the next error is the model's length limit, so the data got through
    err = _fails(capsys, _train(tiny_model_dir, path, tmp_path / "out", "--encoding", "gbk", "max_length=4096"))
    assert "max_length" in err and "GBK" not in err


def test_train_tokenizer_from_another_model(capsys, tiny_model_dir, toy_data, tmp_path):
    from plmkit.models.encoders import resolve_model

    minilm = resolve_model("minilm-en")
    model = tmp_path / "mixed"
    shutil.copytree(tiny_model_dir, model)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(f"{minilm}/{name}", model / name)
    for name in ("vocab.txt", "special_tokens_map.json", "manifest.json"):  # no manifest: the loaders see it
        (model / name).unlink(missing_ok=True)
    err = _fails(capsys, _train(model, toy_data["train"], tmp_path / "out"))
    assert "does not belong" in err and str(model) in err
    assert not (tmp_path / "out").exists()


# --- evaluate -----------------------------------------------------------------------------------------------------


def test_evaluate_dir_without_config(capsys, toy_data, tmp_path):
    model = tmp_path / "empty-model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"")
    err = _fails(capsys, ["evaluate", "--model", str(model), "--data", str(toy_data["test"])])
    assert str(model) in err and "config.json" in err


def test_evaluate_model_not_trained_by_plmkit(capsys, tiny_model_dir, toy_data):
    err = _fails(capsys, ["evaluate", "--model", str(tiny_model_dir), "--data", str(toy_data["test"])])
    assert "plmkit.json" in err


def test_evaluate_ok(capsys, trained, toy_data):
    capsys.readouterr()
    assert main(["evaluate", "--model", str(trained), "--data", str(toy_data["test"]), "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["examples"] == 40 and 0.0 <= result["accuracy"] <= 1.0


def test_evaluate_unseen_label(capsys, trained, tmp_path):
    data = write_csv(tmp_path / "eval.csv", [("好棒的东西", "good"), ("差坏的东西", "bad"), ("一般般的东西", "meh")])
    err = _fails(capsys, ["evaluate", "--model", str(trained), "--data", str(data)])
    assert f"{data}:4" in err and "field 'label'" in err and "'meh'" in err
    assert "bad" in err and "good" in err  # the known labels
    assert not (trained / "eval-eval").exists()  # the default --output


def test_evaluate_unseen_label_jsonl(capsys, trained, tmp_path):
    data = write_jsonl(tmp_path / "eval.jsonl", [{"text": "好棒", "label": "meh"}])
    err = _fails(capsys, ["evaluate", "--model", str(trained), "--data", str(data)])
    assert f"{data}:1" in err and "field 'label'" in err and "'meh'" in err


def test_evaluate_missing_data(capsys, trained, tmp_path):
    data = tmp_path / "missing.tsv"
    err = _fails(capsys, ["evaluate", "--model", str(trained), "--data", str(data)])
    assert str(data) in err and "not found" in err


def test_evaluate_unknown_builtin(capsys, trained):
    err = _fails(capsys, ["evaluate", "--model", str(trained), "--data", "builtin:nosuch"])
    assert "nosuch" in err and "reviews" in err


# --- enumerated options: refused before any data or model is read --------------------------------------------------


def test_train_mixed_precision_typo_fails_before_data(capsys, tmp_path):
    """A missing model and a missing train file: the option is what gets reported, so nothing was read first."""
    out = tmp_path / "out"
    argv = _train(tmp_path / "no-model", tmp_path / "no-data.csv", out, "mixed_precision=bf17")
    err = _fails(capsys, argv)
    assert err == "plmkit train: error: command line: mixed_precision: 'bf17' is not one of: no, fp16, bf16, auto\n"
    assert not out.exists()


def test_train_enum_typo_in_recipe_names_the_file(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("truncation: middle\nloop:\n  epochs: 1\n", encoding="utf-8")
    err = _fails(
        capsys, _train(tmp_path / "no-model", tmp_path / "no-data.csv", tmp_path / "out", "--config", str(recipe))
    )
    assert err == f"plmkit train: error: {recipe}: truncation: 'middle' is not one of: head, tail, head_tail\n"


def test_train_layers_out_of_choices(capsys, tmp_path):
    err = _fails(
        capsys, _train(tmp_path / "no-model", tmp_path / "no-data.csv", tmp_path / "out", "mode=features", "layers=-1")
    )
    assert "layers: '-1' is not one of: mix, last or int >= 0" in err


def test_train_features_head_of_another_mode_fails_before_data(capsys, tmp_path):
    """head=cls is a head, but not a feature-mode one: refused before the encoder runs over the data."""
    err = _fails(
        capsys,
        _train(tmp_path / "no-model", tmp_path / "no-data.csv", tmp_path / "out", "mode=features", "--head", "cls"),
    )
    assert "head: 'cls'" in err and "mlp" in err and "bilstm" in err and "no-data" not in err


def test_train_invalid_recipe_yaml_is_one_line(capsys, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("loop: [unclosed\n", encoding="utf-8")
    err = _fails(
        capsys, _train(tmp_path / "no-model", tmp_path / "no-data.csv", tmp_path / "out", "--config", str(recipe))
    )
    assert err.count("\n") == 1 and f"{recipe}:2:1: not valid YAML" in err
    assert not (tmp_path / "out").exists()


# --- errors from libraries underneath: one line, exit 1; PLMKIT_DEBUG=1 for the traceback ---------------------------


def _raising(exc: BaseException):
    def run(*args, **kwargs):
        raise exc

    return run


def _library_error(capsys, monkeypatch, tmp_path, exc: BaseException) -> tuple[int, str]:
    from plmkit import api

    monkeypatch.setattr(api, "train", _raising(exc))
    capsys.readouterr()
    rc = main(["train", "--train", str(tmp_path / "t.csv"), "--output", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert out == ""
    return rc, err


def test_library_error_is_one_line_exit_1(capsys, monkeypatch, tmp_path):
    rc, err = _library_error(capsys, monkeypatch, tmp_path, ValueError("boom\nsecond line"))
    assert rc == 1
    assert err == "plmkit train: error: ValueError: boom\n"


@pytest.mark.parametrize(
    "exc, line",
    [
        (RuntimeError(), "RuntimeError"),
        (OSError(28, "No space left on device"), "OSError: [Errno 28] No space left on device"),
        (
            RuntimeError("\n  CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
            "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        (KeyError("label"), "KeyError: 'label'"),
    ],
)
def test_library_error_type_and_first_line(capsys, monkeypatch, tmp_path, exc, line):
    rc, err = _library_error(capsys, monkeypatch, tmp_path, exc)
    assert rc == 1
    assert err == f"plmkit train: error: {line}\n"


def test_library_error_with_debug_prints_the_traceback(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PLMKIT_DEBUG", "1")
    rc, err = _library_error(capsys, monkeypatch, tmp_path, ValueError("boom\nsecond line"))
    assert rc == 1
    assert "Traceback (most recent call last)" in err and "second line" in err and "in run" in err
    assert err.splitlines()[-1] == "plmkit train: error: ValueError: boom"


def test_plmkit_error_with_debug_prints_the_traceback(capsys, monkeypatch, tmp_path):
    from plmkit.errors import ConfigError

    monkeypatch.setenv("PLMKIT_DEBUG", "1")
    rc, err = _library_error(capsys, monkeypatch, tmp_path, ConfigError("lr: bad"))
    assert rc == 2
    assert "Traceback" in err and err.splitlines()[-1] == "plmkit train: error: lr: bad"


def test_plmkit_error_quoting_a_library_is_one_line(capsys, monkeypatch, tmp_path):
    from plmkit.errors import ModelError

    rc, err = _library_error(capsys, monkeypatch, tmp_path, ModelError("m: cannot load a tokenizer: bad\n  json here"))
    assert rc == 2
    assert err == "plmkit train: error: m: cannot load a tokenizer: bad json here\n"


def test_keyboard_interrupt_exit_130(capsys, monkeypatch, tmp_path):
    rc, err = _library_error(capsys, monkeypatch, tmp_path, KeyboardInterrupt())
    assert rc == 130 and err == "plmkit train: interrupted\n"
