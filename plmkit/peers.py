"""Peers that plmkit's numbers are reported beside, measured in the same run on the same split."""

from __future__ import annotations

import time
from typing import Sequence

from plmkit.data.examples import Example


def tfidf_logreg(train: Sequence[Example], dev: Sequence[Example], test: Sequence[Example],
                 cs: Sequence[float] = (1.0, 4.0, 10.0)) -> dict[str, float]:
    """TF-IDF over character 1-3-grams + logistic regression (scikit-learn), C chosen on dev."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.time()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x_train = vec.fit_transform([ex.text for ex in train])
    x_dev, x_test = vec.transform([ex.text for ex in dev]), vec.transform([ex.text for ex in test])
    y_train, y_dev, y_test = [ex.label for ex in train], [ex.label for ex in dev], [ex.label for ex in test]
    best = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        dev_acc = float((clf.predict(x_dev) == y_dev).mean())
        if best is None or dev_acc > best[0]:
            best = (dev_acc, c, clf)
    dev_acc, c, clf = best
    return {"dev_accuracy": dev_acc, "test_accuracy": float((clf.predict(x_test) == y_test).mean()), "C": c,
            "seconds": round(time.time() - started, 1)}
