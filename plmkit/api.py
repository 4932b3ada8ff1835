"""The public API. The CLI only parses arguments and calls these functions (or those of plmkit.experiments)."""

from __future__ import annotations

import csv
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from plmkit import faults
from plmkit.config import PretrainConfig, TrainConfig, build_config
from plmkit.data.examples import Example
from plmkit.errors import DataError
from plmkit.io import atomic_path, output_lock

CONFIGS = Path(__file__).resolve().parent / "configs"
DEMO_SENTENCES = [
    "早餐不好,服务不到位,晚餐无西餐,早餐晚餐相同,房间条件不好",
    "房间应该超出30平米,是HK同级酒店中少有的大;重装之后,设备也不错.",
]


def pretrain(
    corpus: Sequence[str],
    output: str | Path,
    *,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    command: str | None = None,
) -> dict:
    """Pretrain an encoder on `corpus` (text files or builtin:default); see plmkit.pretrain.run."""
    from plmkit.pretrain.run import pretrain as run

    cfg = build_config(PretrainConfig, config, overrides)
    with output_lock(output):
        return run(corpus, output, cfg, resume=resume, command=command)


def _texts(specs: Sequence[str]) -> list[str]:
    """Lines of corpus files or builtin corpora; builtin:NAME:split gives a shipped data set's texts."""
    from plmkit.data.builtin import CORPORA, TAGGED_DATASETS, load_builtin, load_tagged_builtin
    from plmkit.pretrain.run import read_corpus

    texts: list[str] = []
    for spec in specs:
        parts = spec.split(":")
        if parts[0] == "builtin" and (len(parts) > 2 or parts[1] not in CORPORA):  # a data set, or one split of it
            if parts[1] in TAGGED_DATASETS:
                texts += [s.text for s in load_tagged_builtin(spec)]
            else:
                texts += [ex.text for ex in load_builtin(spec)]  # an unknown name is refused there, with the known ones
        else:
            texts += read_corpus([spec])
    return texts


def prune_vocab(
    model: str, output: str | Path, *, corpus: Sequence[str] = (), keep: str | None = None, check: Sequence[str] = ()
) -> dict[str, Any]:
    """Keep the vocabulary pieces `corpus` uses and/or those of the scripts in `keep` (e.g. "cjk,ascii,punct");
    report what share of the `check` texts' tokens (default: the corpus) would change or become unknown."""
    from plmkit.models.encoders import resolve_model
    from plmkit.models.vocab import prune_vocab as run

    report = run(
        resolve_model(model), output, corpus=_texts(corpus), scripts=keep or (), check=_texts(check), name=model
    )
    return report.as_dict() | {"output": str(output)}


def train(
    train_data: str,
    output: str | Path,
    *,
    dev: str | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    resume: bool = False,
    command: str | None = None,
    callbacks: Sequence[Callable] = (),
) -> dict:
    """Fine-tune a model on a file or builtin:NAME; the best model by dev metric is saved at `output`."""
    from plmkit.train.run import train as run

    cfg = build_config(TrainConfig, config, overrides)
    with output_lock(output):
        return run(train_data, output, cfg, dev_spec=dev, resume=resume, command=command, callbacks=callbacks)


def evaluate(
    model: str | Path, data: str, *, encoding: str | None = None, output: str | Path | None = None
) -> dict[str, Any]:
    """Metrics of a trained model on labelled data (a file or builtin:NAME[:split]); with `output`, the
    metrics, a confusion matrix (classes) or per-type bars (entity types) and an HTML report there."""
    from plmkit.train.run import evaluate as run

    return run(model, data, encoding=encoding, output=output)


def _stdin_lines() -> Iterator[bytes | None]:
    """Standard input's lines, as bytes cut after each b"\n" (only there, as files' lines are), as they
    arrive; None whenever every line read so far has been given and no more input is ready yet (a pipe or
    a terminal waiting on its writer), so that predict answers what came before it waits. Without a file
    descriptor to poll (a stand-in stream, Windows' pipes): the lines only."""
    import os
    import select

    stream = sys.stdin.buffer
    try:
        fd = stream.fileno()
        select.select([fd], [], [], 0)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        yield from stream
        return
    unfinished: list[bytes] = []  # the start of a line whose line feed has not come yet
    while True:
        if not select.select([fd], [], [], 0)[0]:
            yield None
        data = os.read(fd, 1 << 16)
        if not data:
            break
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            unfinished.append(data[start : end + 1])
            yield b"".join(unfinished)
            unfinished, start = [], end + 1
        if start < len(data):
            unfinished.append(data[start:])
    if unfinished:
        yield b"".join(unfinished)


