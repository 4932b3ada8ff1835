"""Extractive question answering (`qa`): SQuAD v1.1 / v2.0, CMRC 2018, and NER read as reading comprehension.

The encoder reads [CLS] question [SEP] context-window [SEP]. The question keeps its first
`max_query_length` tokens; a longer context is read in windows that start about `doc_stride` tokens
apart (they overlap by the rest of the window, and by at least max_answer_length tokens, up to half
a window, so that an answer at a cut is wholly inside the next window). The context is tokenised
unit by unit, as the taggers tokenise a sentence (plmkit.data.units): each CJK character, each run of
letters and digits, each other character is its own unit with its own tokens, so every answer edge is
a token edge (a sentencepiece tokenizer left alone makes pieces like 是中国 that straddle an entity's
edge). The fast tokenizer's own overflowing windows are not used: they cut the tokenizer's pieces. An answer
starts at a unit's first token and ends at a unit's last; decoding maps tokens back to the units'
character spans in the original context.

Heads: `span` (one answer: a softmax over positions for the start and one for the end; n-best
decoding; the [CLS] position's score is "no answer" when the training data has unanswerable
questions, SQuAD 2.0) and `multi_span` (any number of answers: each context token tagged O, B or I,
a softmax per token; answers are the B I* runs; NER read as reading comprehension, after Li et al.
2020, who score starts and ends instead: plmkit.models.multi_span says why not).
Metrics: EM and character F1 (CMRC 2018) and, for multi_span, exact
span precision/recall/F1 (entity F1, comparable with the NER tagger's).

Shapes: B batch, T tokens.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from plmkit.data.batching import pad
from plmkit.data.examples import Example
from plmkit.data.squad import QARecord, iter_qa_jsonl, read_qa
from plmkit.data.tagging import Sentence
from plmkit.data.truncation import Layout, backend_and_layout
from plmkit.data.units import encode_sentences, unit_tokens_for
from plmkit.errors import ConfigError, DataError
from plmkit.registry import TASKS
from plmkit.tasks.base import Featurized, Labels, Task, collate_tokens
from plmkit.tasks.tagging import span_scores, windows

QA_HEADS = ("span", "multi_span")
NULL = 0  # the position whose start + end score is "no answer" ([CLS] or the family's first token)
MASKED = -1e9  # the logit of a position an answer cannot start or end at
TAG_O, TAG_B, TAG_I, IGNORED = 0, 1, 2, -100  # multi_span's tags, and the target of a position that is not context


@dataclass
class Context:
    """One question's context after tokenisation: units' character spans and each unit's tokens."""

    units: list[tuple[int, int]]
    tokens: list[list[int]]


@dataclass
class Reading:
    """What `assemble` needs besides the items: every record's context and the decoding options."""

    contexts: list[Context]
    head: str
    allow_null: bool  # span: "no answer" may win (the training data had unanswerable questions)
    n_best: int
    max_answer_length: int
    null_threshold: float
    snapped: int = 0  # gold answers whose edges fell inside a unit and were widened to it


# --- data: units, windows, features ------------------------------------------------------------------------------


def encode_contexts(texts: Sequence[str], tokenizer, unit_tokens: str) -> list[Context]:
    """Each distinct text tokenised unit by unit once (SQuAD asks several questions of a paragraph)."""
    distinct = list(dict.fromkeys(texts))
    encoded = encode_sentences([Sentence(t, None) for t in distinct], tokenizer, "bio", unit_tokens)
    by_text = {t: Context(e.units, e.tokens) for t, e in zip(distinct, encoded)}
    return [by_text[t] for t in texts]


def answer_units(c: Context, start: int, end: int) -> tuple[int, int, bool] | None:
    """(first unit, last unit, snapped) of the characters [start, end): the units with tokens that
    overlap them; snapped when an edge falls inside a unit (the answer is widened to it). None when no
    such unit overlaps (an answer of spaces)."""
    inside = [k for k, (a, b) in enumerate(c.units) if a < end and b > start and c.tokens[k]]
    if not inside:
        return None
    return inside[0], inside[-1], c.units[inside[0]][0] != start or c.units[inside[-1]][1] != end


