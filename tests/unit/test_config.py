"""Typed configuration: defaults < YAML < overrides, dotted and flat keys, coercion, errors."""

from __future__ import annotations

import pytest

from plmkit.config import (
    LoopConfig,
    PretrainConfig,
    TrainConfig,
    build_config,
    check_applicable,
    inapplicable,
    parse_overrides,
    to_dict,
    valid_keys,
    without_inapplicable,
)
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
    [
        ("epochs", "three"),
        ("epochs", "2.5"),
        ("lr", "fast"),
        ("progress", "maybe"),
        ("max_length", "1e9x"),
        ("head_tokens", "many"),
        ("dropout", "high"),
    ],
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
        "lr": "1e-4",
        "epochs": "2",
        "model": "a=b",
        "encoding": "",
    }
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


# --- enumerated options: Literal types, checked by build_config -----------------------------------------------------

ENUMS = [
    (TrainConfig, "truncation", ("head", "tail", "head_tail")),
    (TrainConfig, "mode", ("finetune", "partial", "features")),
    (
        TrainConfig,
        "head",
        (
            "cls",
            "pool",
            "textcnn",
            "rnn_cnn",
            "softmax",
            "crf",
            "bilstm_crf",
            "mlp",
            "bilstm",
            "esim",
            "span",
            "multi_span",
        ),
    ),
    (TrainConfig, "pooling", ("mean", "max", "mean_max")),
    (TrainConfig, "word_fusion", ("none", "add", "concat")),
    (TrainConfig, "keywords", ("none", "tfidf", "textrank")),
    (TrainConfig, "unit_tokens", ("auto", "word", "piece")),
    (TrainConfig, "features.feature_cache", ("disk", "memory")),
    (TrainConfig, "loop.schedule", ("linear", "constant", "stlr")),
    (TrainConfig, "loop.mixed_precision", ("no", "fp16", "bf16", "auto")),
    (PretrainConfig, "loop.schedule", ("linear", "constant", "stlr")),
    (PretrainConfig, "loop.mixed_precision", ("no", "fp16", "bf16", "auto")),
    (PretrainConfig, "albert.sharing", ("all", "attention", "ffn", "none")),
    (PretrainConfig, "elmo.token_encoder", ("embedding", "char_cnn")),
]
ENUM_IDS = [f"{cls.__name__}.{key}" for cls, key, _ in ENUMS]


def _get(cfg, key: str):
    for name in key.split("."):
        cfg = getattr(cfg, name)
    return cfg


def _nested_yaml(key: str, value: str) -> str:
    *outer, last = key.split(".")
    return "".join(f"{'  ' * i}{name}:\n" for i, name in enumerate(outer)) + f"{'  ' * len(outer)}{last}: {value}\n"


def _literal_keys(cls: type, prefix: str = "") -> set[str]:
    """Every key whose type is a Literal, alone or in a union (with None, with int)."""
    import dataclasses
    import typing

    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            keys |= _literal_keys(typ, prefix + f.name + ".")
        elif typing.Literal in (typing.get_origin(typ), *map(typing.get_origin, typing.get_args(typ))):
            keys.add(prefix + f.name)
    return keys


def test_every_literal_key_is_tested_here():
    for cls in (TrainConfig, PretrainConfig):
        extra = {"features.layers"} if cls is TrainConfig else set()  # Literal | int: its own tests below
        assert _literal_keys(cls) == {key for c, key, _ in ENUMS if c is cls} | extra


@pytest.mark.parametrize("cls, key, values", ENUMS, ids=ENUM_IDS)
def test_enum_accepts_every_value_from_command_line_and_yaml(tmp_path, cls, key, values):
    for value in values:
        assert _get(build_config(cls, overrides={key: value}), key) == value
        assert _get(build_config(cls, _yaml(tmp_path, _nested_yaml(key, f'"{value}"'))), key) == value
        assert _get(build_config(cls, overrides={key.split(".")[-1]: value}), key) == value  # the flat key


@pytest.mark.parametrize("cls, key, values", ENUMS, ids=ENUM_IDS)
def test_enum_rejects_a_bad_value_listing_the_valid_ones(tmp_path, cls, key, values):
    with pytest.raises(ConfigError) as info:
        build_config(cls, overrides={key: "bogus"})
    assert str(info.value) == f"command line: {key}: 'bogus' is not one of: {', '.join(values)}"
    path = _yaml(tmp_path, _nested_yaml(key, "bogus"))
    with pytest.raises(ConfigError) as info:
        build_config(cls, path)
    assert str(info.value) == f"{path}: {key}: 'bogus' is not one of: {', '.join(values)}"


