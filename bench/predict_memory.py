"""Peak memory and speed of `plmkit predict` on inputs of 10,000 to 1,000,000 lines, streamed in chunks
against the whole input at once (`--chunk-size 0`, the way predict worked before it streamed).

A tiny BERT (hidden 32, 2 layers, a 300-piece WordPiece vocabulary, the test suite's) is fine-tuned for
one epoch on a toy classification task, once; then for every size a text file of that many lines (5 to
40 characters each) is predicted by `plmkit predict --input FILE --output OUT.jsonl` in a child process
of its own. Its peak resident memory is that process's ru_maxrss (os.wait4), its time the wall clock
around it, model loading included. `--text` (one text, no input file) gives the floor: what loading
Python, torch and the model costs before any input.

    python bench/predict_memory.py [--sizes 10000,100000,1000000] [--chunk-sizes 2048,0] [--whole-max 100000]
                                   [--threads 1]

Writes runs/predict_memory/result.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHARS = "好棒赞优美爱差坏烂糟恨丑的东西一二三四五六七八九十我爱北京天安门子丑寅卯辰巳午未申酉戌亥甲乙丙丁"


def build_model(d: Path) -> Path:
    """The tiny BERT of tests/conftest.py, fine-tuned for one epoch on its toy task; made once."""
    model = d / "model"
    if (model / "plmkit.json").is_file():
        return model
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import save_tiny_bert, toy_rows, write_csv

    from plmkit import api
    from plmkit.pretrain.tokenizer import train_wordpiece

    corpus = ["".join(t for t, _ in toy_rows(50, s)) for s in range(20)]
    corpus += ["我爱北京天安门 hello world 2024年，ＡＢＣ１２３。", "子丑寅卯辰巳午未申酉戌亥甲乙丙丁戊己庚辛壬癸"] * 5
    tiny = save_tiny_bert(d / "tiny-bert", train_wordpiece(corpus, vocab_size=300))
    train = write_csv(d / "train.csv", toy_rows(160, 1))
    overrides = {"model": str(tiny), "epochs": "1", "batch_size": "16", "lr": "3e-3", "progress": "false"}
    api.train(str(train), model, overrides=overrides)
    return model


def make_input(d: Path, n: int) -> Path:
    path = d / f"in-{n}.txt"
    if path.is_file() and path.stat().st_size > 0:
        return path
    rng = random.Random(n)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write("".join(rng.choice(CHARS) for _ in range(rng.randint(5, 40))) + "\n")
    return path


def run(args: list[str], threads: int) -> dict:
    """`plmkit ARGS` in a child process with `threads` threads (0: torch's default): its peak RSS (MiB)
    and wall time (s)."""
    env = os.environ | ({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plmkit", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env
    )
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss in KiB on Linux
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"plmkit {' '.join(args)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1)}


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--chunk-sizes", default="2048,0", help="0: the whole input at once (as before streaming)")
    p.add_argument("--whole-max", type=int, default=100_000, help="largest input to run at chunk size 0")
    p.add_argument("--out", default=str(ROOT / "runs" / "predict_memory"))
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of each run (0: torch's default); on cores other jobs share, two threads of a tiny "
        "model's small matrix products wait on each other more than they work",
    )
    a = p.parse_args(argv)
    d = Path(a.out)
    d.mkdir(parents=True, exist_ok=True)
    model = build_model(d)
    rows = [
        {"lines": 0, "chunk_size": None, **run(["predict", "--model", str(model), "--text", "好棒的东西"], a.threads)}
    ]
    print(json.dumps(rows[-1]), flush=True)
    for n in [int(s) for s in a.sizes.split(",")]:
        source = make_input(d, n)
        for chunk in [int(c) for c in a.chunk_sizes.split(",")]:
            if chunk == 0 and n > a.whole_max:
                continue
            out = d / f"out-{n}-{chunk}.jsonl"
            args = ["predict", "--model", str(model), "--input", str(source), "--output", str(out)]
            result = run([*args, "--chunk-size", str(chunk)], a.threads)
            with open(out, encoding="utf-8") as f:
                written = sum(1 for _ in f)
            assert written == n, (written, n)
            out.unlink()
            rows.append({"lines": n, "chunk_size": chunk, **result, "lines_per_s": round(n / result["seconds"])})
            print(json.dumps(rows[-1]), flush=True)
    import torch

    result = {
        "model": "tiny BERT (hidden 32, 2 layers), classification",
        "threads": a.threads or torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "rows": rows,
    }
    (d / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| input lines | chunk size | peak RSS (MiB) | wall time (s) | lines/s |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        size = r["chunk_size"]
        chunk = "— (`--text`)" if size is None else "all (0)" if size == 0 else f"{size:,}"
        speed = f"{r['lines_per_s']:,}" if r["lines"] else "—"
        print(f"| {r['lines']:,} | {chunk} | {r['peak_rss_mib']:,.0f} | {r['seconds']:,.1f} | {speed} |")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
