"""A task added from outside the package: one record, registered by name, and the one runner trains,
evaluates, predicts and reloads it in every mode without a line changed anywhere else."""

from __future__ import annotations

import dataclasses

import pytest

from plmkit import api
from plmkit.data.examples import Example
from plmkit.errors import DataError
from plmkit.registry import TASKS
from plmkit.train.run import tasks

NAME = "fasttext-test"  # fastText's format: `__label__X text` a line
FAST = {"progress": False, "batch_size": 16, "mixed_precision": "no", "log_steps": 1}


def read_fasttext(spec: str, cfg, labelled: bool = True) -> list[Example]:
    examples = []
    with open(spec, encoding=cfg.encoding) as f:
        for n, line in enumerate(f, 1):
            head, _, text = line.rstrip("\n").partition(" ")
            if labelled and not head.startswith("__label__"):
                raise DataError("expected __label__NAME before the text", path=spec, line=n, field="label")
            examples.append(Example(text, None, head.removeprefix("__label__") if labelled else None, f"{spec}:{n}"))
    return examples


@pytest.fixture(scope="module")
def fasttext_task():
    tasks()
    TASKS.add(NAME, dataclasses.replace(TASKS.get("classification"), name=NAME, read=read_fasttext))
    yield TASKS.get(NAME)
    TASKS._items.pop(NAME)  # the other tests see the shipped tasks only


@pytest.fixture(scope="module")
def fasttext_files(tmp_path_factory):
    from conftest import toy_rows

    d = tmp_path_factory.mktemp("fasttext")
    rows = toy_rows(240, seed=1)  # the rows of conftest's toy_data, which these settings learn
    for name, part in (("train", rows[:160]), ("dev", rows[160:200])):
        (d / f"{name}.txt").write_text("".join(f"__label__{y} {t}\n" for t, y in part), encoding="utf-8")
    return d


@pytest.mark.parametrize("mode", ["finetune", "partial", "features"])
def test_a_task_registered_outside_trains_evaluates_and_predicts(
    fasttext_task, fasttext_files, tiny_model_dir, tmp_path, mode
):
    # 5 epochs: at 3, one seed in four stayed at 0.5-0.8 on these rows (measured over seeds 42, 1, 2, 3)
    overrides = {"task": NAME, "model": str(tiny_model_dir), "mode": mode, "epochs": 5, "lr": 3e-3} | FAST
    if mode == "partial":
        overrides["freeze_layers"] = 1
    if mode == "features":
        overrides |= {"epochs": 8, "lr": 5e-3, "feature_cache": "memory"}
    dev = str(fasttext_files / "dev.txt")
    result = api.train(str(fasttext_files / "train.txt"), tmp_path / "m", dev=dev, overrides=overrides)
    assert result["dev_metrics"]["dev_accuracy"] >= 0.9
    scores = api.evaluate(tmp_path / "m", dev)
    assert scores["accuracy"] == pytest.approx(result["dev_metrics"]["dev_accuracy"])
    assert [api.predict(tmp_path / "m", text=t)[0]["label"] for t in ("好棒赞美的东西", "差坏烂糟的东西")] == [
        "good",
        "bad",
    ]


def test_its_reader_errors_name_file_line_and_field(fasttext_task, tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("__label__good 好\nno label here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.txt:2.*label"):
        api.train(str(bad), tmp_path / "m", overrides={"task": NAME, "model": str(tiny_model_dir)})
