"""Sequence labelling against classical peers, on the shipped People's Daily splits, in one run.

NER (PER/LOC/ORG): plmkit (the recipes' model, e5-small) with each head beside a CRFsuite CRF on
character n-gram features (same split) and Baidu LAC off the shelf. Word segmentation: plmkit
beside a CRFsuite segmenter on the same features and split (B/M/E/S), jieba's default
dictionary and LAC (both off the shelf, with their own segmentation standards). All trained on
train, chosen on dev, scored on test.

    python bench/tagging.py [--ner-heads crf bilstm_crf] [--cws-heads crf] [--no-lac] [--output DIR] [key=value ...]

key=value overrides go to both recipes (configs/ner.yaml, configs/cws.yaml), e.g. epochs=1.
The last line printed is one JSON object: test scores and wall times of everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from plmkit import api
from plmkit.cli import quiet_libraries
from plmkit.config import parse_overrides
from plmkit.data.builtin import load_tagged_builtin
from plmkit.data.tagging import tags_to_spans
from plmkit.peers import crf_tagger, jieba_cws, lac_tagger
from plmkit.tasks.tagging import ner_metrics, span_scores


def _ours(task: str, head: str, out: Path, overrides: dict) -> dict:
    started = time.time()
    trained = api.train(
        f"builtin:peoples-daily-{task}",
        out / f"{task}-{head}",
        config=api.CONFIGS / f"{task}.yaml",
        overrides=overrides | {"head": head},
    )
    test = api.evaluate(out / f"{task}-{head}", f"builtin:peoples-daily-{task}:test")
    row = {k: round(v, 4) if isinstance(v, float) else v for k, v in test.items() if k != "sentences"}
    row |= {"dev_f1": round(trained["dev_metrics"]["dev_f1"], 4), "seconds": round(time.time() - started, 1)}
    print(f"{task} plmkit {head:<10} test F1 {row['f1']:.4f}  ({row['seconds']}s)", flush=True)
    return row


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--ner-heads", nargs="*", default=["crf", "bilstm_crf"])
    p.add_argument("--cws-heads", nargs="*", default=["crf"])
    p.add_argument("--no-lac", action="store_true", help="leave out the off-the-shelf LAC peer")
    p.add_argument("--output", help="keep the trained models here")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    overrides = parse_overrides(args.overrides)
    started = time.time()
    result: dict = {"ner": {}, "cws": {}}
    with tempfile.TemporaryDirectory(prefix="plmkit-bench-") as tmp:
        out = Path(args.output or tmp)
        if args.ner_heads:
            train, test = (
                load_tagged_builtin("builtin:peoples-daily-ner"),
                load_tagged_builtin("builtin:peoples-daily-ner:test"),
            )
            peer = crf_tagger(train, test)
            scores = ner_metrics([s.tags for s in test], peer["pred"], "bio")
            result["ner"]["peer_crfsuite"] = {
                k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items()
            } | {"seconds": round(peer["seconds"], 1)}
            print(f"ner peer CRFsuite (char n-grams) test F1 {scores['f1']:.4f}  ({peer['seconds']:.0f}s)", flush=True)
            if not args.no_lac:
                lac = lac_tagger(test)
                gold = [set(tags_to_spans(s.tags, "bio")) for s in test]
                row = span_scores(gold, [set(e) for e in lac["entities"]])
                result["ner"]["peer_lac_off_the_shelf"] = {k: round(v, 4) for k, v in row.items()} | {
                    "seconds": lac["seconds"]
                }
                print(f"ner peer LAC (off the shelf) test F1 {row['f1']:.4f}  ({lac['seconds']:.0f}s)", flush=True)
            for head in args.ner_heads:
                result["ner"][head] = _ours("ner", head, out, overrides)
        if args.cws_heads:
            train, test = (
                load_tagged_builtin("builtin:peoples-daily-cws"),
                load_tagged_builtin("builtin:peoples-daily-cws:test"),
            )
            gold = [{(a, b) for a, b, _ in tags_to_spans(s.tags, "bmes")} for s in test]
            crf = crf_tagger(train, test)
            pred = [{(a, b) for a, b, _ in tags_to_spans(tags, "bmes")} for tags in crf["pred"]]
            result["cws"]["peer_crfsuite"] = {k: round(v, 4) for k, v in span_scores(gold, pred).items()} | {
                "seconds": crf["seconds"]
            }
            print(
                f"cws peer CRFsuite (char n-grams, same split) test F1 {result['cws']['peer_crfsuite']['f1']:.4f}  "
                f"({crf['seconds']:.0f}s)",
                flush=True,
            )
            peer = jieba_cws(test)
            scores = span_scores(gold, [set(p) for p in peer["pred"]])
            result["cws"]["peer_jieba"] = {k: round(v, 4) for k, v in scores.items()} | {
                "seconds": round(peer["seconds"], 1)
            }
            print(
                f"cws peer jieba (default dictionary) test F1 {scores['f1']:.4f}  ({peer['seconds']:.1f}s)", flush=True
            )
            if not args.no_lac:
                lac = lac_tagger(test)
                row = span_scores(gold, [set(w) for w in lac["words"]])
                result["cws"]["peer_lac_off_the_shelf"] = {k: round(v, 4) for k, v in row.items()} | {
                    "seconds": lac["seconds"]
                }
                print(f"cws peer LAC (off the shelf) test F1 {row['f1']:.4f}  ({lac['seconds']:.0f}s)", flush=True)
            for head in args.cws_heads:
                result["cws"][head] = _ours("cws", head, out, overrides)
    result["seconds"] = round(time.time() - started, 1)
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