def _stdin_examples(pair: bool, encoding: str) -> Iterator[Example | None]:
    """One text (TEXT<tab>TEXT_PAIR for a pair model) a line of standard input, read as they are taken; None
    where no more input is ready yet (`_stdin_lines`)."""
    from plmkit.data.readers import is_utf8

    n, found = 0, False
    for raw in _stdin_lines():
        if raw is None:
            yield None
            continue
        n += 1
        try:
            line = raw.decode(encoding).removesuffix("\n").removesuffix("\r")
        except UnicodeDecodeError as e:
            hint = "; pass --encoding gbk" if is_utf8(encoding) else ""
            raise DataError(f"not valid {encoding} (byte 0x{raw[e.start]:02x}){hint}", path="<stdin>", line=n) from None
        if not line.strip():
            continue
        if "\x00" in line:  # as a file's readers refuse it: no text holds one
            raise DataError(
                "a NUL character (byte 0x00): binary input, or UTF-16 text (pass --encoding utf-16)",
                path="<stdin>",
                line=n,
            )
        text, _, text_pair = line.partition("\t") if pair else (line, "", "")
        if pair and not text_pair:
            raise DataError("expected TEXT<tab>TEXT_PAIR", path="<stdin>", line=n)
        found = True
        yield Example(text=text, text_pair=text_pair or None, where=f"<stdin>:{n}")
    if not found:
        raise DataError("no input", path="<stdin>")


def _iter_predict_input(
    path: str, pair: bool, encoding: str, text_column: str, pair_column: str
) -> Iterator[Example | None]:
    """The examples of a file or of standard input (`-`), read as they are taken; standard input also gives
    None where no more input is ready yet. An unknown encoding, a file not there or of an unknown type:
    an error at once."""
    import codecs

    from plmkit.data.readers import iter_examples

    if path == "-":
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise DataError(f"unknown encoding {encoding!r}", path="<stdin>") from None
        return _stdin_examples(pair, encoding)
    return iter_examples(
        path,
        text_column=text_column,
        text_pair_column=pair_column if pair else None,
        label_column=None,
        encoding=encoding,
    )


def _read_predict_input(path: str, pair: bool, encoding: str, text_column: str, pair_column: str) -> list[Example]:
    """All the examples of a file or of standard input (`-`)."""
    return [ex for ex in _iter_predict_input(path, pair, encoding, text_column, pair_column) if ex is not None]


def check_output_file(output: str | Path) -> None:
    """Refuse, before any work, an output that predictions cannot be written to: a directory, or a name
    without .jsonl, .json or .csv."""
    output = Path(output)
    if output.is_dir():
        raise DataError("is a directory; --output takes a file name (FILE.jsonl or FILE.csv)", path=str(output))
    if output.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise DataError("unknown output type; use .jsonl or .csv", path=str(output))


def write_predictions(rows: Iterable[dict[str, Any]], output: str | Path) -> int:
    """JSONL or CSV by extension, a row at a time as `rows` gives them (an iterator, such as
    `predict_stream`'s, is predicted while it is written); written to a temporary file, under the output's
    lock, and renamed into place after the last row (an error on the way leaves `output` as it was). The
    number of rows written."""
    output = Path(output)
    check_output_file(output)
    kind = output.suffix.lower()
    rows, n = iter(rows), 0
    with output_lock(output), atomic_path(output) as tmp:
        if kind == ".csv":
            first = next(rows, None)
            prob_keys = list(first.get("probabilities", {})) if first else []
            base = [k for k in first if k != "probabilities"] if first else ["text"]
            cell = lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v  # noqa: E731
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(base + [f"p({k})" for k in prob_keys])
                for row in itertools.chain([first] if first else [], rows):
                    w.writerow([cell(row[k]) for k in base] + [row["probabilities"][k] for k in prob_keys])
                    n += 1
                    faults.point("output.write")
        else:
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
                    faults.point("output.write")
    return n