@pytest.mark.parametrize("cls, key, values", ENUMS, ids=ENUM_IDS)
def test_enum_defaults_are_valid(cls, key, values):
    assert _get(cls(), key) in values or (key == "head" and _get(cls(), key) is None)


def test_mixed_precision_typo_names_key_value_and_choices():
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, overrides={"mixed_precision": "bf17"})
    assert str(info.value) == "command line: mixed_precision: 'bf17' is not one of: no, fp16, bf16, auto"


@pytest.mark.parametrize("value", ["Head", "head ", "1", "none", ""])
def test_enum_is_exact(value):
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, overrides={"truncation": value})
    assert f"truncation: {value!r} is not one of: head, tail, head_tail" in str(info.value)


def test_enum_from_yaml_of_another_type_names_the_file(tmp_path):
    path = _yaml(tmp_path, "truncation: 3\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert str(info.value) == f"{path}: truncation: 3 is not one of: head, tail, head_tail"


def test_unquoted_yaml_no_is_the_choice_no(tmp_path):
    """YAML 1.1 reads `no` as False; for mixed_precision it can only mean the choice `no`."""
    cfg = build_config(TrainConfig, _yaml(tmp_path, "loop:\n  mixed_precision: no\n"))
    assert cfg.loop.mixed_precision == "no"
    path = _yaml(tmp_path, "truncation: yes\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    message = str(info.value)
    assert str(path) in message and "truncation: True is not one of: head, tail, head_tail" in message
    assert "quote" in message


@pytest.mark.parametrize("value", ["none", "null", ""])
def test_optional_enum_back_to_none(tmp_path, value):
    assert build_config(TrainConfig, overrides={"head": "crf"}).head == "crf"
    assert build_config(TrainConfig, _yaml(tmp_path, "head: crf\n"), {"head": value}).head is None
    assert build_config(TrainConfig, _yaml(tmp_path, "head: null\n")).head is None


def test_registry_names_stay_plain_strings():
    """task and arch are registry names, refused with the known ones where the run starts (api, pretrain.archs)."""
    assert build_config(TrainConfig, overrides={"task": "ner"}).task == "ner"
    assert build_config(PretrainConfig, overrides={"arch": "gpt"}).arch == "gpt"


def test_literals_match_the_code_that_reads_them():
    """Each Literal lists what its consumer accepts: a value added there must be added here, and back."""
    import typing

    from plmkit.data.truncation import STRATEGIES
    from plmkit.data.units import UNIT_TOKENS
    from plmkit.keywords import METHODS as keyword_methods
    from plmkit.models import feature_heads, tagger
    from plmkit.models.albert import SHARING_MODES
    from plmkit.models.elmo import TOKEN_ENCODERS
    from plmkit.models.pooled import POOLINGS
    from plmkit.tasks.classification import SEQUENCE_HEADS
    from plmkit.tasks.qa import QA_HEADS
    from plmkit.train.optim import SCHEDULES

    def values(cls, key):
        cls_hints = typing.get_type_hints(cls)
        *outer, last = key.split(".")
        for name in outer:
            cls = cls_hints[name]
            cls_hints = typing.get_type_hints(cls)
        typ = cls_hints[last]
        args = typing.get_args(typ)
        lit = typ if typing.get_origin(typ) is typing.Literal else next(a for a in args if typing.get_origin(a))
        return set(typing.get_args(lit))

    assert values(TrainConfig, "truncation") == set(STRATEGIES)
    assert values(TrainConfig, "pooling") == set(POOLINGS)
    assert values(TrainConfig, "keywords") == {"none", *keyword_methods}
    assert values(TrainConfig, "unit_tokens") == set(UNIT_TOKENS)
    assert values(TrainConfig, "loop.schedule") == set(SCHEDULES)
    assert values(TrainConfig, "head") == {
        *SEQUENCE_HEADS,
        *tagger.HEADS,
        *feature_heads.SEQUENCE_HEADS,
        *feature_heads.PAIR_HEADS,
        *QA_HEADS,
    }
    assert values(PretrainConfig, "albert.sharing") == set(SHARING_MODES)
    assert values(PretrainConfig, "elmo.token_encoder") == set(TOKEN_ENCODERS)
    assert values(TrainConfig, "features.layers") == {"mix", "last"}


# --- layers (mode features): mix, last or a layer number >= 0 ------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("mix", "mix"), ("last", "last"), ("0", 0), ("3", 3), ("12", 12)])
def test_layers_accepted_from_command_line(value, expected):
    got = build_config(TrainConfig, overrides={"layers": value}).features.layers
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "text, expected", [("mix", "mix"), ("last", "last"), ("0", 0), ("2", 2), ('"2"', 2), ("2.0", 2)]
)
def test_layers_accepted_from_yaml(tmp_path, text, expected):
    got = build_config(TrainConfig, _yaml(tmp_path, f"layers: {text}\n")).features.layers
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("value", ["middle", "-1", "1.5", "true", "first", "Mix", ""])
def test_layers_rejected_from_command_line(value):
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, overrides={"layers": value})
    assert str(info.value) == f"command line: layers: {value!r} is not one of: mix, last or int >= 0"


