"""`pretrain()`: a BERT-style encoder from a corpus, with masked-LM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from plmkit.config import PretrainConfig, to_dict
from plmkit.data.builtin import CORPORA
from plmkit.data.readers import read_corpus_file
from plmkit.errors import ConfigError, DataError
from plmkit.models.encoders import load_tokenizer, resolve_model
from plmkit.models.saving import save_model_dir
from plmkit.pretrain.masking import example_generator
from plmkit.pretrain.objectives import mlm_collate, mlm_loss, pack_corpus
from plmkit.pretrain.tokenizer import train_wordpiece
from plmkit.report.plots import plot_loss_curve
from plmkit.train.loop import train_loop
from plmkit.io import atomic_write_json

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


def build_bert(cfg: PretrainConfig, tokenizer):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=max(512, cfg.max_length), pad_token_id=tokenizer.pad_token_id,
    )
    return BertForMaskedLM(config)


def pretrain(corpus: Sequence[str], output: str | Path, cfg: PretrainConfig, *, resume: bool = False,
             command: str | None = None) -> dict:
    """Pretrain (or continue pretraining `cfg.init`) on `corpus`; writes a model directory,
    `pretrain_log.json` (loss per step) and `loss_curve.png` to `output`."""
    from transformers import AutoModelForMaskedLM

    if cfg.arch != "bert":
        raise ConfigError(f"arch: {cfg.arch!r} is not available yet; available: bert")
    output = Path(output)
    torch.manual_seed(cfg.loop.seed)
    lines = read_corpus(corpus)
    if cfg.init:
        source = resolve_model(cfg.init)
        tokenizer = load_tokenizer(source)
        model = AutoModelForMaskedLM.from_pretrained(source, use_safetensors=True)
    elif resume and (output / "tokenizer.json").is_file():
        tokenizer = load_tokenizer(str(output))
        model = build_bert(cfg, tokenizer)
    else:
        tokenizer = train_wordpiece(lines, cfg.vocab_size)
        model = build_bert(cfg, tokenizer)
    segments = pack_corpus(lines, tokenizer, cfg.max_length, cfg.whole_word)
    held = {i for i in range(len(segments)) if torch.rand(1, generator=example_generator(cfg.loop.seed, -1, i)).item() < cfg.heldout_fraction}
    train = [s for i, s in enumerate(segments) if i not in held]
    dev = [s for i, s in enumerate(segments) if i in held]
    tokens = sum(len(s["ids"]) + 2 for s in train)
    print(f"corpus: {len(lines)} lines, {len(train)} training segments ({tokens} tokens), {len(dev)} held out; "
          f"vocabulary {len(tokenizer)}; parameters {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M")

    def collate(items, dynamic=cfg.dynamic_masking):
        return mlm_collate(items, tokenizer=tokenizer, seed=cfg.loop.seed, rate=cfg.mask_rate,
                           whole_word=cfg.whole_word, dynamic=dynamic)

    def evaluate(model, accelerator) -> dict[str, float]:
        total, n = 0.0, 0
        for start in range(0, len(dev), cfg.loop.eval_batch_size):
            items = [(0, start + j, s) for j, s in enumerate(dev[start : start + cfg.loop.eval_batch_size])]
            batch = {k: v.to(accelerator.device) for k, v in collate(items, dynamic=False).items()}
            total += mlm_loss(model, batch).item() * len(items)
            n += len(items)
        return {"dev_loss": total / max(1, n)}

    started = time.time()

    def log(state) -> dict:
        return {
            "arch": cfg.arch, "config": to_dict(cfg), "command": command, "corpus": list(corpus),
            "lines": len(lines), "train_tokens_per_epoch": tokens, "parameters": sum(p.numel() for p in model.parameters()),
            "losses": state.losses, "history": state.history, "seconds": round(time.time() - started, 1),
        }

    def save_best(model, state) -> None:
        save_model_dir(output, model, tokenizer, {"pretrain_log.json": log(state)})

    state = train_loop(
        model, mlm_loss, train, [len(s["ids"]) for s in train], collate, cfg.loop, output,
        evaluate=evaluate if dev else None, metric="dev_loss", greater_is_better=False,
        save_best=save_best, resume=resume,
    )
    if not dev:
        save_best(model, state)
    result = log(state)
    atomic_write_json(output / "pretrain_log.json", result)
    plot_loss_curve(state.losses, output / "loss_curve.png", f"{cfg.arch} masked-LM loss",
                    dev=[[h["step"], h["dev_loss"]] for h in state.history if "dev_loss" in h])
    return result
