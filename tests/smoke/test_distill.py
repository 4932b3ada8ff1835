"""Distillation on the tiny BERT: a student of fewer layers learns from a teacher's soft labels."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_rows
from safetensors.torch import save_file

from plmkit import api
from plmkit.data.examples import Example
from plmkit.errors import ConfigError
from plmkit.train.distill import NO_LABEL, augmented, distill_loss, teacher_outputs
from plmkit.train.run import load, predictions

FAST = {"progress": "false", "batch_size": "16", "lr": "3e-3", "log_steps": "1", "mixed_precision": "no"}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The teacher's outputs are cached under $PLMKIT_CACHE: each test its own."""
    monkeypatch.setenv("PLMKIT_CACHE", str(tmp_path / "plmkit-cache"))


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, toy_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "teacher"
    overrides = {"model": str(tiny_model_dir), "epochs": "6", **FAST}
    api.train(str(toy_data["train"]), out, dev=str(toy_data["dev"]), overrides=overrides)
    return out


def test_loss_is_the_soft_term_plus_the_gold_term():
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    same = distill_loss(scores, {"teacher": teacher, "labels": torch.tensor([0, NO_LABEL])}, 2.0, 1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)  # the student agrees with its teacher: no soft loss
    hard = distill_loss(scores, {"teacher": teacher, "labels": torch.tensor([0, NO_LABEL])}, 2.0, 0.0)
    assert float(hard) == pytest.approx(float(torch.nn.functional.cross_entropy(scores[:1], torch.tensor([0]))))
    flipped = distill_loss(scores, {"teacher": teacher.flip(-1), "labels": torch.tensor([0, 1])}, 2.0, 1.0)
    assert float(flipped) > 0.5


def test_a_one_layer_student_learns_its_teacher(teacher, toy_data, tmp_path):
    unlabeled = tmp_path / "more.txt"  # one text a line, as pretraining corpora are
    unlabeled.write_text("\n".join(t for t, _ in toy_rows(50, seed=11)), encoding="utf-8")

    def student(name: str, alpha: float) -> dict:
        overrides = {"epochs": "4", **FAST}
        return api.distill(teacher, "layers:1", str(toy_data["train"]), tmp_path / name, dev=str(toy_data["dev"]),
                           overrides=overrides, alpha=alpha, unlabeled=[str(unlabeled)])  # fmt: skip

    result = student("soft", 1.0)
    meta = json.loads((tmp_path / "soft" / "plmkit.json").read_text())
    config = json.loads((tmp_path / "soft" / "config.json").read_text())
    assert config.get("num_hidden_layers", config.get("encoder_config", {}).get("num_hidden_layers")) == 1
    assert meta["task"] == "classification" and meta["labels"] == ["bad", "good"]
    assert result["dev_metrics"]["dev_accuracy"] >= 0.95, result
    train_texts = {t for t, _ in toy_rows(240, seed=1)[:160]}
    assert result["unlabeled_examples"] == len({t for t, _ in toy_rows(50, seed=11)} - train_texts)
    assert api.evaluate(tmp_path / "soft", str(toy_data["test"]))["accuracy"] >= 0.95
    student("gold", 0.0)  # the same student on the gold labels alone
    # on texts neither saw, the distilled student is closer to its teacher's distribution
    records = [Example(text=t) for t, _ in toy_rows(60, seed=9)]
    target = logits(teacher, records).softmax(-1)
    kl = lambda name: float(F.kl_div(logits(tmp_path / name, records).log_softmax(-1), target, reduction="batchmean"))  # noqa: E731, E501
    assert kl("soft") < kl("gold") / 2, (kl("soft"), kl("gold"))


def logits(model, records) -> torch.Tensor:
    loaded = load(model)
    return predictions(loaded, loaded.task.unlabelled(records))[1]  # (N, C)


def test_distill_refuses_what_it_cannot_do(teacher, toy_data, toy_ner, tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="layers:N takes N in \\[1, 2\\]"):
        api.distill(teacher, "layers:3", str(toy_data["train"]), tmp_path / "a", overrides=FAST)
    with pytest.raises(ConfigError, match="layers:N or bottom:N .* or a model"):
        api.distill(teacher, "layers:x", str(toy_data["train"]), tmp_path / "b", overrides=FAST)
    ner = tmp_path / "ner"
    api.train(
        str(toy_ner["train"]), ner, overrides={"task": "ner", "model": str(tiny_model_dir), "epochs": "1", **FAST}
    )
    with pytest.raises(ConfigError, match="a fine-tuned teacher of classification, pair, regression"):
        api.distill(ner, "layers:1", str(toy_ner["train"]), tmp_path / "c", overrides=FAST)