@pytest.mark.parametrize(
    "text, shown",
    [("-1", "-1"), ("2.5", "2.5"), ("true", "True"), ("middle", "'middle'"), ("null", "None"), ("[1, 2]", "[1, 2]")],
)
def test_layers_rejected_from_yaml_names_the_file(tmp_path, text, shown):
    path = _yaml(tmp_path, f"layers: {text}\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    assert str(info.value) == f"{path}: layers: {shown} is not one of: mix, last or int >= 0"


def test_layers_round_trip_through_to_dict():
    cfg = build_config(TrainConfig, overrides={"layers": "4", "mode": "features"})
    assert build_config(TrainConfig, overrides=to_dict(cfg)) == cfg


def test_invalid_yaml_is_one_line_naming_file_and_line(tmp_path):
    path = _yaml(tmp_path, "max_length: 64\nloop: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, path)
    message = str(info.value)
    assert message.startswith(f"{path}:3:1: not valid YAML: ") and "\n" not in message


def _options(task: str) -> tuple[str, ...]:
    """The task-specific options the registered task reads."""
    from plmkit.registry import TASKS
    from plmkit.train.run import tasks

    tasks()
    return TASKS.get(task).options


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"mode": "features", "head_lr": "1e-3"},
            "head_lr: applies to modes finetune and partial [(]finetune.head_lr[)], not to task classification, "
            "mode features$",
        ),
        (
            {"mode": "features", "keep_layers": "2"},
            "keep_layers: .*, mode features; in mode features, layers=N reads layer N$",
        ),
        ({"layers": "3"}, "layers: applies to mode features [(]features.layers[)], not to task classification, mode"),
        ({"mode": "partial", "cache_dir": "/tmp/x"}, "cache_dir: applies to mode features"),
        (
            {"task": "ner", "window_overlap": "8", "truncation": "tail"},
            "truncation: task ner does not read it [(]it reads window_overlap, unit_tokens, bigram_buckets, bigram_dim",
        ),
        (
            {"window_overlap": "8"},
            "window_overlap: task classification does not read it "
            "[(]it reads truncation, head_tokens, pooling, word_fusion, word_buckets, word_dim, "
            "keywords, keywords_top[)]",
        ),
        ({"task": "cws", "mode": "features", "bigram_buckets": "64"}, "bigram_buckets: applies to modes finetune and"),
    ],
)
def test_an_option_that_does_nothing_here_is_an_error(overrides, message):
    cfg = build_config(TrainConfig, None, overrides)
    with pytest.raises(ConfigError, match=message):
        check_applicable(cfg, _options(cfg.task))