def predict_stream(
    model: str | Path,
    *,
    input: str | None = None,
    text: str | None = None,
    text_pair: str | None = None,
    question: str | None = None,
    context: str | None = None,
    encoding: str | None = None,
    chunk_size: int | None = None,
) -> Iterator[dict[str, Any]]:
    """`predict`'s rows one at a time, in input order, the input read, featurized and predicted `chunk_size`
    records at a time (default plmkit.train.run.PREDICT_CHUNK; 0: all at once): memory does not grow with
    the input, and the rows of standard input come as soon as what was read is predicted. The model is
    loaded and the input opened here (a bad model, a missing file: an error at once); a bad line is an
    error when reading reaches it, after the rows before it. `write_predictions(predict_stream(...), OUT)`
    writes a file of any length."""
    from plmkit.errors import ConfigError
    from plmkit.train.run import PREDICT_CHUNK, load, predict_rows

    if chunk_size is not None and chunk_size < 0:
        raise ConfigError(f"chunk size: {chunk_size} records at a time; give 1 or more (0: the whole input at once)")
    loaded = load(model)
    records: Iterable[Any]
    if question is not None or context is not None:
        if not (question or "").strip() or not (context or "").strip():
            raise DataError("--question and --context: give both, neither empty")
        records = [Example(text=question, text_pair=context)]
    elif text is not None:
        if not text.strip():
            raise DataError("--text is empty")
        records = [Example(text=text, text_pair=text_pair)]
    elif loaded.task.read_input is not None:
        records = loaded.task.read_input(input, encoding or "utf-8")
    else:
        records = _iter_predict_input(
            input,
            loaded.task.pair,
            encoding or "utf-8",
            loaded.meta.get("text_column", "text"),
            loaded.meta.get("text_pair_column", "text_pair"),
        )
    return predict_rows(loaded, records, chunk_size=PREDICT_CHUNK if chunk_size is None else chunk_size)


def predict(
    model: str | Path,
    *,
    input: str | None = None,
    text: str | None = None,
    text_pair: str | None = None,
    question: str | None = None,
    context: str | None = None,
    output: str | Path | None = None,
    encoding: str | None = None,
    chunk_size: int | None = None,
) -> list[dict[str, Any]]:
    """Predict for a file, standard input (`-`), one text (and pair), or one question about a context (a qa
    model); rows in input order, written to `output` when given. The list holds every row: for an input of
    any length, `predict_stream` (and `write_predictions`) keep memory flat."""
    if output is not None:
        check_output_file(output)
    rows = list(
        predict_stream(
            model,
            input=input,
            text=text,
            text_pair=text_pair,
            question=question,
            context=context,
            encoding=encoding,
            chunk_size=chunk_size,
        )
    )
    if output is not None:
        write_predictions(rows, output)
    return rows


