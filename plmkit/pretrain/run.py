"""`pretrain()`: any registered family (plmkit.pretrain.archs) from scratch or a checkpoint, on a corpus."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from plmkit.config import PretrainConfig, to_dict
from plmkit.data.builtin import CORPORA
from plmkit.data.readers import read_corpus_file
from plmkit.data.truncation import layout
from plmkit.errors import DataError
from plmkit.models.encoders import load_tokenizer, resolve_model
from plmkit.models.saving import save_model_dir
from plmkit.pretrain.archs import check_options
from plmkit.pretrain.masking import example_generator
from plmkit.pretrain.objectives import pack_corpus
from plmkit.report.plots import plot_loss_curve
from plmkit.train.loop import train_loop
from plmkit.train.processes import across_processes, from_main, is_main_process, main_first


def read_corpus(specs: Sequence[str], encoding: str = "utf-8") -> list[str]:
    lines: list[str] = []
    for spec in specs:
        if spec.startswith("builtin:"):
            name = spec.split(":", 1)[1]
            if name not in CORPORA:
                raise DataError(f"{spec!r}: unknown corpus; known: {', '.join('builtin:' + c for c in CORPORA)}")
            lines += CORPORA[name]()
        else:
            lines += read_corpus_file(spec, encoding)
    if not lines:
        raise DataError(f"{', '.join(specs)}: the corpus is empty")
    return lines


def pretrain(
    corpus: Sequence[str], output: str | Path, cfg: PretrainConfig, *, resume: bool = False, command: str | None = None
) -> dict:
    """Pretrain (or continue pretraining `cfg.init`) on `corpus`; writes a model directory,
    `pretrain_log.json` (loss per step) and `loss_curve.png` to `output`."""
    arch = check_options(cfg)
    output = Path(output)
    torch.manual_seed(cfg.loop.seed)
    lines = read_corpus(corpus)
    if cfg.init:
        source = main_first(lambda: resolve_model(cfg.init))  # a shipped model is converted on first use: once
        tokenizer = load_tokenizer(source)
        model = arch.load(source, cfg, tokenizer)
    else:  # under `accelerate launch` the main process makes it and every process gets that one
        reuse = resume and (output / "tokenizer.json").is_file()
        tokenizer = from_main(lambda: load_tokenizer(str(output)) if reuse else arch.make_tokenizer(lines, cfg))
        model = arch.build(cfg, tokenizer)
    segments = pack_corpus(lines, tokenizer, cfg.max_length, cfg.whole_word)  # room for the tokenizer's specials
    held = {
        i
        for i in range(len(segments))
        if torch.rand(1, generator=example_generator(cfg.loop.seed, -1, i)).item() < cfg.heldout_fraction
    }
    train = [s for i, s in enumerate(segments) if i not in held]
    dev = [s for i, s in enumerate(segments) if i in held]
    specials = layout(tokenizer).n_special(pair=False)
    tokens = sum(len(s["ids"]) + specials for s in train)
    parameters = sum(p.numel() for p in model.parameters())
    if is_main_process():
        print(
            f"{arch.name}: corpus {len(lines)} lines, {len(train)} training segments ({tokens} tokens), "
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

        total = 0.0
        for value in across_processes([1] * len(starts), losses):
            total += value
        return {"dev_loss": total / max(1, len(dev))}

    started = time.time()

    def log(state) -> dict:
        return {
            "arch": cfg.arch,
            "config": to_dict(cfg),
            "command": command,
            "corpus": list(corpus),
            "objective": arch.objective,
            "lines": len(lines),
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
        [len(s["ids"]) for s in train],
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
    return result
