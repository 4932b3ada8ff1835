"""The model families `plmkit pretrain --arch NAME` trains: one record each.

A record says how to make the vocabulary, build the pretraining model fresh or load it from a
checkpoint, turn packed corpus segments into batches, compute the loss, and save what fine-tunes.
Every family but ELMo is a Hugging Face model type; ELMo (and ALBERT with partial sharing) are
plmkit model types registered with the Auto classes, so `AutoModel` opens them once plmkit is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.config import PretrainConfig
from plmkit.errors import ConfigError, ModelError
from plmkit.models.saving import save_model_dir
from plmkit.pretrain.arch import (
    ARCHS,
    Arch,
    Batch,
    load_checked,
    masking,
    mlm_items,
    model_inputs,
    positions,
    wordpiece,
)
from plmkit.pretrain.masking import IGNORE_INDEX
from plmkit.pretrain.objectives import (
    SBO_FILE,
    ElectraPretrainer,
    SpanBertPretrainer,
    SpanBoundaryHead,
    mlm_loss,
    pair_collate,
    rtd_labels,
    rtd_loss,
    sample_replacements,
    sbo_loss,
    span_collate,
)
from plmkit.pretrain.tokenizer import train_byte_bpe


def check_options(cfg: PretrainConfig) -> Arch:
    arch = ARCHS.get(cfg.arch)
    if cfg.whole_word and (not arch.masks or arch.name == "spanbert"):
        raise ConfigError(
            f"whole_word: arch {arch.name!r} does not mask words "
            f"({'it masks spans' if arch.name == 'spanbert' else 'it is a language model'})"
        )
    if cfg.nsp and arch.name != "bert":
        raise ConfigError(
            f"nsp: next-sentence prediction is a bert objective, not {arch.name!r}'s"
            + (" (albert uses sentence-order prediction always)" if arch.name == "albert" else "")
        )
    if not 0 < cfg.mask_rate < 1:
        raise ConfigError(f"mask_rate: must be between 0 and 1, got {cfg.mask_rate}")
    if cfg.arch == "albert":
        from plmkit.models.albert import SHARING_MODES

        if cfg.albert.sharing not in SHARING_MODES:
            raise ConfigError(f"albert.sharing: unknown {cfg.albert.sharing!r}; known: {', '.join(SHARING_MODES)}")
    if cfg.arch == "albert" and not cfg.init and cfg.albert.embedding_size > cfg.hidden_size:
        raise ConfigError(
            f"albert.embedding_size: {cfg.albert.embedding_size} is above hidden_size {cfg.hidden_size}; "
            "factorised embeddings need E <= H"
        )
    if cfg.arch == "electra" and not 0 < cfg.electra.generator_size <= 1:
        raise ConfigError(f"electra.generator_size: must be in (0, 1], got {cfg.electra.generator_size}")
    if cfg.arch == "elmo" and cfg.hidden_size % 2:
        raise ConfigError(f"hidden_size: elmo splits it between the two directions; {cfg.hidden_size} is odd")
    return arch


# --- BERT: MLM, optional NSP -------------------------------------------------------------------


def _bert_config(cfg: PretrainConfig, tokenizer):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=positions(cfg),
        pad_token_id=tokenizer.pad_token_id,
    )


def _bert_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import BertForMaskedLM, BertForPreTraining

    return (BertForPreTraining if cfg.nsp else BertForMaskedLM)(_bert_config(cfg, tokenizer))


def _bert_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    return load_checked(AutoModelForPreTraining if cfg.nsp else AutoModelForMaskedLM, source, ARCHS.get("bert"))


def _pairs(kind: str) -> Callable[..., Batch]:
    """A collate of sentence pairs (`kind` nsp or sop) with MLM on top, from the config's masking options."""

    def collate(items, tokenizer, cfg: PretrainConfig, pool) -> Batch:
        return pair_collate(items, tokenizer=tokenizer, **masking(cfg), kind=kind, pool=pool)

    return collate


