"""k-fold training on a tiny BERT: folds partition the data and are reproducible, every record gets one
out-of-fold prediction, the ensemble is exactly the average (or the vote) of the folds' predictions,
and a killed run redoes only the folds that did not finish."""

from __future__ import annotations

import json

import pytest
import torch

from plmkit.data.examples import Example
from plmkit.errors import ConfigError
from plmkit.experiments.crossval import cross_validate, fold_indices

FAST = {"epochs": 3, "lr": 3e-3, "batch_size": 16, "progress": False, "mixed_precision": "no", "log_steps": 1}


def test_folds_partition_the_records_reproducibly_and_stratify():
    records = [Example(str(i), label="a" if i % 4 else "b") for i in range(40)]
    folds = fold_indices(records, 4, seed=7)
    assert sorted(i for f in folds for i in f) == list(range(40))
    assert folds == fold_indices(records, 4, seed=7) and folds != fold_indices(records, 4, seed=8)
    b_per_fold = [sum(records[i].label == "b" for i in f) for f in folds]
    assert sum(b_per_fold) == 10 and set(b_per_fold) <= {2, 3}  # stratified: 10 b's over 4 folds
    unlabelled = fold_indices([Example(str(i)) for i in range(10)], 3, seed=0)  # plain k-fold
    assert sorted(len(f) for f in unlabelled) == [3, 3, 4]
    with pytest.raises(ConfigError, match="folds: 1"):
        fold_indices(records, 1, seed=0)


def test_mean_probabilities_and_vote_are_exact():
    from plmkit.tasks.classification import mean_probabilities
    from plmkit.tasks.tagging import vote

    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    expected = (a.softmax(-1) + b.softmax(-1)) / 2
    torch.testing.assert_close(mean_probabilities([a, b]).exp(), expected)
    assert vote([[["B", "O"]], [["B", "B"]], [["O", "B"]]]) == [["B", "B"]]
    assert vote([[["B", "O"]], [["O", "B"]]]) == [["B", "O"]]  # a tie: the earliest model's tag


def test_cross_validate_trains_each_fold_and_ensembles(tiny_model_dir, toy_data, tmp_path):
    out = tmp_path / "cv"
    kwargs = {"folds": 3, "test": str(toy_data["test"]), "overrides": FAST}
    result = cross_validate("classification", str(tiny_model_dir), str(toy_data["train"]), out, **kwargs)
    assert [f["fold"] for f in result["folds"]] == [1, 2, 3]
    assert sum(f["held_out"] for f in result["folds"]) == 160 and all(f["train"] + f["held_out"] == 160
                                                                        for f in result["folds"])  # fmt: skip
    oof = [json.loads(line) for line in (out / "oof.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(oof) == 160 and {r["fold"] for r in oof} == {1, 2, 3}
    assert result["test_ensemble"]["accuracy"] >= 0.9 and len(result["test_per_fold"]) == 3
    # the ensemble is the average of the folds' probabilities, row by row
    from plmkit.data.readers import read_examples
    from plmkit.train.run import load, predictions

    test = read_examples(toy_data["test"])
    probs = torch.stack([predictions(load(out / f"fold-{k}"), test)[1].softmax(-1) for k in (1, 2, 3)]).mean(0)
    rows = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    names = load(out / "fold-1").labels.names
    got = torch.tensor([[r["probabilities"][n] for n in names] for r in rows])
    torch.testing.assert_close(got, probs, atol=1e-5, rtol=0)
    assert (out / "report.html").is_file()
    fold_row = next(line for line in (out / "report.md").read_text(encoding="utf-8").splitlines() if line[:4] == "| 1 ")
    assert fold_row.endswith(f"| {round(result['folds'][0]['seconds'])} |")  # whole seconds in the table

    # a run started again trains nothing that finished; a fold whose record is gone trains again
    (out / "fold-2" / "fold.json").unlink()
    before = {k: (out / f"fold-{k}" / "model.safetensors").stat().st_mtime_ns for k in (1, 3)}
    again = cross_validate("classification", str(tiny_model_dir), str(toy_data["train"]), out, **kwargs)
    assert {k: (out / f"fold-{k}" / "model.safetensors").stat().st_mtime_ns for k in (1, 3)} == before
    assert again["folds"][0] == result["folds"][0] and len(again["folds"]) == 3


def test_each_fold_fits_its_keywords_and_reads_the_test_set_with_them(tiny_model_dir, toy_data, tmp_path):
    from plmkit.data.readers import read_examples
    from plmkit.tasks.classification import class_keywords
    from plmkit.train.run import load, predictions

    out = tmp_path / "cv-kw"
    overrides = FAST | {"keywords": "tfidf", "keywords_top": 6}
    cross_validate("classification", str(tiny_model_dir), str(toy_data["train"]), out, folds=2,
                   test=str(toy_data["test"]), overrides=overrides)  # fmt: skip
    records = read_examples(toy_data["train"])
    fitted = []
    for k, held in enumerate(fold_indices(records, 2, seed=42), 1):
        rest = [r for i, r in enumerate(records) if i not in set(held)]
        fitted.append(load(out / f"fold-{k}").labels.keywords)
        assert fitted[-1] == class_keywords(rest, "tfidf", 6)
    assert fitted[0] != fitted[1]  # the folds' training parts give different keywords
    # the ensemble averages each fold's probabilities on the test set read with that fold's own keywords
    test = read_examples(toy_data["test"])
    probs = torch.stack([predictions(load(out / f"fold-{k}"), test)[1].softmax(-1) for k in (1, 2)]).mean(0)
    rows = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    names = load(out / "fold-1").labels.names
    got = torch.tensor([[r["probabilities"][n] for n in names] for r in rows])
    torch.testing.assert_close(got, probs, atol=1e-6, rtol=0)  # read with the shared labels: 3e-5 off
