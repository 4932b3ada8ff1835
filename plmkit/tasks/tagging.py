"""Sequence labelling: named entities (`ner`) and word segmentation (`cws`).

A sentence's units (characters, or words) are tokenised; the first sub-token of each
unit carries its tag. A sentence longer than the model's limit is cut into windows
that overlap, and each unit takes its prediction from the window where it sits
furthest from a cut, so nothing is silently dropped.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from plmkit.data.batching import length_mask, pad
from plmkit.data.tagging import SCHEMES, Sentence, detect_scheme, read_tagged, tags_to_spans
from plmkit.data.truncation import backend_and_layout
from plmkit.data.units import Encoded, encode_sentences, unit_tokens_for
from plmkit.errors import DataError
from plmkit.models.tagger import HEADS, Tagger, load_encoder
from plmkit.registry import TASKS
from plmkit.tasks.base import Featurized, Labels, Task, collate_tokens


def windows(lengths: Sequence[int], budget: int, overlap: int) -> list[tuple[int, int]]:
    """Unit ranges [start, end) whose tokens fit `budget`; consecutive windows share about
    `overlap` tokens of units. A single unit longer than the budget is a window of its own."""
    n = len(lengths)
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end, used = start, 0
        while end < n and (end == start or used + min(lengths[end], budget) <= budget):
            used += min(lengths[end], budget)
            end += 1
        out.append((start, end))
        if end >= n:
            return out
        nxt, shared = end, 0  # back off into this window, keeping room for the next unit
        while nxt - 1 > start and shared + lengths[nxt - 1] <= min(overlap, budget - min(lengths[end], budget)):
            nxt -= 1
            shared += lengths[nxt]
        start = nxt


def unit_bigrams(e: Encoded, buckets: int) -> list[tuple[int, int]]:
    """For each unit, the hashed ids (1..buckets-1) of the bigram that ends at it and the one that starts
    at it, over the unit texts with sentence-boundary marks: 台湾 -> (<s>台, 台湾), (台湾, 湾</s>).
    crc32 keeps the ids stable across runs and machines; id 0 is padding."""
    texts = ["<s>"] + [e.sentence.text[a:b] for a, b in e.units] + ["</s>"]
    ids = [zlib.crc32(f"{x}\x1f{y}".encode()) % (buckets - 1) + 1 for x, y in zip(texts, texts[1:])]
    return list(zip(ids, ids[1:]))


def make_features(
    encoded: Sequence[Encoded],
    prefix: Sequence[int],
    suffix: Sequence[int],
    max_length: int,
    overlap: int,
    tag_index: dict[str, int] | None,
    bigram_buckets: int = 0,
) -> list[dict[str, Any]]:
    """One feature per window: input_ids, the position of each unit's first sub-token, its tag id, and
    with `bigram_buckets` each unit's two hashed bigram ids (see `unit_bigrams`)."""
    budget = max_length - len(prefix) - len(suffix)
    feats = []
    for k, e in enumerate(encoded):
        bigrams = unit_bigrams(e, bigram_buckets) if bigram_buckets else None
        for start, end in windows([len(t) for t in e.tokens], budget, min(overlap, budget // 2)):
            ids, pos, unit_ids = list(prefix), [], []
            for u in range(start, end):
                if e.tokens[u]:
                    pos.append(len(ids))
                    unit_ids.append(u)
                    ids += e.tokens[u][:budget]  # only a unit alone in its window can be longer
            if not unit_ids:
                continue
            ids += list(suffix)
            feats.append(
                {
                    "input_ids": ids,
                    "unit_pos": pos,
                    "sentence": k,
                    "window": (start, end),
                    "unit_ids": unit_ids,
                    "keep": pos,
                    "segments": [1] * len(pos),  # what a feature-mode head reads: the units
                    "tags": [tag_index[e.tags[u]] for u in unit_ids]
                    if tag_index is not None and e.tags is not None
                    else None,
                }
            )
            if bigrams is not None:
                feats[-1]["bigrams"] = [bigrams[u] for u in unit_ids]
    return feats


def collate_windows(feats: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask (B, T); unit_pos, unit_mask (B, U); tags (B, U) when labelled; bigrams
    (B, U, 2) when the windows carry them; hidden (B, T, H): cached states (mode=partial)."""
    batch = collate_tokens(feats, pad_id)
    n_units = torch.tensor([len(f["unit_pos"]) for f in feats])  # (B,)
    batch["unit_pos"] = pad([f["unit_pos"] for f in feats], 0)  # (B, U)
    batch["unit_mask"] = length_mask(n_units, batch["unit_pos"].shape[1])  # (B, U)
    if feats[0].get("tags") is not None:
        batch["tags"] = pad([f["tags"] for f in feats], 0)  # (B, U)
    if "bigrams" in feats[0]:
        batch["bigrams"] = pad([f["bigrams"] for f in feats], 0)  # (B, U, 2); 0 = padding
    return batch


def stitch(
    encoded: Sequence[Encoded],
    feats: Sequence[dict[str, Any]],
    window_tags: Sequence[list[int]],
    labels: list[str],
    default: str,
) -> list[list[str]]:
    """Tags per unit of each sentence, each unit from the window where it sits furthest from a cut.
    Units with no tokens get `default` (O, or S in segmentation)."""
    out = [[default] * len(e.units) for e in encoded]
    best = [[-1] * len(e.units) for e in encoded]
    for f, tags in zip(feats, window_tags):
        k, (start, end) = f["sentence"], f["window"]
        n = len(encoded[k].units)
        for u, tag in zip(f["unit_ids"], tags):
            left = u - start if start > 0 else n
            right = end - 1 - u if end < n else n
            if min(left, right) > best[k][u]:
                best[k][u], out[k][u] = min(left, right), labels[tag]
    return out


def ner_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict[str, Any]:
    """Entity-level precision, recall, F1 (seqeval, strict), overall (micro) and per type."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2, IOBES

    gold, pred = [list(g) for g in gold], [list(p) for p in pred]  # seqeval takes lists only, not tuples
    report = classification_report(
        gold, pred, mode="strict", scheme=IOBES if scheme == "bioes" else IOB2, output_dict=True, zero_division=0
    )
    micro = report["micro avg"]
    per_type = {
        k: {
            "precision": round(float(v["precision"]), 4),
            "recall": round(float(v["recall"]), 4),
            "f1": round(float(v["f1-score"]), 4),
            "support": int(v["support"]),
        }
        for k, v in report.items()
        if not k.endswith(" avg")
    }
    return {
        "f1": float(micro["f1-score"]),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "per_type": per_type,
    }


def span_scores(gold: list[set], pred: list[set]) -> dict[str, float]:
    """Precision, recall, F1 of predicted spans against gold spans, counted over all sentences."""
    correct = sum(len(g & p) for g, p in zip(gold, pred))
    n_pred, n_gold = sum(map(len, pred)), sum(map(len, gold))
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def cws_metrics(gold: list[list[str]], pred: list[list[str]], scheme: str) -> dict[str, Any]:
    """Word-level precision, recall, F1: a word counts when both its edges are right."""
    return span_scores([set(tags_to_spans(g, "bmes")) for g in gold], [set(tags_to_spans(p, "bmes")) for p in pred])


def char_spans(e: Encoded, tags: list[str], scheme: str) -> list[tuple[int, int, str]]:
    """Unit tags -> (start, end, type) character spans of the text."""
    return [(e.units[a][0], e.units[b - 1][1], kind) for a, b, kind in tags_to_spans(tags, scheme)]


def ner_decode(e: Encoded, tags: list[str], scheme: str) -> dict[str, Any]:
    text = e.sentence.text
    return {
        "entities": [
            {"text": text[a:b], "type": kind, "start": a, "end": b} for a, b, kind in char_spans(e, tags, scheme)
        ]
    }


def cws_decode(e: Encoded, tags: list[str], scheme: str) -> dict[str, Any]:
    """Words; characters the tokenizer dropped (spaces) between words are left out."""
    text = e.sentence.text
    return {"words": [text[a:b] for a, b, _ in char_spans(e, tags, scheme)]}


# --- the task record's fields ------------------------------------------------------------------------------------


def read(spec: str, cfg, labelled: bool = True, *, task: str) -> list[Sentence]:
    from plmkit.data.builtin import load_tagged_builtin

    return load_tagged_builtin(spec) if spec.startswith("builtin:") else read_tagged(spec, task, cfg.encoding)


def unlabelled(examples) -> list[Sentence]:
    return [Sentence(ex.text, None) for ex in examples]


def scheme_of(sentences: Sequence[Sentence], spec: str, *, task: str, schemes: tuple[str, ...]) -> str:
    tags = {t for s in sentences if s.tags is not None for t in s.tags}
    scheme = detect_scheme(tags) if tags else schemes[0]
    if scheme not in schemes:
        raise DataError(
            f"task {task!r} takes {' or '.join(s.upper() for s in schemes)} tags; "
            f"these are {scheme.upper()} ({', '.join(sorted(tags)[:8])})",
            path=spec,
        )
    return scheme


def label_set(encoded: Sequence[Encoded], scheme: str) -> list[str]:
    """Every tag of the scheme for each type seen in training: O first when the scheme has it."""
    kinds = sorted({t.partition("-")[2] for e in encoded for t in e.tags or () if t != "O"})
    prefixes = {"bio": "BI", "bioes": "BIES", "bmes": "BMES"}[scheme]
    tags = [f"{p}-{k}" if k else p for k in kinds for p in prefixes]
    return (["O"] if scheme != "bmes" else []) + tags


def check_known(encoded: Sequence[Encoded], labels: list[str], spec: str) -> None:
    known = set(labels)
    for e in encoded:
        for i, tag in enumerate(e.tags or ()):
            if tag not in known:
                s = e.sentence
                field = "tag" if s.units is not None else "entities"
                raise DataError(
                    f"tag {tag!r} was not seen in training (known: {', '.join(labels)})",
                    path=s.path or spec,
                    line=s.unit_line(i),
                    field=field,
                )


def featurize(
    sentences: Sequence[Sentence],
    tokenizer,
    cfg,
    labels: Labels | None,
    spec: str,
    *,
    task: str,
    schemes: tuple[str, ...],
) -> Featurized:
    """Sentences tokenised unit by unit and cut into windows of `cfg.max_length` tokens that overlap by
    `cfg.window_overlap`; the scheme and tag set are fitted on `sentences` when `labels` is None."""
    labelled = bool(sentences) and all(s.tags is not None or s.spans is not None for s in sentences)
    scheme = scheme_of(sentences, spec, task=task, schemes=schemes) if labelled or labels is None else None
    scheme = labels.scheme if labels is not None else scheme
    encoded = encode_sentences(sentences, tokenizer, scheme, cfg.unit_tokens)
    labels = labels or Labels(label_set(encoded, scheme), scheme)
    index = None
    if labelled:
        check_known(encoded, labels.names, spec)
        index = {tag: i for i, tag in enumerate(labels.names)}
    prefix, suffix = backend_and_layout(tokenizer)[1].single
    items = make_features(encoded, prefix, suffix, cfg.max_length, cfg.window_overlap, index, cfg.bigram_buckets)
    return Featurized(list(sentences), items, labels, [e.tags for e in encoded] if labelled else None, encoded)


def build_tagger(
    source: str,
    labels: list[str],
    dropout: float | None = None,
    trust_remote_code: bool = False,
    *,
    head: str = "crf",
    scheme: str = "bio",
    config=None,
    bigram_buckets: int = 0,
    bigram_dim: int = 64,
) -> Tagger:
    """A tagger on the pretrained encoder at `source` (or a fresh encoder from `config`, to load saved weights into)."""
    return Tagger(
        load_encoder(source, config, trust_remote_code),
        labels,
        head,
        scheme,
        dropout,
        bigram_buckets=bigram_buckets,
        bigram_dim=bigram_dim,
    )


def build_model(source: str, labels: Labels, cfg, tokenizer) -> Tagger:
    return build_tagger(
        source,
        labels.names,
        cfg.dropout,
        cfg.trust_remote_code,
        head=cfg.head,
        scheme=labels.scheme,
        bigram_buckets=cfg.bigram_buckets,
        bigram_dim=cfg.bigram_dim,
    )


def load_model(source: str, meta: dict[str, Any]) -> Tagger:
    from safetensors.torch import load_file

    from plmkit.errors import ModelError
    from plmkit.models.encoders import load_config

    if meta.get("scheme") not in SCHEMES or meta.get("head") not in HEADS:
        raise ModelError(f"{source}/plmkit.json: no valid 'scheme' and 'head' for a tagging model")
    model = build_tagger(
        source,
        meta["labels"],
        head=meta["head"],
        scheme=meta["scheme"],
        config=load_config(source),
        bigram_buckets=meta.get("bigram_buckets", 0),
        bigram_dim=meta.get("bigram_dim", 64),
    )
    model.load_hf_state_dict(load_file(str(Path(source) / "model.safetensors")))
    return model


def forward(model: Tagger, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Emissions (B, U, K); from the cached states `hidden` when the batch has them (mode=partial's top view)."""
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["unit_pos"],
        batch["unit_mask"],
        inputs_embeds=batch.get("hidden"),
        bigrams=batch.get("bigrams"),
    )


def tagging_loss(model, emissions: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model.loss(emissions, batch["tags"], batch["unit_mask"])  # emissions (B, U, K), tags (B, U)


def outputs(model, emissions: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """The best tag ids of each window's units (a CRF head decodes with Viterbi)."""
    decoded = model.decode(emissions, batch["unit_mask"]).cpu()  # (B, U)
    return [row[:n].tolist() for row, n in zip(decoded, batch["unit_mask"].sum(1).tolist())]


def vote(predictions: list[list[list[str]]]) -> list[list[str]]:
    """Each unit's tag by majority over the models (a tie goes to the tag the earliest model gave)."""
    from collections import Counter

    out = []
    for sentences in zip(*predictions):
        tags = []
        for unit in zip(*sentences):
            counts = Counter(unit)
            top = max(counts.values())
            tags.append(next(t for t in unit if counts[t] == top))
        out.append(tags)
    return out


def metrics_of(score) -> Any:
    return lambda data, pred: score(data.gold, pred, data.labels.scheme)


def decoder(decode) -> Any:
    return lambda data, pred: [
        {"text": e.sentence.text} | decode(e, tags, data.labels.scheme) for e, tags in zip(data.context, pred)
    ]


def _task(name: str, schemes: tuple[str, ...], score, decode, default_tag: str) -> Task:
    return Task(
        name,
        False,
        "tags",
        "f1",
        read=partial(read, task=name),
        unlabelled=unlabelled,
        featurize=partial(featurize, task=name, schemes=schemes),
        collate=collate_windows,
        build_model=build_model,
        load_model=load_model,
        forward=forward,
        loss=tagging_loss,
        outputs=outputs,
        assemble=lambda data, out: stitch(data.context, data.items, out, data.labels.names, default_tag),
        metrics=metrics_of(score),
        decode=decoder(decode),
        target_key="tags",
        feature_kind="tagging",
        default_head="crf",
        heads=HEADS,
        count_name="sentences",
        ensemble=vote,
        options=("window_overlap", "unit_tokens", "bigram_buckets", "bigram_dim"),
        meta=lambda tokenizer, cfg: {"unit_tokens": unit_tokens_for(tokenizer, cfg.unit_tokens)},
        summary=lambda data, cfg: {"head": cfg.head, "scheme": data.labels.scheme, "windows": len(data.items)},
    )


TASKS.add("ner", _task("ner", ("bio", "bioes"), ner_metrics, ner_decode, "O"))
TASKS.add("cws", _task("cws", ("bmes",), cws_metrics, cws_decode, "S"))  # a unit with no tokens is a word alone