def _bert_collate(items, tokenizer, cfg: PretrainConfig, pool) -> Batch:
    return (_pairs("nsp") if cfg.nsp else mlm_items)(items, tokenizer, cfg, pool)


def _bert_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    out = model.bert(**model_inputs(batch, with_types=True))
    loss = mlm_loss(model.cls.predictions, out.last_hidden_state, batch["labels"])
    if "pair_labels" in batch:  # BertForPreTraining: NSP from the pooled [CLS]
        loss = loss + F.cross_entropy(model.cls.seq_relationship(out.pooler_output).float(), batch["pair_labels"])
    return loss


ARCHS.add(
    "bert",
    Arch("bert", "masked-LM", wordpiece, _bert_build, _bert_load, _bert_collate, _bert_loss, model_types=("bert",)),
)


# --- ALBERT: factorised embeddings, cross-layer sharing, MLM + SOP ------------------------------


def _albert_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import AutoModelForPreTraining

    from plmkit.models.albert import albert_config

    config = albert_config(
        vocab_size=len(tokenizer),
        embedding_size=cfg.albert.embedding_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=positions(cfg),
        pad_token_id=tokenizer.pad_token_id,
        sharing=cfg.albert.sharing,
    )
    return AutoModelForPreTraining.from_config(config)


def _albert_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import AutoModelForPreTraining

    import plmkit.models.albert  # noqa: F401  (registers plmkit-albert)

    return load_checked(AutoModelForPreTraining, source, ARCHS.get("albert"))


def _albert_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    out = model.albert(**model_inputs(batch, with_types=True))
    mlm = mlm_loss(model.predictions, out.last_hidden_state, batch["labels"])
    return mlm + F.cross_entropy(model.sop_classifier(out.pooler_output).float(), batch["pair_labels"])


ARCHS.add(
    "albert",
    Arch(
        "albert",
        "masked-LM + sentence order",
        wordpiece,
        _albert_build,
        _albert_load,
        _pairs("sop"),
        _albert_loss,
        model_types=("albert", "plmkit-albert"),
    ),
)


# --- RoBERTa: byte-level BPE, dynamic masking, MLM only --------------------------------------------


def _roberta_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import RobertaConfig, RobertaForMaskedLM

    pad = tokenizer.pad_token_id
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=positions(cfg) + pad + 1,  # positions start after padding_idx
        type_vocab_size=1,
        pad_token_id=pad,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return RobertaForMaskedLM(config)


def _roberta_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import AutoModelForMaskedLM

    return load_checked(AutoModelForMaskedLM, source, ARCHS.get("roberta"))


def _roberta_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    return mlm_loss(model.lm_head, model.roberta(**model_inputs(batch)).last_hidden_state, batch["labels"])


ARCHS.add(
    "roberta",
    Arch(
        "roberta",
        "masked-LM",
        lambda lines, cfg: train_byte_bpe(lines, cfg.vocab_size, "roberta", positions(cfg)),
        _roberta_build,
        _roberta_load,
        mlm_items,
        _roberta_loss,
        model_types=("roberta",),
    ),
)


# --- ELECTRA: a small MLM generator, a discriminator on replaced-token detection -------------------


def _electra_configs(cfg: PretrainConfig, tokenizer):
    from transformers import ElectraConfig

    def config(hidden: int, heads: int, intermediate: int) -> ElectraConfig:
        return ElectraConfig(
            vocab_size=len(tokenizer),
            embedding_size=cfg.hidden_size,
            hidden_size=hidden,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=positions(cfg),
            pad_token_id=tokenizer.pad_token_id,
        )

    share = cfg.electra.generator_size
    heads = max(1, round(cfg.num_heads * share))
    hidden = max(heads, round(cfg.hidden_size * share / heads) * heads)  # a multiple of its heads
    return config(hidden, heads, max(1, round(cfg.intermediate_size * share))), config(
        cfg.hidden_size, cfg.num_heads, cfg.intermediate_size
    )


