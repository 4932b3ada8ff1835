"""Where a trained word segmenter goes wrong on the shipped People's Daily test split, beside the
CRFsuite segmenter trained on the same split (`--peer`, about 2 minutes).

For each system: word F1, and recall of the gold words split by whether the training split
contains them (in-vocabulary) or not (out-of-vocabulary); then the gold words each system misses
most often.

    python bench/cws_errors.py --model runs/bench-cws-k6/cws-crf [--peer] [--show 20]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

from plmkit.cli import quiet_libraries
from plmkit.data.builtin import load_tagged_builtin
from plmkit.data.tagging import Sentence
from plmkit.tasks.tagging import char_spans, span_scores


def char_words(s: Sentence, tags) -> set[tuple[int, int]]:
    """The character spans of the words that B/M/E/S `tags` (one per unit of `s`) make."""
    return {(a, b) for a, b, _ in char_spans(s, list(tags), "bmes")}  # char_spans reads only the units


def breakdown(test: list[Sentence], gold: list[set], pred: list[set], vocab: collections.Counter, show: int) -> dict:
    hit, total, missed = collections.Counter(), collections.Counter(), collections.Counter()
    for s, g, p in zip(test, gold, pred):
        for a, b in g:
            kind = "iv" if vocab[s.text[a:b]] else "oov"
            total[kind] += 1
            hit[kind] += (a, b) in p
            if (a, b) not in p:
                missed[s.text[a:b]] += 1
    row = {k: round(v, 4) for k, v in span_scores(gold, pred).items()}
    for kind in ("iv", "oov"):
        row[f"{kind}_words"] = total[kind]
        row[f"{kind}_recall"] = round(hit[kind] / total[kind], 4) if total[kind] else None
    row["most_missed"] = missed.most_common(show)
    return row


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="a segmentation model directory (plmkit train --task cws)")
    p.add_argument("--peer", action="store_true", help="also train and analyse the CRFsuite segmenter")
    p.add_argument("--show", type=int, default=20)
    args = p.parse_args(argv)

    from plmkit.train.run import load, predictions

    train = load_tagged_builtin("builtin:peoples-daily-cws")
    test = load_tagged_builtin("builtin:peoples-daily-cws:test")
    vocab = collections.Counter(s.text[a:b] for s in train for a, b in char_words(s, s.tags))
    gold = [char_words(s, s.tags) for s in test]
    _, pred = predictions(load(args.model), test)  # as `plmkit evaluate` tags: one unit a character
    result = {"model": breakdown(test, gold, [char_words(s, tags) for s, tags in zip(test, pred)], vocab, args.show)}
    if args.peer:
        from plmkit.peers import crf_tagger

        crf = crf_tagger(train, test)
        result["peer_crfsuite"] = breakdown(
            test, gold, [char_words(s, t) for s, t in zip(test, crf["pred"])], vocab, args.show
        )
    for name, row in result.items():
        print(
            f"{name:<14} F1 {row['f1']:.4f}  in-vocabulary recall {row['iv_recall']:.4f} ({row['iv_words']} words)  "
            f"out-of-vocabulary recall {row['oov_recall']:.4f} ({row['oov_words']})"
        )
        print("  most missed:", " ".join(f"{w}×{n}" for w, n in row["most_missed"]))
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
