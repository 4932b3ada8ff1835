"""Pretraining objectives: corpus packing, the MLM batch builder and the MLM loss."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from plmkit.data.batching import pad
from plmkit.pretrain.masking import IGNORE_INDEX, choose_tokens, choose_whole_words, corrupt, example_generator


def word_ids_for(text: str, offsets: Sequence[tuple[int, int]]) -> list[int]:
    """The jieba word each token starts in, for whole-word masking."""
    import jieba

    char_word, start = [0] * len(text), 0
    for w, word in enumerate(jieba.lcut(text)):
        char_word[start : start + len(word)] = [w] * len(word)
        start += len(word)
    return [char_word[min(s, len(text) - 1)] if len(text) else 0 for s, _ in offsets]


def pack_corpus(lines: Sequence[str], tokenizer, max_length: int, whole_word: bool = False) -> list[dict[str, Any]]:
    """Full-sentence packing: consecutive lines fill segments of up to max_length - 2 tokens;
    a line longer than that is cut into several segments. Each segment: {"ids", "words"}."""
    budget = max_length - 2
    enc = tokenizer(list(lines), add_special_tokens=False, return_offsets_mapping=whole_word)
    segments: list[dict[str, Any]] = []
    ids: list[int] = []
    words: list[int] = []
    next_word = 0
    for n, line_ids in enumerate(enc["input_ids"]):
        if not line_ids:
            continue
        line_words = word_ids_for(lines[n], enc["offset_mapping"][n]) if whole_word else list(range(len(line_ids)))
        for start in range(0, len(line_ids), budget):
            piece, piece_words = line_ids[start : start + budget], line_words[start : start + budget]
            if ids and len(ids) + len(piece) > budget:
                segments.append({"ids": ids, "words": words})
                ids, words = [], []
            ids += piece
            words += [w + next_word for w in piece_words]
            next_word += (max(piece_words) + 1) if piece_words else 0
    if ids:
        segments.append({"ids": ids, "words": words})
    return segments


def mlm_collate(
    items: list[tuple[int, int, dict[str, Any]]], *, tokenizer, seed: int, rate: float, whole_word: bool, dynamic: bool
) -> dict[str, torch.Tensor]:
    """Add [CLS]/[SEP], choose and corrupt positions with a per-(seed, epoch, index) generator, pad."""
    ids, labels = [], []
    for epoch, index, seg in items:
        gen = example_generator(seed, epoch if dynamic else 0, index)
        x = torch.tensor([tokenizer.cls_token_id] + seg["ids"] + [tokenizer.sep_token_id])  # (T,)
        words = torch.tensor([-1] + seg["words"] + [-1])  # (T,)
        chosen = choose_whole_words(words, rate, gen) if whole_word else choose_tokens(words >= 0, rate, gen)
        x, y = corrupt(x, chosen, tokenizer.mask_token_id, len(tokenizer), gen)
        ids.append(x.tolist())
        labels.append(y.tolist())
    input_ids = pad(ids, tokenizer.pad_token_id)  # (B, T)
    return {"input_ids": input_ids, "attention_mask": (input_ids != tokenizer.pad_token_id).long(), "labels": pad(labels, IGNORE_INDEX)}


def mlm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on the chosen positions only; the output layer runs on those alone."""
    labels = batch["labels"]  # (B, T)
    chosen = labels != IGNORE_INDEX  # (B, T)
    hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (B, T, H)
    logits = model.cls(hidden[chosen])  # (M, V): BERT's MLM head

    return F.cross_entropy(logits.float(), labels[chosen])