def _electra_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    gen_config, disc_config = _electra_configs(cfg, tokenizer)
    return ElectraPretrainer(
        ElectraForMaskedLM(gen_config), ElectraForPreTraining(disc_config), cfg.electra.disc_weight, cfg.loop.seed
    )


def _electra_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import AutoModelForMaskedLM, ElectraForMaskedLM, ElectraForPreTraining

    discriminator = load_checked(ElectraForPreTraining, source, ARCHS.get("electra"))
    if (Path(source) / "generator" / "config.json").is_file():
        generator = AutoModelForMaskedLM.from_pretrained(str(Path(source) / "generator"), use_safetensors=True)
    else:  # a discriminator alone (e.g. a hub checkpoint): a fresh generator of the configured size
        generator = ElectraForMaskedLM(_electra_configs(cfg, tokenizer)[0])
        if generator.config.embedding_size != discriminator.config.embedding_size:
            raise ModelError(
                f"{source}: the discriminator's embeddings are {discriminator.config.embedding_size} wide; "
                f"set hidden_size so a new generator can share them"
            )
    return ElectraPretrainer(generator, discriminator, cfg.electra.disc_weight, cfg.loop.seed)


def _electra_loss(model: ElectraPretrainer, batch: Batch) -> torch.Tensor:
    labels = batch["labels"]  # (B, T)
    chosen = labels != IGNORE_INDEX  # (B, T)
    gen = model.generator
    hidden = gen.electra(**model_inputs(batch)).last_hidden_state  # (B, T, Hg)
    logits = gen.generator_lm_head(gen.generator_predictions(hidden[chosen]))  # (M, V)
    gen_loss = F.cross_entropy(logits.float(), labels[chosen])
    original = torch.where(chosen, labels, batch["input_ids"])  # (B, T)
    replaced = original.clone()
    replaced[chosen] = sample_replacements(logits.detach(), model.sampler(logits.device))
    disc_logits = model.discriminator(input_ids=replaced, attention_mask=batch["attention_mask"]).logits  # (B, T)
    disc_loss = rtd_loss(disc_logits, rtd_labels(original, replaced), batch["attention_mask"])
    return gen_loss + model.disc_weight * disc_loss


def _electra_save(model: ElectraPretrainer, tokenizer, output: Path, extra: dict) -> None:
    save_model_dir(output / "generator", model.generator, tokenizer)
    save_model_dir(output, model.discriminator, tokenizer, extra)


ARCHS.add(
    "electra",
    Arch(
        "electra",
        "MLM + weighted replaced-token detection",
        wordpiece,
        _electra_build,
        _electra_load,
        mlm_items,
        _electra_loss,
        _electra_save,
        model_types=("electra",),
    ),
)


# --- SpanBERT: span masking + the span-boundary objective --------------------------------------


def _spanbert_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import BertForMaskedLM

    return SpanBertPretrainer(
        BertForMaskedLM(_bert_config(cfg, tokenizer)),
        SpanBoundaryHead(cfg.hidden_size, cfg.spanbert.max_span),
        cfg.spanbert.sbo_weight,
    )


def _spanbert_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    mlm = load_checked(AutoModelForMaskedLM, source, ARCHS.get("spanbert"))
    sbo = SpanBoundaryHead(mlm.config.hidden_size, cfg.spanbert.max_span)
    if (Path(source) / SBO_FILE).is_file():
        sbo.load_state_dict(load_file(str(Path(source) / SBO_FILE)))
    return SpanBertPretrainer(mlm, sbo, cfg.spanbert.sbo_weight)


def _spanbert_collate(items, tokenizer, cfg: PretrainConfig, pool) -> Batch:
    return span_collate(
        items,
        tokenizer=tokenizer,
        seed=cfg.loop.seed,
        rate=cfg.mask_rate,
        dynamic=cfg.dynamic_masking,
        p=cfg.spanbert.geometric_p,
        max_len=cfg.spanbert.max_span,
    )


