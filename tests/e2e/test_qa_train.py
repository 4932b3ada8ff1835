"""`--task qa` end to end on the tiny BERT: train on a SQuAD-shaped file, evaluate on JSONL, predict through
the CLI; a toy task the tiny model learns (the answer is the run of 子丑寅卯 in the context), with
unanswerable questions (SQuAD 2.0); multi_span (several answers) end to end."""

from __future__ import annotations

import json
import random

import pytest
from conftest import write_jsonl

from plmkit import api
from plmkit.cli import main
from plmkit.errors import ConfigError

FILLER, ANSWER = "好棒赞优美爱差坏的东西", "子丑寅卯"
FAST = {"progress": False, "batch_size": 16, "mixed_precision": "no", "log_steps": 1, "warmup_ratio": 0.0}


def toy_questions(n: int, seed: int, answers: tuple[int, int], none_share: float = 0.0) -> list[dict]:
    """Contexts of filler with `answers` runs of 子丑寅卯 (2-4 characters) in them; a share with none."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = 0 if rng.random() < none_share else rng.randint(*answers)
        context, spans = "", []
        for _ in range(k):
            context += "".join(rng.choice(FILLER) for _ in range(rng.randint(2, 8)))
            run = "".join(rng.choice(ANSWER) for _ in range(rng.randint(2, 4)))
            spans.append({"text": run, "answer_start": len(context)})
            context += run
        context += "".join(rng.choice(FILLER) for _ in range(rng.randint(2, 8)))
        rows.append({"id": f"q{seed}-{i}", "question": "是什么?", "context": context, "answers": spans})
    return rows


def write_squad(path, rows):
    paragraphs = [
        {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": r["answers"]}]}
        | ({"qas": [{"id": r["id"], "question": r["question"], "answers": [], "is_impossible": True}]}
           if not r["answers"] else {})
        for r in rows
    ]  # fmt: skip
    path.write_text(json.dumps({"version": "v2.0", "data": [{"paragraphs": paragraphs}]}, ensure_ascii=False))
    return path


def overrides(model, **kw):
    return {"task": "qa", "model": str(model), "max_length": 24, "max_query_length": 8, "doc_stride": 8} | FAST | kw


@pytest.fixture(scope="module")
def span_model(tiny_model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("qa-span")
    train = write_squad(d / "train.json", toy_questions(240, 1, (1, 1), none_share=0.2))
    dev = write_jsonl(d / "dev.jsonl", toy_questions(40, 2, (1, 1), none_share=0.2))
    result = api.train(
        str(train), d / "model", dev=str(dev), overrides=overrides(tiny_model_dir, head="span", epochs=6, lr=1e-2)
    )
    return d, result


@pytest.mark.slow
def test_span_head_learns_the_toy_task(span_model):
    d, result = span_model
    assert result["scheme"] == "null" and result["windows"] > 240  # some contexts need two windows
    assert result["dev_metrics"]["dev_f1"] >= 0.9
    scores = api.evaluate(d / "model", str(d / "dev.jsonl"))
    assert scores["f1"] == pytest.approx(result["dev_metrics"]["dev_f1"])
    assert scores["exact_match"] >= 0.85 and scores["questions"] == 40
    from transformers import AutoModelForQuestionAnswering

    assert type(AutoModelForQuestionAnswering.from_pretrained(d / "model")).__name__ == "BertForQuestionAnswering"


@pytest.mark.slow
def test_predict_question_and_context_through_the_cli(span_model, capsys):
    d, _ = span_model
    context = "好棒的东西寅卯子赞美爱"
    capsys.readouterr()
    assert main(["predict", "--model", str(d / "model"), "--question", "是什么?", "--context", context]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (best,) = row["answers"]
    assert (best["start"], best["end"], best["text"]) == (5, 8, "寅卯子")
    assert 0 < best["score"] <= 1 and row["question"] == "是什么?"
    # no run of 子丑寅卯: no answer (the training data had unanswerable questions)
    assert api.predict(d / "model", question="是什么?", context="好棒赞优美爱差坏的东西")[0]["answers"] == []


@pytest.mark.slow
def test_multi_span_head_learns_several_answers_and_reloads(tiny_model_dir, tmp_path):
    """0-3 runs of 子丑寅卯 per context, every one an answer: the tagging head finds them."""
    from transformers import AutoModelForTokenClassification

    train = write_jsonl(tmp_path / "train.jsonl", toy_questions(240, 3, (0, 3)))
    dev = write_jsonl(tmp_path / "dev.jsonl", toy_questions(40, 4, (0, 3)))
    kw = {"head": "multi_span", "epochs": 3, "lr": 1e-2}
    result = api.train(str(train), tmp_path / "m", dev=str(dev), overrides=overrides(tiny_model_dir, **kw))
    assert result["dev_metrics"]["dev_f1"] >= 0.9 and result["dev_metrics"]["dev_span_f1"] >= 0.8
    scores = api.evaluate(tmp_path / "m", str(dev))
    assert {"exact_match", "f1", "span_precision", "span_recall", "span_f1"} <= set(scores)
    assert scores["span_f1"] == pytest.approx(result["dev_metrics"]["dev_span_f1"])
    assert (
        type(AutoModelForTokenClassification.from_pretrained(tmp_path / "m")).__name__
        == "MultiSpanForQuestionAnswering"
    )
    context = "好棒子丑的东西寅卯卯赞美"
    (row,) = api.predict(tmp_path / "m", question="是什么?", context=context)
    assert all(context[a["start"] : a["end"]] == a["text"] for a in row["answers"])


def test_qa_refuses_feature_mode_and_cross_validation(tiny_model_dir, tmp_path):
    from plmkit.experiments.crossval import cross_validate

    train = write_jsonl(tmp_path / "train.jsonl", toy_questions(20, 5, (1, 1)))
    with pytest.raises(ConfigError, match="mode: task qa does not train in mode features; it takes finetune, partial"):
        api.train(str(train), tmp_path / "m", overrides=overrides(tiny_model_dir, mode="features"))
    with pytest.raises(ConfigError, match="task 'qa' has no way to ensemble"):
        cross_validate("qa", str(tiny_model_dir), str(train), tmp_path / "cv")
