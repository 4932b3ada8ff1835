"""`plmkit <command>`: parses arguments and calls one function of the API (plmkit.api) or of plmkit.experiments."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import traceback
from pathlib import Path

from plmkit.errors import PlmkitError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="plmkit", description="Adapt pretrained language models to NLP tasks, Chinese first."
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="fine-tune the shipped Chinese encoder on review sentiment, with a peer beside it")
    d.add_argument("--output", help="save the fine-tuned model directory here")
    d.add_argument("--config", default=None, help="another recipe than the shipped configs/demo.yaml")
    d.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    d.add_argument("overrides", nargs="*", metavar="key=value")

    pt = sub.add_parser("pretrain", help="pretrain or continue pretraining an encoder on a corpus")
    pt.add_argument(
        "--arch",
        default=None,
        help="model family: bert | albert | roberta | electra | spanbert | gpt | elmo "
        "(family options as key=value: albert.sharing=attention, electra.generator_size=0.25, ...)",
    )
    pt.add_argument(
        "--corpus",
        nargs="+",
        default=["builtin:default"],
        help="text files (one line a document), builtin:default, builtin:peoples-daily or builtin:reviews "
        "(training splits only)",
    )
    pt.add_argument("--output", required=True)
    pt.add_argument("--config", help="YAML recipe")
    pt.add_argument("--encoding", default=None, help="corpus encoding, e.g. gbk")
    pt.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    pt.add_argument("overrides", nargs="*", metavar="key=value")

    t = sub.add_parser(
        "train", help="fine-tune a model for a task, or train a head on its frozen layers (mode=features)"
    )
    t.add_argument("--task", default=None, help="classification | pair | regression | ner | cws | qa")
    t.add_argument(
        "--head",
        default=None,
        help="classification, pair, regression: cls (default) | pool (masked "
        "pooling=mean|max|mean_max); ner, cws: softmax | crf | bilstm_crf (default crf; bilstm_crf in "
        "mode=features); qa: span (default) | multi_span; "
        "mode=features also: mlp | bilstm (one text), esim | mlp (pairs)",
    )
    t.add_argument(
        "--model",
        default=None,
        help="a model directory, a hub id, or a shipped name: "
        "e5-small (recommended for Chinese), e5-small-full, default-zh, minilm-en",
    )
    t.add_argument(
        "--train",
        required=True,
        help="FILE (.csv .tsv .jsonl; CoNLL for ner/cws; SQuAD/CMRC .json or .jsonl for qa) or builtin:NAME "
        "(reviews, peoples-daily-ner, peoples-daily-cws, peoples-daily-mrc)",
    )
    t.add_argument("--dev", help="FILE or builtin:NAME:dev")
    t.add_argument("--output", required=True)
    t.add_argument("--config", help="YAML recipe")
    t.add_argument("--encoding", default=None, help="input encoding, e.g. gbk")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    t.add_argument("overrides", nargs="*", metavar="key=value")

    pl = sub.add_parser(
        "probe-layers", help="train an identical probe on each layer's frozen output; plot the dev metric by layer"
    )
    pl.add_argument("--task", required=True, help="classification | pair | regression | ner | cws")
    pl.add_argument("--model", required=True)
    pl.add_argument("--data", required=True, help="training data: FILE or builtin:NAME (scored on its dev split)")
    pl.add_argument("--dev", help="FILE or builtin:NAME:dev")
    pl.add_argument("--output", required=True, help="folder for results.json, results.md, results.html, probe.png")
    pl.add_argument("--config", help="YAML recipe")
    pl.add_argument("overrides", nargs="*", metavar="key=value")

    c = sub.add_parser(
        "compare",
        help="feature extraction (last layer, scalar mix) against partial fine-tuning and "
        "fine-tuning (plain, with tricks) on one task, model, budget and seed; writes a Markdown and HTML report",
    )
    c.add_argument("--task", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--train", required=True, help="FILE or builtin:NAME")
    c.add_argument("--dev", help="FILE or builtin:NAME:dev")
    c.add_argument("--test", help="FILE or builtin:NAME:test (builtin data: its test split by default)")
    c.add_argument("--output", required=True, help="folder for report.md, report.html, results.json and PNGs")
    c.add_argument("--config", help="YAML recipe shared by every run")
    c.add_argument("--feature-lr", type=float, default=1e-3, help="learning rate of the feature-mode heads")
    c.add_argument("--keep-models", action="store_true", help="keep each run's model under OUTPUT/models")
    c.add_argument(
        "--partial-freeze",
        type=int,
        default=None,
        help="layers the partial run caches (mode=partial freeze_layers=N); default half the model's",
    )
    c.add_argument("overrides", nargs="*", metavar="key=value")

    cv = sub.add_parser(
        "cross-validate", help="k-fold training of any task: a model per fold, out-of-fold predictions, the ensemble"
    )
    cv.add_argument("--task", required=True)
    cv.add_argument("--model", required=True)
    cv.add_argument("--train", required=True, help="FILE or builtin:NAME")
    cv.add_argument("--test", help="FILE or builtin:NAME:test (builtin data: its test split by default)")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--output", required=True, help="folder for the fold models, oof.jsonl, results.json, report")
    cv.add_argument("--config", help="YAML recipe every fold trains with")
    cv.add_argument("overrides", nargs="*", metavar="key=value")

    pv = sub.add_parser(
        "prune-vocab",
        help="keep only the vocabulary pieces a corpus or a script set uses; embeddings and tokenizer remapped",
    )
    pv.add_argument("--model", required=True)
    pv.add_argument("--output", required=True)
    pv.add_argument(
        "--corpus",
        nargs="+",
        default=[],
        help="text files (one line a text) or builtin:default, "
        "builtin:reviews, builtin:peoples-daily: keep every piece their tokenisation uses",
    )
    pv.add_argument("--keep", default=None, help="scripts whose pieces are all kept: any of cjk,ascii,punct")
    pv.add_argument(
        "--check",
        nargs="+",
        default=[],
        help="texts to report segmentation changes on (files or builtin:NAME[:split]); default: the corpus",
    )

    k = sub.add_parser("keywords", help="keywords of a corpus or of each class, with jieba's TextRank or TF-IDF")
    k.add_argument("--data", required=True, help="FILE or builtin:NAME[:split]")
    k.add_argument("--by-label", action="store_true", help="one list per label")
    k.add_argument("--top", type=int, default=20)
    k.add_argument("--method", choices=["textrank", "tfidf"], default="textrank")
    k.add_argument("--output", help="DIR for keywords.json, keywords.png and report.html")
    k.add_argument("--encoding", default="utf-8")
    k.add_argument("--json", action="store_true")

    e = sub.add_parser("evaluate", help="score a trained model on labelled data")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True, help="FILE or builtin:NAME[:split]")
    e.add_argument("--encoding", default=None)
    e.add_argument("--json", action="store_true")
    e.add_argument(
        "--output",
        help="DIR for metrics.json, the confusion matrix or per-type bars and report.html "
        "(default: eval-DATA inside the model's directory)",
    )

    pr = sub.add_parser("predict", help="label texts with a trained model")
    pr.add_argument("--model", required=True)
    src = pr.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="FILE (.csv .tsv .jsonl .txt) or - for standard input (one text a line)")
    src.add_argument("--text")
    src.add_argument("--question", help="a qa model: the question to answer about --context")
    pr.add_argument("--text-pair")
    pr.add_argument("--context", help="a qa model: the text the answer is read from")
    pr.add_argument("--output", help="FILE.jsonl or FILE.csv; standard output when omitted")
    pr.add_argument("--encoding", default=None)
    pr.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="records read, predicted and written at a time (default 2048; 0: the whole input at once)",
    )

    ds = sub.add_parser("distill", help="train a smaller, faster student on a fine-tuned teacher's soft labels")
    ds.add_argument("--teacher", required=True, help="a model directory that plmkit train saved")
    ds.add_argument(
        "--student",
        required=True,
        help="layers:N (N of the teacher's layers, evenly spaced, the top one kept), bottom:N (its bottom N) "
        "or a model: a name "
        "(default-zh, e5-small, ...), a directory or a hub id",
    )
    ds.add_argument("--train", required=True, help="FILE or builtin:NAME (labelled)")
    ds.add_argument("--dev", help="FILE or builtin:NAME:dev")
    ds.add_argument("--unlabeled", nargs="+", default=[], help="more texts, soft labels only: files or builtin corpora")
    ds.add_argument("--temperature", type=float, default=2.0)
    ds.add_argument("--alpha", type=float, default=0.5, help="weight of the soft (teacher) term; 1 - alpha: gold")
    ds.add_argument(
        "--vector-weight",
        type=float,
        default=0.0,
        help="weight of the MSE between the student's sentence vector (its classifier's input) and the teacher's",
    )
    ds.add_argument("--augment", type=int, default=0, help="noisy copies of each training text, soft labels only")
    ds.add_argument("--output", required=True)
    ds.add_argument("--config", help="YAML recipe (loop options; the data options are the teacher's)")
    ds.add_argument("overrides", nargs="*", metavar="key=value")

    ex = sub.add_parser("export", help="export a fine-tuned model to ONNX (optionally int8), checked against PyTorch")
    ex.add_argument("--model", required=True)
    ex.add_argument("--output", required=True, help="the exported model directory (predict, evaluate, serve read it)")
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument("--quantize", choices=["int8"], default=None, help="dynamic int8 weights (ONNX Runtime)")
    ex.add_argument("--check", help="labelled data to check parity and accuracy on (default: the model's dev data)")
    ex.add_argument("--check-limit", type=int, default=1000, help="at most this many records of it (0: all)")
    ex.add_argument(
        "--smooth", type=float, default=0.7, help="int8: SmoothQuant's alpha for the activations (0: no smoothing)"
    )
    ex.add_argument("--calibration", type=int, default=256, help="int8: check records the smoothing is measured on")

    sv = sub.add_parser("serve", help="serve a trained model over HTTP, with dynamic batching and a page to try it")
    sv.add_argument("--model", required=True)
    sv.add_argument("--host", default=None, help="default 127.0.0.1 (loopback only)")
    sv.add_argument("--port", type=int, default=None, help="default 8000")
    sv.add_argument("--config", help="YAML with serving options")
    sv.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="batching, batch_window_ms, max_batch_texts, max_queue_texts, max_request_texts, max_text_chars, "
        "max_body_bytes, graceful_seconds",
    )
    return p


def quiet_libraries() -> None:
    """transformers' per-load reports and weight-loading bars drown plmkit's own output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _one_line(text: str) -> str:
    """A message's lines joined into one (plmkit's own errors may quote a library's text)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def evaluation_dir(model: str, data: str) -> Path:
    """Where `evaluate` writes by default: eval-<data> inside the model's directory."""
    name = data.removeprefix("builtin:").replace(":", "-") if data.startswith("builtin:") else Path(data).stem
    return Path(model) / f"eval-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name) or 'data'}"


