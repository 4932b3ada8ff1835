"""Typed configuration: defaults < YAML < overrides, dotted and flat keys, coercion, errors."""

from __future__ import annotations

import pytest

from plmkit.config import LoopConfig, PretrainConfig, TrainConfig, build_config, parse_overrides, to_dict, valid_keys
from plmkit.errors import ConfigError


def _yaml(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_yaml_or_overrides():
    cfg = build_config(TrainConfig)
    assert cfg == TrainConfig()
    assert (cfg.max_length, cfg.truncation, cfg.loop.lr, cfg.loop.epochs) == (128, "head", 5e-5, 3)


def test_pretrain_defaults_have_their_own_loop():
    cfg = build_config(PretrainConfig)
    assert (cfg.loop.epochs, cfg.loop.batch_size, cfg.loop.lr, cfg.loop.warmup_ratio) == (10, 64, 5e-4, 0.06)
    assert cfg.loop.seed == LoopConfig().seed


def test_precedence_defaults_yaml_overrides(tmp_path):
    path = _yaml(tmp_path, "max_length: 64\ntruncation: tail\nloop:\n  lr: 1.0e-3\n  epochs: 7\n")
    cfg = build_config(TrainConfig, path, {"max_length": "32", "loop.epochs": "2"})
    assert cfg.max_length == 32  # override beats YAML
    assert cfg.loop.epochs == 2  # override beats YAML (nested)
    assert cfg.truncation == "tail"  # YAML beats default
    assert cfg.loop.lr == pytest.approx(1e-3)  # YAML beats default (nested)
    assert cfg.loop.batch_size == 32  # default untouched
    assert cfg.task == "classification"


def test_yaml_flat_and_dotted_keys(tmp_path):
    path = _yaml(tmp_path, "lr: 2.0e-5\nloop.batch_size: 8\n")
    cfg = build_config(TrainConfig, path)
    assert cfg.loop.lr == pytest.approx(2e-5)
    assert cfg.loop.batch_size == 8


@pytest.mark.parametrize("key", ["loop.lr", "lr"])
def test_dotted_and_flat_override_set_loop_lr(key):
    cfg = build_config(TrainConfig, overrides={key: "1e-4"})
    assert cfg.loop.lr == pytest.approx(1e-4)
    assert isinstance(cfg.loop.lr, float)


def test_flat_key_for_pretrain_config():
    cfg = build_config(PretrainConfig, overrides={"seed": "7", "whole_word": "true"})
    assert cfg.loop.seed == 7 and cfg.whole_word is True


def test_defaults_not_shared_between_builds():
    a = build_config(TrainConfig, overrides={"lr": "0.5"})
    b = build_config(TrainConfig)
    assert a.loop.lr == 0.5 and b.loop.lr == 5e-5


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, overrides={"nosuchkey": "1"})
    message = str(info.value)
    assert "nosuchkey" in message
    for key in ("max_length", "truncation", "loop.lr", "loop.epochs", "head_tokens"):
        assert key in message


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = _yaml(tmp_path, "loop:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    message = str(info.value)
    assert str(path) in message and "loop.learning_rate" in message and "loop.lr" in message


def test_valid_keys():
    keys = valid_keys(TrainConfig)
    assert "loop.lr" in keys and "max_length" in keys and "head_tokens" in keys
    assert "lr" not in keys and "loop" not in keys
    assert len(keys) == len(set(keys))
    assert set(valid_keys(PretrainConfig)) >= {"mask_rate", "whole_word", "loop.epochs"}


@pytest.mark.parametrize(
    "key, value, attr, expected",
    [
        ("epochs", "5", ("loop", "epochs"), 5),
        ("max_length", "256", ("max_length",), 256),
        ("lr", "3e-5", ("loop", "lr"), 3e-5),
        ("warmup_ratio", "0", ("loop", "warmup_ratio"), 0.0),
        ("progress", "false", ("loop", "progress"), False),
        ("progress", "False", ("loop", "progress"), False),
        ("progress", "true", ("loop", "progress"), True),
        ("trust_remote_code", "yes", ("trust_remote_code",), True),
        ("trust_remote_code", "0", ("trust_remote_code",), False),
        ("head_tokens", "none", ("head_tokens",), None),
        ("head_tokens", "64", ("head_tokens",), 64),
        ("dropout", "0.2", ("dropout",), 0.2),
        ("dropout", "null", ("dropout",), None),
        ("truncation", "head_tail", ("truncation",), "head_tail"),
    ],
)
def test_coercion_of_strings(key, value, attr, expected):
    cfg = build_config(TrainConfig, overrides={key: value})
    got = cfg
    for name in attr:
        got = getattr(got, name)
    assert got == expected
    assert type(got) is type(expected)


def test_yaml_native_types(tmp_path):
    path = _yaml(tmp_path, "head_tokens: null\ndropout: 0.3\nloop:\n  progress: false\n  epochs: 4.0\n  lr: 1\n")
    cfg = build_config(TrainConfig, path, {"head_tokens": "12"})
    assert cfg.head_tokens == 12 and cfg.dropout == 0.3
    assert cfg.loop.progress is False
    assert cfg.loop.epochs == 4 and type(cfg.loop.epochs) is int
    assert cfg.loop.lr == 1.0 and type(cfg.loop.lr) is float


def test_optional_back_to_none_by_override(tmp_path):
    path = _yaml(tmp_path, "head_tokens: 100\n")
    assert build_config(TrainConfig, path).head_tokens == 100
    assert build_config(TrainConfig, path, {"head_tokens": "None"}).head_tokens is None


@pytest.mark.parametrize(
    "key, value",
    [("epochs", "three"), ("epochs", "2.5"), ("lr", "fast"), ("progress", "maybe"), ("max_length", "1e9x"),
     ("head_tokens", "many"), ("dropout", "high")],
)
def test_bad_types_name_the_key(key, value):
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, overrides={key: value})
    message = str(info.value)
    assert key in message and repr(value) in message