def window_features(
    c: Context,
    question: Sequence[int],
    layout: Layout,
    max_length: int,
    doc_stride: int,
    max_answer_length: int,
    gold: Sequence[tuple[int, int]] | None,
    head: str,
) -> list[dict[str, Any]]:
    """One item per window of the context (windows start about doc_stride tokens apart, and share at least
    max_answer_length tokens, up to half a window, so that no answer the decoder may return is cut by
    every window): input_ids, token_type_ids, segments (1 question, 2 context,
    0 special), `token_unit` (each position's context unit, -1 elsewhere), `start_ok` / `end_ok` (1 at a
    unit's first / last token), and with `gold` (first and last unit of each answer) the targets: span,
    `start_position` / `end_position` of the first answer wholly inside the window (NULL when none);
    multi_span, `tags`: B on the first token of every answer wholly inside it, I on its other tokens,
    O on the rest of the context, IGNORED on the question and the special tokens."""
    budget = max_length - layout.n_special(True) - len(question)
    if budget < 1:
        raise ConfigError(
            f"max_length: {max_length} leaves no room for the context beside a question of {len(question)} "
            "tokens (max_query_length) and the special tokens"
        )
    items = []
    overlap = max(budget - doc_stride, min(max_answer_length, budget // 2))
    for ws, we in windows([len(t) for t in c.tokens], budget, overlap):
        ids, unit_of = [], []
        for u in range(ws, we):
            kept = c.tokens[u][:budget]  # only a unit alone in its window can be longer
            ids += kept
            unit_of += [u] * len(kept)
        if not ids:
            continue
        framed = layout.frame(list(question), ids)
        offset = framed["segments"].index(2)
        token_unit = [-1] * len(framed["input_ids"])
        token_unit[offset : offset + len(ids)] = unit_of
        first = {u: offset + i for i, u in reversed(list(enumerate(unit_of)))}
        last = {u: offset + i for i, u in enumerate(unit_of)}
        start_ok = [int(u >= 0 and first[u] == p) for p, u in enumerate(token_unit)]
        end_ok = [int(u >= 0 and last[u] == p) for p, u in enumerate(token_unit)]
        item = framed | {"token_unit": token_unit, "start_ok": start_ok, "end_ok": end_ok}
        if gold is not None:
            inside = [(first[a], last[b]) for a, b in gold if ws <= a and b < we]
            if head == "span":
                item["start_position"], item["end_position"] = inside[0] if inside else (NULL, NULL)
            else:
                item["tags"] = [TAG_O if u >= 0 else IGNORED for u in token_unit]
                for s, e in inside:
                    item["tags"][s : e + 1] = [TAG_B] + [TAG_I] * (e - s)
        items.append(item)
    return items


# --- decoding: token scores -> character spans -------------------------------------------------------------------


def best_spans(
    start: torch.Tensor,
    end: torch.Tensor,
    start_ok: torch.Tensor,
    end_ok: torch.Tensor,
    n_best: int,
    max_answer_length: int,
) -> list[tuple[float, int, int]]:
    """The best (score, start, end) token pairs of one window, best first, at most n_best: the start
    among the n_best highest allowed starts, the end among the n_best highest allowed ends, start <=
    end < start + max_answer_length; score = start logit + end logit. start, end (T,); *_ok (T,) bool."""
    s_scores = start.float().masked_fill(~start_ok, float("-inf"))  # (T,)
    e_scores = end.float().masked_fill(~end_ok, float("-inf"))  # (T,)
    s_top = s_scores.topk(min(n_best, int(start_ok.sum()))).indices.tolist()
    e_top = e_scores.topk(min(n_best, int(end_ok.sum()))).indices.tolist()
    pairs = [(float(s_scores[s] + e_scores[e]), s, e) for s in s_top for e in e_top if s <= e < s + max_answer_length]
    return sorted(pairs, reverse=True)[:n_best]


def tag_spans(probs: torch.Tensor, token_unit: Sequence[int], max_answer_length: int) -> list[tuple[float, int, int]]:
    """Multi-span answers of one window, (score, start, end) in order of start: the runs of B I* among
    the context tokens by each token's most probable tag (an I after an O starts a run too, a B
    starts a new one), at most max_answer_length tokens long; score = the mean probability of the
    run's tags. probs (T, 3) over O, B, I."""
    p, tags = probs.float().max(-1)  # (T,) each
    out, run = [], None
    for t, (tag, u) in enumerate(zip(tags.tolist(), token_unit)):
        if run is not None and (u < 0 or tag != TAG_I):
            out.append(run)
            run = None
        if u >= 0 and tag != TAG_O and run is None:
            run = (t, t)
        elif run is not None:
            run = (run[0], t)
    if run is not None:
        out.append(run)
    return [(float(p[s : e + 1].mean()), s, e) for s, e in out if e - s < max_answer_length]


def decode_record(
    text: str, c: Context, windows: Sequence[tuple[dict[str, Any], torch.Tensor]], r: Reading
) -> list[dict[str, Any]]:
    """The answers to one question from its windows' scores (T, 2) each (span; multi_span (T, 3)), as
    character spans of `text`:
    span, the best one (none when "no answer" beats it by more than null_threshold); multi_span, every
    one found in any window, the same span found twice kept once with its best score."""
    found: dict[tuple[int, int], float] = {}
    null = float("inf")
    best = float("-inf")
    for item, scores in windows:
        if r.head == "span":
            start, end = scores.float().unbind(-1)  # (T,) each
            start_ok, end_ok = torch.tensor(item["start_ok"]).bool(), torch.tensor(item["end_ok"]).bool()
            null = min(null, float(start[NULL] + end[NULL]))
            allowed_s, allowed_e = start_ok.clone(), end_ok.clone()
            allowed_s[NULL] = allowed_e[NULL] = True
            p_start = start.masked_fill(~allowed_s, float("-inf")).softmax(-1)  # (T,)
            p_end = end.masked_fill(~allowed_e, float("-inf")).softmax(-1)  # (T,)
            spans = [
                (score, float(p_start[s] * p_end[e]), s, e)
                for score, s, e in best_spans(start, end, start_ok, end_ok, r.n_best, r.max_answer_length)
            ]
        else:
            spans = [(p, p, s, e) for p, s, e in tag_spans(scores.softmax(-1), item["token_unit"], r.max_answer_length)]
        for score, prob, s, e in spans:
            span = (c.units[item["token_unit"][s]][0], c.units[item["token_unit"][e]][1])
            if r.head == "span" and score > best:
                best, found = score, {span: prob}
            elif r.head != "span":
                found[span] = max(prob, found.get(span, 0.0))
    if r.head == "span" and r.allow_null and null - best > r.null_threshold:
        return []
    return [{"start": a, "end": b, "text": text[a:b], "score": round(p, 6)} for (a, b), p in sorted(found.items())]


# --- metrics: EM and character F1 (CMRC 2018) ---------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """NFKC, lower case, punctuation and whitespace removed: what EM and F1 compare."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def longest_common_substring(a: str, b: str) -> int:
    best, row = 0, [0] * (len(b) + 1)
    for x in a:
        prev, row = row, [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                row[j] = prev[j - 1] + 1
                best = max(best, row[j])
    return best


def char_f1(prediction: str, gold: str) -> float:
    """CMRC 2018's F1 over characters: precision and recall of the longest common substring of the two
    normalised answers. Two empty answers (no answer, and none predicted) agree."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if not p or not g:
        return float(p == g)
    common = longest_common_substring(p, g)
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def question_scores(predicted: Sequence[str], gold: Sequence[str], multi: bool) -> tuple[float, float]:
    """(EM, F1) of one question. One answer: the top prediction ("" for none) against the best-matching
    gold answer ("" when there is none). Multi: EM when the normalised sets agree; F1 of precision (each
    prediction's best F1 against the gold) and recall (each gold answer's best against the predictions);
    both empty agree, one empty scores 0."""
    if not multi:
        top = predicted[0] if predicted else ""
        golds = list(gold) or [""]
        return max(exact_match(top, g) for g in golds), max(char_f1(top, g) for g in golds)
    if not predicted or not gold:
        return float(not predicted and not gold), float(not predicted and not gold)
    em = float({normalize_answer(p) for p in predicted} == {normalize_answer(g) for g in gold})
    precision = sum(max(char_f1(p, g) for g in gold) for p in predicted) / len(predicted)
    recall = sum(max(char_f1(p, g) for p in predicted) for g in gold) / len(gold)
    return em, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def qa_metrics(data: Featurized, predictions: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """exact_match and f1 (means over questions, 0..1); multi_span also span_precision, span_recall,
    span_f1 over exact character spans of all questions (entity F1, for MRC-NER)."""
    multi = data.context.head == "multi_span"
    scores = [
        question_scores([a["text"] for a in pred], [t for _, t in gold], multi)
        for pred, gold in zip(predictions, data.gold)
    ]
    n = max(1, len(scores))
    out: dict[str, Any] = {"exact_match": sum(s[0] for s in scores) / n, "f1": sum(s[1] for s in scores) / n}
    if multi:
        spans = span_scores(
            [{(a, a + len(t)) for a, t in gold} for gold in data.gold],
            [{(a["start"], a["end"]) for a in pred} for pred in predictions],
        )
        out |= {f"span_{k}": v for k, v in spans.items()}
    return out


# --- the task record's fields ------------------------------------------------------------------------------------


def read(spec: str, cfg, labelled: bool = True) -> list[QARecord]:
    from plmkit.data.builtin import load_qa_builtin

    return load_qa_builtin(spec) if spec.startswith("builtin:") else read_qa(spec, cfg.encoding, labelled)


def read_input(path: str, encoding: str) -> Iterable[QARecord]:
    """predict's --input: SQuAD-shaped JSON or JSONL of {id, question, context}; answers are not read. JSONL
    is read a line at a time as predict takes the records; SQuAD JSON is one document, parsed whole."""
    if path == "-":
        raise DataError(
            "a qa model reads a .json or .jsonl file of questions and contexts, or --question and --context"
        )
    if str(path).lower().endswith(".jsonl"):
        return iter_qa_jsonl(path, encoding, labelled=False)
    return read_qa(path, encoding, labelled=False)


def unlabelled(examples: Sequence[QARecord | Example]) -> list[QARecord]:
    """Records without answers: QARecords, or Examples whose text is the question and text_pair the context."""
    out = []
    for n, ex in enumerate(examples, 1):
        if isinstance(ex, QARecord):
            out.append(QARecord(ex.id, ex.question, ex.context))
        elif ex.text_pair is None:
            raise DataError("a qa model answers a question about a context: give both (--question, --context)")
        else:
            out.append(QARecord(str(n), ex.text, ex.text_pair))
    return out


def featurize(records: Sequence[QARecord], tokenizer, cfg, labels: Labels | None, spec: str) -> Featurized:
    """Every question with its context's windows; the targets per `cfg.head`. `labels` fitted on the
    records when None: scheme "null" when some question has no answer (the span head may then answer
    none), else "answer"."""
    if cfg.head not in QA_HEADS:
        raise ConfigError(f"head: unknown {cfg.head!r} for task qa; known: {', '.join(QA_HEADS)}")
    labelled = bool(records) and all(r.answers is not None for r in records)
    if labels is None:
        labels = Labels([], "null" if labelled and any(not r.answers for r in records) else "answer")
    backend, layout = backend_and_layout(tokenizer)
    questions = [
        e.ids[: cfg.max_query_length]
        for e in backend.encode_batch([r.question for r in records], add_special_tokens=False)
    ]
    contexts = encode_contexts([r.context for r in records], tokenizer, cfg.unit_tokens)
    items, snapped = [], 0
    for k, (r, c, q) in enumerate(zip(records, contexts, questions)):
        gold = None
        if labelled:
            spans = [answer_units(c, a, a + len(t)) for a, t in r.answers]
            snapped += sum(s[2] for s in spans if s is not None)
            gold = [(a, b) for a, b, _ in (s for s in spans if s is not None)]
        for item in window_features(
            c, q, layout, cfg.max_length, cfg.doc_stride, cfg.max_answer_length, gold, cfg.head
        ):
            items.append(item | {"record": k})
    reading = Reading(
        contexts, cfg.head, labels.scheme == "null", cfg.n_best, cfg.max_answer_length, cfg.null_threshold, snapped
    )
    gold_answers = [list(r.answers) for r in records] if labelled else None
    return Featurized(list(records), items, labels, gold_answers, reading)


def collate(feats: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, token_type_ids, attention_mask (B, T); start_ok, end_ok (B, T) bool; span:
    start_positions, end_positions (B,); multi_span: tags (B, T); hidden
    (B, T, H) when the items carry cached states (mode=partial)."""
    batch = collate_tokens(feats, pad_id)
    batch["token_type_ids"] = pad([f["token_type_ids"] for f in feats], 0)  # (B, T)
    batch["start_ok"] = pad([f["start_ok"] for f in feats], 0).bool()  # (B, T)
    batch["end_ok"] = pad([f["end_ok"] for f in feats], 0).bool()  # (B, T)
    if "start_position" in feats[0]:
        batch["start_positions"] = torch.tensor([f["start_position"] for f in feats])  # (B,)
        batch["end_positions"] = torch.tensor([f["end_position"] for f in feats])  # (B,)
    if "tags" in feats[0]:
        batch["tags"] = pad([f["tags"] for f in feats], IGNORED)  # (B, T)
    return batch


def build_reader(source: str, head: str, dropout: float | None = None, trust_remote_code: bool = False):
    """span: the family's own *ForQuestionAnswering (a Linear(H, 2) on every token); multi_span:
    plmkit's MultiSpanForQuestionAnswering (plmkit.models.multi_span)."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    if head == "multi_span":
        from plmkit.models.multi_span import build_multi_span

        return build_multi_span(source, dropout, trust_remote_code)
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    kwargs = {}
    if dropout is not None:
        kwargs = {k: dropout for k in ("hidden_dropout_prob", "resid_pdrop", "dropout") if hasattr(config, k)}
    try:
        return AutoModelForQuestionAnswering.from_pretrained(
            source, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
        )
    except ValueError as e:
        if "Unrecognized configuration class" not in str(e):
            raise
        raise ConfigError(
            f"head: span needs the model family's own *ForQuestionAnswering; {config.model_type!r} has none: "
            "use head=multi_span"
        ) from None


def build_model(source: str, labels: Labels, cfg, tokenizer):
    return build_reader(source, cfg.head, cfg.dropout, cfg.trust_remote_code)


def load_model(source: str, meta: dict[str, Any]):
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForTokenClassification

    from plmkit.models.multi_span import MultiSpanConfig

    multi = AutoConfig.from_pretrained(source).model_type == MultiSpanConfig.model_type
    auto = AutoModelForTokenClassification if multi else AutoModelForQuestionAnswering
    return auto.from_pretrained(source, use_safetensors=True)


def forward(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """span: start and end logits (B, T, 2); multi_span: O, B, I logits (B, T, 3); from the cached states
    `hidden` when the batch has them (mode=partial)."""
    if "hidden" in batch:
        out = model(inputs_embeds=batch["hidden"], attention_mask=batch["attention_mask"])
    else:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if getattr(model.config, "type_vocab_size", 0) > 1:
            inputs["token_type_ids"] = batch["token_type_ids"]
        out = model(**inputs)
    if hasattr(out, "logits"):  # multi_span
        return out.logits  # (B, T, 3)
    return torch.stack([out.start_logits, out.end_logits], -1)  # (B, T, 2)


def qa_loss(model, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """span: cross-entropy of the start and of the end over the positions an answer can take (and NULL);
    multi_span: cross-entropy of every context token's tag."""
    if "tags" in batch:
        return F.cross_entropy(scores.float().flatten(0, 1), batch["tags"].flatten(), ignore_index=IGNORED)
    start, end = scores.float().unbind(-1)  # (B, T) each
    if "start_positions" in batch:
        allowed_s, allowed_e = batch["start_ok"].clone(), batch["end_ok"].clone()  # (B, T)
        allowed_s[:, NULL] = allowed_e[:, NULL] = True
        start, end = start.masked_fill(~allowed_s, MASKED), end.masked_fill(~allowed_e, MASKED)
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
    raise ValueError("a qa batch has start_positions (span) or tags (multi_span)")


def outputs(model, scores: torch.Tensor, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [row[:n].float().cpu() for row, n in zip(scores, batch["attention_mask"].sum(1).tolist())]  # (T_i, 2)


def assemble(data: Featurized, scores: list[torch.Tensor]) -> list[list[dict[str, Any]]]:
    """The answers of every record, from its windows' scores."""
    by_record: list[list[tuple[dict[str, Any], torch.Tensor]]] = [[] for _ in data.records]
    for item, s in zip(data.items, scores):
        by_record[item["record"]].append((item, s))
    r: Reading = data.context
    return [decode_record(rec.context, c, w, r) for rec, c, w in zip(data.records, r.contexts, by_record)]


def decode(data: Featurized, predictions: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"id": r.id, "question": r.question, "answers": p} for r, p in zip(data.records, predictions)]


TASKS.add(
    "qa",
    Task(
        "qa",
        True,
        "spans",
        "f1",
        read=read,
        unlabelled=unlabelled,
        featurize=featurize,
        collate=collate,
        build_model=build_model,
        load_model=load_model,
        forward=forward,
        loss=qa_loss,
        outputs=outputs,
        assemble=assemble,
        metrics=qa_metrics,
        decode=decode,
        target_key="start_position",
        default_head="span",
        heads=QA_HEADS,
        modes=("finetune", "partial"),
        read_input=read_input,
        options=("doc_stride", "max_query_length", "max_answer_length", "n_best", "null_threshold", "unit_tokens"),
        meta=lambda tokenizer, cfg: {"unit_tokens": unit_tokens_for(tokenizer, cfg.unit_tokens)},
        summary=lambda data, cfg: {
            "head": cfg.head,
            "scheme": data.labels.scheme,
            "windows": len(data.items),
            "snapped_answers": data.context.snapped,
        },
        count_name="questions",
    ),
)