def _spanbert_loss(model: SpanBertPretrainer, batch: Batch) -> torch.Tensor:
    hidden = model.mlm.bert(**model_inputs(batch)).last_hidden_state  # (B, T, H)
    mlm = mlm_loss(model.mlm.cls.predictions, hidden, batch["labels"])
    return mlm + model.sbo_weight * sbo_loss(hidden, batch, model.sbo, model.mlm.cls.predictions.decoder)


def _spanbert_save(model: SpanBertPretrainer, tokenizer, output: Path, extra: dict) -> None:
    from safetensors.torch import save_file

    sbo = {k: v.contiguous() for k, v in model.sbo.state_dict().items()}
    save_model_dir(output, model.mlm, tokenizer, extra, files={SBO_FILE: lambda p: save_file(sbo, str(p))})


ARCHS.add(
    "spanbert",
    Arch(
        "spanbert",
        "masked-LM + span boundary",
        wordpiece,
        _spanbert_build,
        _spanbert_load,
        _spanbert_collate,
        _spanbert_loss,
        _spanbert_save,
        model_types=("bert",),
    ),
)


# --- GPT: causal LM over byte-level BPE -----------------------------------------------------------


def _gpt_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=cfg.hidden_size,
        n_layer=cfg.num_layers,
        n_head=cfg.num_heads,
        n_inner=cfg.intermediate_size,
        n_positions=positions(cfg),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def _gpt_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return load_checked(AutoModelForCausalLM, source, ARCHS.get("gpt"))


def _lm_collate(items, tokenizer, cfg: PretrainConfig, pool) -> Batch:
    """A causal or bidirectional LM reads the segment as the tokenizer frames a text (`A <eos>`, `[CLS] A [SEP]`)."""
    from plmkit.data.batching import length_mask, pad
    from plmkit.data.truncation import layout

    frame = layout(tokenizer).frame
    ids = [frame(seg["ids"])["input_ids"] for _, _, seg in items]
    input_ids = pad(ids, tokenizer.pad_token_id)  # (B, T)
    lengths = torch.tensor([len(x) for x in ids])  # (B,)
    return {"input_ids": input_ids, "attention_mask": length_mask(lengths, input_ids.shape[1]).long()}


def _gpt_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    hidden = model.transformer(**model_inputs(batch)).last_hidden_state  # (B, T, H)
    real = batch["attention_mask"][:, 1:].bool()  # (B, T-1): positions with a next token to predict
    logits = model.lm_head(hidden[:, :-1][real])  # (M, V)
    return F.cross_entropy(logits.float(), batch["input_ids"][:, 1:][real])


ARCHS.add(
    "gpt",
    Arch(
        "gpt",
        "causal LM",
        lambda lines, cfg: train_byte_bpe(lines, cfg.vocab_size, "gpt", positions(cfg)),
        _gpt_build,
        _gpt_load,
        _lm_collate,
        _gpt_loss,
        model_types=("gpt2",),
        masks=False,
    ),
)


# --- ELMo: forward and backward LSTM language models ------------------------------------------------


def _elmo_build(cfg: PretrainConfig, tokenizer) -> nn.Module:
    from plmkit.models.elmo import ElmoForLanguageModeling, build_elmo

    return build_elmo(
        tokenizer,
        ElmoForLanguageModeling,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        embedding_size=cfg.hidden_size // 2,
        token_encoder=cfg.elmo.token_encoder,
    )


def _elmo_load(source: str, cfg: PretrainConfig, tokenizer) -> nn.Module:
    from plmkit.models.elmo import ElmoForLanguageModeling

    return load_checked(ElmoForLanguageModeling, source, ARCHS.get("elmo"))


def _elmo_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model(**model_inputs(batch)).loss


ARCHS.add(
    "elmo",
    Arch(
        "elmo",
        "forward + backward LM",
        wordpiece,
        _elmo_build,
        _elmo_load,
        _lm_collate,
        _elmo_loss,
        model_types=("plmkit-elmo",),
        masks=False,
    ),
)
