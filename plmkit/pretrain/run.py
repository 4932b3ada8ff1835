"""`pretrain()`: any registered family (plmkit.pretrain.archs) from scratch or a checkpoint, on a corpus.

The corpus is never held in memory: the tokenizer trains on its lines as they are read, and its segments
are tokenized once into OUTPUT/.corpus and read from there as batches need them (plmkit.pretrain.corpus)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from plmkit.config import PretrainConfig, to_dict
from plmkit.data.truncation import layout
from plmkit.models.encoders import load_tokenizer, resolve_model
from plmkit.models.saving import save_model_dir
from plmkit.pretrain.archs import check_options
from plmkit.pretrain.corpus import CorpusLines, Rows, discard, tokenized_corpus
from plmkit.pretrain.masking import example_generator
from plmkit.report.plots import plot_loss_curve
from plmkit.train.loop import resolve_precision, train_loop
from plmkit.train.processes import across_processes, from_main, is_main_process, main_first


def read_corpus(specs: Sequence[str], encoding: str = "utf-8") -> list[str]:
    """Every line of the corpus as a list, for what needs them all at once (pretraining reads `CorpusLines`)."""
    return list(CorpusLines(specs, encoding))


def heldout(segments: int, seed: int, fraction: float) -> np.ndarray:
    """The indices of the segments held out for the dev loss, ascending: each one with probability
    `fraction`, by a draw of its own (seed, index), so the split does not depend on how the corpus is read."""
    if fraction <= 0:  # no draw is below 0: none held out, and no draws to make
        return np.zeros(0, dtype=np.int64)
    draws = (torch.rand(1, generator=example_generator(seed, -1, i)).item() for i in range(segments))
    return np.array([i for i, draw in enumerate(draws) if draw < fraction], dtype=np.int64)


def pretrain(
    corpus: Sequence[str], output: str | Path, cfg: PretrainConfig, *, resume: bool = False, command: str | None = None
) -> dict:
    """Pretrain (or continue pretraining `cfg.init`) on `corpus`; writes a model directory,
    `pretrain_log.json` (loss per step) and `loss_curve.png` to `output`."""
    arch = check_options(cfg)
    resolve_precision(cfg.loop.mixed_precision)  # fp16 on a CPU: refused before the corpus is read
    output = Path(output)
    torch.manual_seed(cfg.loop.seed)
    lines = CorpusLines(corpus, cfg.encoding)  # read from the files each time they are needed: never all in memory
    if cfg.init:
        source = main_first(lambda: resolve_model(cfg.init))  # a shipped model is converted on first use: once
        tokenizer = load_tokenizer(source)
        model = arch.load(source, cfg, tokenizer)
    else:  # under `accelerate launch` the main process makes it and every process gets that one
        reuse = resume and (output / "tokenizer.json").is_file()
        tokenizer = from_main(lambda: load_tokenizer(str(output)) if reuse else arch.make_tokenizer(lines, cfg))
        model = arch.build(cfg, tokenizer)
    # packed with room for the tokenizer's specials, on disk; read a segment at a time
    segments = tokenized_corpus(lines, output, tokenizer, cfg.max_length, cfg.whole_word)
    held = heldout(len(segments), cfg.loop.seed, cfg.heldout_fraction)
    train, dev = Rows(segments, held, rest=True), Rows(segments, held)
    lengths = train.lengths()
    specials = layout(tokenizer).n_special(pair=False)
    tokens = int(lengths.sum()) + specials * len(train)
    parameters = sum(p.numel() for p in model.parameters())
    if is_main_process():
        print(
            f"{arch.name}: corpus {segments.lines} lines, {len(train)} training segments ({tokens} tokens), "
            f"{len(dev)} held out; vocabulary {len(tokenizer)}; parameters {parameters / 1e6:.2f}M"
        )

    def collate(items, dynamic=cfg.dynamic_masking):
        c = cfg if dynamic == cfg.dynamic_masking else dataclasses.replace(cfg, dynamic_masking=dynamic)
        return arch.collate(items, tokenizer, c, train)

    def evaluate(model, accelerator) -> dict[str, float]:
        """The mean loss over the held-out segments; under `accelerate launch` each process takes a share of
        the batches and every process sums all of them, in the same order, to the same value."""
        model, size = accelerator.unwrap_model(model), cfg.loop.eval_batch_size
        starts = range(0, len(dev), size)

        def losses(batches: list[int]) -> list[float]:  # loss * items, per batch
            out = []
            for start in (starts[b] for b in batches):
                items = [(0, start + j, s) for j, s in enumerate(dev[start : start + size])]
                batch = {k: v.to(accelerator.device) for k, v in collate(items, dynamic=False).items()}
                out.append(arch.loss(model, batch).item() * len(items))
            return out

        return {"dev_loss": sum(across_processes([1] * len(starts), losses)) / max(1, len(dev))}

    started = time.time()

    def log(state) -> dict:
        return {
            "arch": cfg.arch,
            "config": to_dict(cfg),
            "command": command,
            "corpus": list(corpus),
            "objective": arch.objective,
            "lines": segments.lines,
            "train_tokens_per_epoch": tokens,
            "parameters": parameters,
            "losses": state.losses,
            "history": state.history,
            "seconds": round(time.time() - started, 1),
        }

    def save_best(model, state) -> None:
        arch.save(model, tokenizer, output, {"pretrain_log.json": log(state)})

    state = train_loop(
        model,
        arch.loss,
        train,
        lengths,
        collate,
        cfg.loop,
        output,
        evaluate=evaluate if dev else None,
        metric="dev_loss",
        greater_is_better=False,
        save_best=save_best,
        resume=resume,
    )
    result = log(state)
    if is_main_process():  # under `accelerate launch` the others write nothing
        save_model_dir(output, extra={"pretrain_log.json": result})  # the whole run's log, in the model's manifest
        plot_loss_curve(
            state.losses,
            output / "loss_curve.png",
            f"{arch.name}: {arch.objective} loss",
            dev=[[h["step"], h["dev_loss"]] for h in state.history if "dev_loss" in h],
        )
        discard(output)  # the tokenized corpus: kept for a resume until here, like the checkpoint
    segments.close()
    return result