def distill(
    teacher: str | Path,
    student: str,
    train_data: str,
    output: str | Path,
    *,
    dev: str | None = None,
    unlabeled: Sequence[str] = (),
    temperature: float = 2.0,
    alpha: float = 0.5,
    vector_weight: float = 0.0,
    augment: int = 0,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict:
    """Distil a fine-tuned `teacher` into `student` (`layers:N`: N of the teacher's layers, evenly spaced;
    `bottom:N`; or a model name, directory or hub id) on `train_data`, plus soft labels on the `unlabeled`
    texts (files or builtin corpora) and on `augment` noisy copies of each training text; `vector_weight`
    pulls the student's sentence vector to the teacher's. The student is saved at `output` as any trained
    model. See plmkit.train.distill."""
    from plmkit.train.distill import distill as run

    cfg = build_config(TrainConfig, config, overrides)
    with output_lock(output):
        return run(
            str(teacher),
            student,
            train_data,
            output,
            cfg,
            dev_spec=dev,
            unlabeled=_texts(unlabeled) if unlabeled else None,
            temperature=temperature,
            alpha=alpha,
            vector_weight=vector_weight,
            augment=augment,
            command=command,
        )


def export(
    model: str | Path,
    output: str | Path,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    check: str | None = None,
    check_limit: int = 1000,
    smooth: float = 0.7,
    calibration: int = 256,
) -> dict[str, Any]:
    """Export a fine-tuned model to ONNX (`quantize="int8"`: dynamic int8 weights, the activations smoothed
    with alpha `smooth` measured on the first `calibration` check records; 0: not), checked against the
    PyTorch model on `check` (labelled data; default the model's dev data): max score difference, how
    many predictions agree, and the main metric of both, in the result and in OUTPUT/export.json."""
    from plmkit.export.onnx import export as run

    if format != "onnx":
        raise DataError(f"format: {format!r} is not one of: onnx")
    with output_lock(output):
        return run(
            model,
            output,
            quantize=quantize,
            check=check,
            check_limit=check_limit,
            smooth=smooth,
            calibration=calibration,
        )


def serve(model: str | Path, *, config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> None:
    """Serve a saved model over HTTP (plmkit.serve.app) until interrupted; options in config.ServeConfig
    (host, port, batching and limits). In-flight requests finish on shutdown, up to graceful_seconds."""
    import uvicorn

    from plmkit.config import ServeConfig
    from plmkit.models.encoders import resolve_model
    from plmkit.serve.app import create_app, load_predictor

    cfg = build_config(ServeConfig, config, overrides)
    source = resolve_model(str(model))
    if not Path(source, "plmkit.json").is_file():
        raise DataError("no plmkit.json: not a model directory that plmkit train saved", path=str(source))
    app = create_app(lambda: load_predictor(source, cfg.max_batch_texts), cfg)
    print(f"serving {model} on http://{cfg.host}:{cfg.port} (Ctrl-C stops; /docs lists the endpoints)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, timeout_graceful_shutdown=cfg.graceful_seconds, log_level="warning")


def keywords(
    data: str,
    *,
    output: str | Path | None = None,
    by_label: bool = False,
    top: int = 20,
    method: str = "textrank",
    encoding: str = "utf-8",
    text_column: str = "text",
    label_column: str = "label",
) -> dict[str, list[tuple[str, float]]]:
    """Keywords of the texts in `data` (a file or builtin:NAME[:split]), or of each label's texts with
    `by_label` (jieba's TextRank or TF-IDF); with `output`, keywords.json, a bar chart and a report there."""
    from plmkit.data.builtin import load_builtin
    from plmkit.data.readers import read_examples
    from plmkit.keywords import keywords as find

    if data.startswith("builtin:"):
        examples = load_builtin(data)
    else:
        examples = read_examples(
            data, text_column=text_column, label_column=label_column if by_label else None, encoding=encoding
        )
    groups = find(examples, by_label=by_label, top=top, method=method)
    if output is not None:
        from plmkit.report.keywords import write_keywords

        write_keywords(output, groups, f"{method} keywords of {data}" + (" by label" if by_label else ""))
    return groups


def demo(
    output: str | Path | None = None, overrides: dict[str, Any] | None = None, config: str | Path | None = None
) -> dict[str, Any]:
    """Fine-tune the recommended Chinese encoder (the recipe's model, e5-small) on review sentiment, beside a
    TF-IDF + logistic regression peer measured on the same split in the same run. `config`: another
    recipe than configs/demo.yaml."""
    from plmkit.data.builtin import load_builtin
    from plmkit.peers import tfidf_logreg
    from plmkit.registry import TASKS
    from plmkit.train.run import predict as predict_examples
    from plmkit.train.run import tasks

    started = time.time()
    recipe = Path(config) if config else CONFIGS / "demo.yaml"
    cfg = build_config(TrainConfig, recipe, overrides)  # a bad recipe fails here, before the peer runs
    tasks()
    TASKS.get(cfg.task)  # an unknown task fails here, before the peer runs
    splits = {s: load_builtin(f"builtin:reviews:{s}") for s in ("train", "dev", "test")}
    print(f"review sentiment: {len(splits['train'])} train, {len(splits['dev'])} dev, {len(splits['test'])} test")
    peer = tfidf_logreg(splits["train"], splits["dev"], splits["test"])
    print(
        f"peer (TF-IDF char 1-3-grams + logistic regression, C={peer['C']}): "
        f"dev {peer['dev_accuracy']:.4f}  test {peer['test_accuracy']:.4f}  ({peer['seconds']}s)"
    )
    with tempfile.TemporaryDirectory(prefix="plmkit-demo-") as tmp:
        model_dir = Path(output) if output else Path(tmp) / "model"
        trained = train(
            "builtin:reviews",
            model_dir,
            config=recipe,
            overrides=overrides,
            command="plmkit demo"
            + (f" --config {config}" if config else "")
            + (f" --output {output}" if output else ""),
        )
        test = evaluate(model_dir, "builtin:reviews:test")
        predictions = predict_examples(model_dir, [Example(text=t) for t in DEMO_SENTENCES])
    result = {
        "dev_accuracy": trained["dev_metrics"].get("dev_accuracy"),
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "peer_dev_accuracy": peer["dev_accuracy"],
        "peer_test_accuracy": peer["test_accuracy"],
        "seconds": round(time.time() - started, 1),
        "predictions": predictions,
        "model": str(output) if output else None,
    }
    name = f"plmkit ({cfg.model}, mode {cfg.mode}):"
    print(f"{name} dev {result['dev_accuracy']:.4f}  test {result['test_accuracy']:.4f}")
    print(f"{'peer:':<{len(name)}} dev {peer['dev_accuracy']:.4f}  test {peer['test_accuracy']:.4f}")
    for p in predictions:
        print(f"  {p['label']:<9} {p['probabilities'][p['label']]:.3f}  {p['text']}")
    print(f"total {result['seconds']}s" + (f"; model saved at {output}" if output else ""))
    return result