def test_mode_options_live_in_their_sections_and_flat_keys_reach_them(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("mode: features\nfeatures:\n  layers: 2\n  feature_cache: memory\n", encoding="utf-8")
    cfg = build_config(TrainConfig, path, {"cache_dir": "/tmp/c"})
    assert (cfg.features.layers, cfg.features.feature_cache, cfg.features.cache_dir) == (2, "memory", "/tmp/c")
    assert build_config(TrainConfig, None, {"finetune.head_lr": "3e-3"}).finetune.head_lr == 3e-3
    assert build_config(TrainConfig, None, {"head_lr": "3e-3"}).finetune.head_lr == 3e-3
    check_applicable(cfg, _options("classification"))


def test_options_under_a_switch_that_is_off_are_not_errors():
    """A recipe's sub-options stay valid when the command line turns their switch off."""
    cfg = build_config(
        TrainConfig,
        None,
        {"task": "ner", "bigram_buckets": "0", "bigram_dim": "8", "gradual_unfreeze": "false", "unfreeze_every": "10"},
    )
    check_applicable(cfg, _options("ner"))
    assert inapplicable(cfg, _options("ner")) == {}
    assert inapplicable(build_config(TrainConfig, None, {"mode": "features", "unfreeze_every": "10"}), ()) == {}


def test_without_inapplicable_resets_only_what_does_nothing():
    given = {"mode": "features", "head_lr": "1e-3", "layer_lr_decay": "0.9", "layers": "2", "lr": "1e-2"}
    cfg = build_config(TrainConfig, None, given | {"window_overlap": "8"})
    reset = without_inapplicable(cfg, _options("classification"))
    assert reset == {"head_lr": None, "layer_lr_decay": 1.0, "window_overlap": 32}
    fixed = build_config(TrainConfig, None, given | reset)
    check_applicable(fixed, _options("classification"))
    assert (fixed.features.layers, fixed.loop.lr) == (2, 1e-2)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("batch_size", "0", "batch_size: expected int >= 1, got 0"),
        ("batch_size", "-4", "batch_size: expected int >= 1, got -4"),
        ("grad_accum", "0", "grad_accum: expected int >= 1, got 0"),
        ("eval_batch_size", "0", "eval_batch_size: expected int >= 1, got 0"),
        ("epochs", "0", "epochs: expected int >= 1, got 0"),
        ("epochs", "-1", "epochs: expected int >= 1, got -1"),
        ("lr", "-1", "lr: expected a number > 0, got -1.0"),
        ("lr", "0", "lr: expected a number > 0, got 0.0"),
        ("warmup_ratio", "5", "warmup_ratio: expected a number <= 1, got 5.0"),
        ("dropout", "2", "dropout: expected a number < 1, got 2.0"),
        ("dropout", "-0.1", "dropout: expected float >= 0, got -0.1"),
        ("log_steps", "0", "log_steps: expected int >= 1, got 0"),
        ("max_length", "1", "max_length: expected int >= 2, got 1"),
    ],
)
def test_numbers_out_of_range_name_the_key_the_bound_and_the_value(key, value, message):
    """Each once a traceback deep in training (batch_size=0: ZeroDivisionError) or silently accepted
    (epochs=0 saved an untrained model as if trained; warmup_ratio=5)."""
    with pytest.raises(ConfigError) as info:
        build_config(TrainConfig, None, {key: value})
    assert str(info.value) == f"command line: {message}"


def test_numbers_in_range_at_their_bounds_are_taken():
    cfg = build_config(
        TrainConfig, None, {"epochs": "1", "batch_size": "1", "lr": "1e-9", "warmup_ratio": "1", "dropout": "0"}
    )
    assert (cfg.loop.epochs, cfg.loop.batch_size, cfg.loop.warmup_ratio, cfg.dropout) == (1, 1, 1.0, 0.0)


def test_a_key_given_twice_is_an_error_on_the_command_line_in_yaml_and_across_spellings(tmp_path):
    with pytest.raises(ConfigError, match=r"^lr: given twice on the command line \('1e-4' and '2e-4'\)$"):
        parse_overrides(["lr=1e-4", "epochs=2", "lr=2e-4"])
    path = _yaml(tmp_path, "lr: 1e-4\nepochs: 2\nlr: 2e-4\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml:3:1: not valid YAML: key 'lr' given twice \(first on line 1\)"):
        build_config(TrainConfig, path)
    nested = _yaml(tmp_path, "loop:\n  lr: 1e-4\n  lr: 2e-4\n")
    with pytest.raises(ConfigError, match="key 'lr' given twice"):
        build_config(TrainConfig, nested)
    both = _yaml(tmp_path, "lr: 1e-4\nloop:\n  lr: 2e-4\n")  # a flat and a dotted spelling of one key
    with pytest.raises(ConfigError, match=r"given twice \(also as 'lr'\)"):
        build_config(TrainConfig, both)
    with pytest.raises(ConfigError, match=r"^command line: loop.lr: given twice \(also as 'lr'\)$"):
        build_config(TrainConfig, None, {"lr": "1e-4", "loop.lr": "2e-4"})
    cfg = build_config(TrainConfig, _yaml(tmp_path, "lr: 1e-4\n"), {"lr": "3e-4"})  # a later layer overrides
    assert cfg.loop.lr == 3e-4