def test_bad_type_in_yaml_names_key_and_file(tmp_path):
    path = _yaml(tmp_path, "loop:\n  batch_size: lots\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert "loop.batch_size" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml(tmp_path, text):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert str(path) in str(info.value) and "mapping" in str(info.value)


def test_invalid_yaml(tmp_path):
    path = _yaml(tmp_path, "loop: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert str(path) in str(info.value)


def test_empty_yaml_is_defaults(tmp_path):
    assert build_config(TrainConfig, _yaml(tmp_path, "")) == TrainConfig()


def test_missing_yaml(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert str(path) in str(info.value) and "not found" in str(info.value)


def test_parse_overrides():
    assert parse_overrides(["lr=1e-4", " epochs = 2 ", "model=a=b", "encoding="]) == {
        "lr": "1e-4", "epochs": "2", "model": "a=b", "encoding": ""}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("bad", ["lr", "progress", ""])
def test_parse_overrides_without_equals(bad):
    with pytest.raises(ConfigError) as info:
        parse_overrides(["epochs=1", bad])
    assert repr(bad) in str(info.value)


def test_to_dict_round_trip():
    cfg = build_config(TrainConfig, overrides={"lr": "0.01", "max_length": "64"})
    d = to_dict(cfg)
    assert d["loop"]["lr"] == 0.01 and d["max_length"] == 64
    assert build_config(TrainConfig, overrides=d) == cfg


def test_yaml_null_for_a_non_optional_str_is_an_error(tmp_path):
    """`model:` left blank in a recipe must not become the model name "None"."""
    path = _yaml(tmp_path, "model:\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert "model" in str(info.value)


@pytest.mark.parametrize("value", ["true", "yes"])
def test_yaml_bool_for_an_int_is_an_error(tmp_path, value):
    """`epochs: yes` is a mistake, not one epoch: YAML booleans must not pass as int 1/0."""
    path = _yaml(tmp_path, f"loop:\n  epochs: {value}\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert "loop.epochs" in str(info.value)