def test_vector_term_pulls_the_student_sentence_vector_to_the_teachers():
    scores, teacher = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    batch = {"teacher": teacher, "labels": torch.tensor([0]), "teacher_vector": torch.tensor([[1.0, -1.0, 0.5]])}
    base = float(distill_loss(scores, batch, 2.0, 1.0))
    same = distill_loss(scores, batch, 2.0, 1.0, torch.tensor([[1.0, -1.0, 0.5]]), vector_weight=3.0)
    apart = distill_loss(scores, batch, 2.0, 1.0, torch.tensor([[0.0, -1.0, 0.5]]), vector_weight=3.0)
    assert float(same) == pytest.approx(base, abs=1e-6)
    assert float(apart) == pytest.approx(base + 3.0 * (1.0 / 3), abs=1e-6)  # weight x mean squared difference


def test_augmented_copies_are_seeded_spans_with_some_characters_replaced():
    texts = ["这家酒店的房间很干净服务也好", "质量太差了不会再买", "好"]
    first = augmented(texts, 3, random.Random(7))
    assert first == augmented(texts, 3, random.Random(7)) != augmented(texts, 3, random.Random(8))
    assert len(first) == 9
    alphabet = set("".join(texts))
    for text, copies in zip(texts, (first[0:3], first[3:6], first[6:9])):
        for copy in copies:
            assert set(copy) <= alphabet and round(0.6 * len(text)) <= len(copy) <= len(text)
    assert any(c not in texts[0] for c in first[:3]), "a copy is a changed text, not only a span"


def test_student_with_augmented_texts_and_the_vector_term_learns_its_teacher(teacher, toy_data, tmp_path):
    overrides = {"epochs": "3", **FAST}
    result = api.distill(teacher, "layers:1", str(toy_data["train"]), tmp_path / "s", dev=str(toy_data["dev"]),
                         overrides=overrides, alpha=1.0, vector_weight=1.0, augment=2)  # fmt: skip
    assert result["augment"] == 2 and result["vector_weight"] == 1.0
    assert result["unlabeled_examples"] > 160  # two noisy copies of each of the 160 training texts, less repeats
    assert result["dev_metrics"]["dev_accuracy"] >= 0.95, result
    api.distill(teacher, "layers:1", str(toy_data["train"]), tmp_path / "plain", dev=str(toy_data["dev"]),
                overrides=overrides, alpha=1.0, augment=2)  # fmt: skip
    # on texts neither saw, the student with the vector term ends with sentence vectors nearer its teacher's
    records = [Example(text=t) for t, _ in toy_rows(40, seed=9)]
    target = vectors(teacher, records)
    pulled, plain = (float(F.mse_loss(vectors(tmp_path / n, records), target)) for n in ("s", "plain"))
    assert pulled < plain / 2, (pulled, plain)


def vectors(model, records) -> torch.Tensor:
    """The sentence vectors (N, H) a saved classifier's head reads, for `records`."""
    return teacher_outputs(load(model), records)[1]


def test_teacher_outputs_are_cached_by_what_the_teacher_reads(teacher, tmp_path):
    loaded = load(teacher)
    records = [Example(text=t) for t, _ in toy_rows(30, seed=4)]
    scores, vecs = teacher_outputs(loaded, records, tmp_path / "cache")
    assert scores.shape == (30, 2) and vecs.shape == (30, 32)
    assert torch.allclose(scores, logits(teacher, records).float(), atol=1e-5)  # the scores predict gives
    (cached,) = (tmp_path / "cache").iterdir()
    again = teacher_outputs(loaded, records, tmp_path / "cache")  # read back, not recomputed
    assert torch.equal(again[0], scores) and torch.equal(again[1], vecs)
    save_file({"scores": scores + 1, "vectors": vecs}, str(cached))  # a changed file: it is the file that is read
    assert torch.equal(teacher_outputs(loaded, records, tmp_path / "cache")[0], scores + 1)
    other = teacher_outputs(loaded, records[:29], tmp_path / "cache")[0]  # other texts: another entry
    # computed afresh, in other batches (the last file's +1 is not read); batches pad differently, hence 1e-5
    assert torch.allclose(other, scores[:29], atol=1e-5) and len(list((tmp_path / "cache").iterdir())) == 2