def main(argv: list[str] | None = None) -> int:
    """Exit 0; 2 on plmkit's own errors (bad input or options), 1 on any other, 130 on Ctrl-C. An error is
    one line on stderr; with PLMKIT_DEBUG=1 its traceback comes first."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    command = "plmkit " + " ".join(shlex.quote(a) for a in argv)
    debug = os.environ.get("PLMKIT_DEBUG", "") not in ("", "0")
    try:
        quiet_libraries()
        from plmkit import api
        from plmkit.config import parse_overrides

        overrides = parse_overrides(getattr(args, "overrides", []) or [])
        if args.command == "demo":
            result = api.demo(output=args.output, overrides=overrides, config=args.config)
        elif args.command == "pretrain":
            for key in ("arch", "encoding"):
                if getattr(args, key):
                    overrides[key] = getattr(args, key)
            result = api.pretrain(
                args.corpus, args.output, config=args.config, overrides=overrides, resume=args.resume, command=command
            )
            result = {k: result[k] for k in ("arch", "seconds", "parameters")} | {
                "final_loss": result["losses"][-1][1] if result["losses"] else None
            }
        elif args.command == "train":
            for key in ("task", "head", "model", "encoding"):
                if getattr(args, key):
                    overrides[key] = getattr(args, key)
            result = api.train(
                args.train,
                args.output,
                dev=args.dev,
                config=args.config,
                overrides=overrides,
                resume=args.resume,
                command=command,
            )
        elif args.command == "probe-layers":
            from plmkit.experiments.probe import probe_layers

            result = probe_layers(
                args.task,
                args.model,
                args.data,
                args.output,
                dev=args.dev,
                config=args.config,
                overrides=overrides,
                command=command,
            )
        elif args.command == "cross-validate":
            from plmkit.experiments.crossval import cross_validate

            result = cross_validate(
                args.task,
                args.model,
                args.train,
                args.output,
                folds=args.folds,
                test=args.test,
                config=args.config,
                overrides=overrides,
                command=command,
            )
        elif args.command == "compare":
            from plmkit.experiments.compare import compare

            result = compare(
                args.task,
                args.model,
                args.train,
                args.output,
                dev=args.dev,
                test=args.test,
                config=args.config,
                overrides=overrides,
                feature_lr=args.feature_lr,
                keep_models=args.keep_models,
                command=command,
                partial_freeze=args.partial_freeze,
            )
        elif args.command == "prune-vocab":
            result = api.prune_vocab(args.model, args.output, corpus=args.corpus, keep=args.keep, check=args.check)
            print(
                f"kept {result['kept']:,} of {result['before']:,} pieces; "
                f"parameters {result['parameters_before']:,} -> {result['parameters_after']:,}; "
                f"of {result['corpus_tokens']:,} checked tokens {result['unknown_share']:.4%} become unknown, "
                f"{result['changed_share']:.4%} are segmented differently "
                f"({result['changed_texts']} of {result['texts']} texts)"
            )
        elif args.command == "keywords":
            result = api.keywords(
                args.data,
                output=args.output,
                by_label=args.by_label,
                top=args.top,
                method=args.method,
                encoding=args.encoding,
            )
            if not args.json:
                for group, words in result.items():
                    print(f"{group}: " + "  ".join(f"{w} {s:.3f}" for w, s in words))
        elif args.command == "evaluate":
            output = args.output or evaluation_dir(args.model, args.data)
            result = api.evaluate(args.model, args.data, encoding=args.encoding, output=output)
            if not args.json:
                for key, value in result.items():
                    print(f"{key}: {value}")
                print(f"report: {Path(output) / 'report.html'}")
        elif args.command == "predict":
            if args.output is not None:
                api.check_output_file(args.output)  # before the model loads
            rows = api.predict_stream(  # read, predicted and written a chunk at a time: flat memory
                args.model,
                input=args.input,
                text=args.text,
                text_pair=args.text_pair,
                question=args.question,
                context=args.context,
                encoding=args.encoding,
                chunk_size=args.chunk_size,
            )
            if args.output is None:
                for row in rows:  # flushed: a pipe's reader has each row as soon as its chunk is predicted
                    print(json.dumps(row, ensure_ascii=False), flush=True)
            else:
                api.write_predictions(rows, args.output)
            return 0
        elif args.command == "distill":
            result = api.distill(
                args.teacher,
                args.student,
                args.train,
                args.output,
                dev=args.dev,
                unlabeled=args.unlabeled,
                temperature=args.temperature,
                alpha=args.alpha,
                vector_weight=args.vector_weight,
                augment=args.augment,
                config=args.config,
                overrides=overrides,
                command=command,
            )
        elif args.command == "export":
            result = api.export(
                args.model,
                args.output,
                format=args.format,
                quantize=args.quantize,
                check=args.check,
                check_limit=args.check_limit,
                smooth=args.smooth,
                calibration=args.calibration,
            )
            for name in ("fp32", "int8"):
                if name in result:
                    r = result[name]
                    metric = next((k.removeprefix("onnx_") for k in r if k.startswith("onnx_")), None)
                    line = f"{name}: max score difference {r['max_score_difference']:.2e}, "
                    line += f"{r['agreement']:.2%} of {r['records']} predictions agree"
                    if metric:
                        line += f"; {metric} {r['torch_' + metric]:.4f} (PyTorch) -> {r['onnx_' + metric]:.4f}"
                        if not r["within_tolerance"]:
                            line += f"  DROPS {r['drop_points']:.2f} POINTS (more than 0.5)"
                    print(line, file=sys.stderr)
        elif args.command == "serve":
            for key in ("host", "port"):
                if getattr(args, key) is not None:
                    overrides[key] = getattr(args, key)
            api.serve(args.model, config=args.config, overrides=overrides)
            return 0
    except PlmkitError as e:
        if debug:
            traceback.print_exc()
        print(f"plmkit {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plmkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a library's own error (torch, transformers, accelerate, the OS): its type and first line
        if debug:
            traceback.print_exc()
        message = _first_line(str(e))
        print(f"plmkit {args.command}: error: {type(e).__name__}{': ' + message if message else ''}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") != "0":  # under `accelerate launch` the main process (RANK 0) reports
        return 0
    if getattr(args, "json", False) or args.command in (
        "train",
        "pretrain",
        "probe-layers",
        "compare",
        "cross-validate",
        "prune-vocab",
        "export",
        "distill",
    ):
        print(json.dumps(result, ensure_ascii=False))
    return 0
