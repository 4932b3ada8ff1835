"""Where a trained review classifier and the TF-IDF peer go wrong, on the shipped dev and test splits.

For each split: the accuracy of the model, of the peer (TF-IDF char 1-3-grams + logistic
regression, C chosen on dev, as in `plmkit demo`), of their averaged probabilities at a few
weights, and how many reviews both get wrong; then the first `--show` test reviews that both get
wrong, with their gold label and the model's probability of it, to read for label noise.

    python bench/review_errors.py --model runs/demo-model [--show 25]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from plmkit.cli import quiet_libraries
from plmkit.data.builtin import load_builtin
from plmkit.data.examples import Example
from plmkit.train.run import predict


def peer_probabilities(splits: dict, positive: str) -> tuple[dict[str, np.ndarray], float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x_train = vec.fit_transform([ex.text for ex in splits["train"]])
    y_train = [ex.label for ex in splits["train"]]
    dev_gold = np.array([ex.label for ex in splits["dev"]])
    best = None
    for c in (1.0, 4.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        acc = float((clf.predict(vec.transform([ex.text for ex in splits["dev"]])) == dev_gold).mean())
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    _, c, clf = best
    column = list(clf.classes_).index(positive)
    return {s: clf.predict_proba(vec.transform([ex.text for ex in splits[s]]))[:, column] for s in ("dev", "test")}, c


def main(argv: list[str]) -> dict:
    quiet_libraries()
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="a review classifier that plmkit train saved")
    p.add_argument("--show", type=int, default=25)
    args = p.parse_args(argv)
    splits = {s: load_builtin(f"builtin:reviews:{s}") for s in ("train", "dev", "test")}
    positive = "positive"
    peer, c = peer_probabilities(splits, positive)
    result: dict = {"model": args.model, "peer_C": c}
    for s in ("dev", "test"):
        gold = np.array([ex.label == positive for ex in splits[s]])
        ours = np.array(
            [r["probabilities"][positive] for r in predict(args.model, [Example(text=ex.text) for ex in splits[s]])]
        )
        row = {
            f"ensemble_{w}": round(float(((w * ours + (1 - w) * peer[s] > 0.5) == gold).mean()), 4)
            for w in (0.3, 0.5, 0.7)
        }
        ours_wrong, peer_wrong = (ours > 0.5) != gold, (peer[s] > 0.5) != gold
        row |= {
            "model": round(float(1 - ours_wrong.mean()), 4),
            "peer": round(float(1 - peer_wrong.mean()), 4),
            "examples": len(gold),
            "model_wrong": int(ours_wrong.sum()),
            "peer_wrong": int(peer_wrong.sum()),
            "both_wrong": int((ours_wrong & peer_wrong).sum()),
        }
        result[s] = row
        print(s, json.dumps(row), flush=True)
        if s == "test":
            for i in np.where(ours_wrong & peer_wrong)[0][: args.show]:
                ex = splits[s][i]
                p_gold = ours[i] if ex.label == positive else 1 - ours[i]
                print(f"  gold {ex.label:<8} model P(gold) {p_gold:.2f}  {ex.text[:100]}")
    print(json.dumps(result, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
