"""Partial fine-tuning over cached lower layers: views of one model split at layer n; and
dropping the top layers of an encoder outright (`keep_layers`).

`mode=partial freeze_layers=n` runs the embeddings and the bottom n layers once over the data
(they are frozen, so their output never changes) and trains the top layers and the head on
those cached states for as many epochs as asked: each step costs the top layers only, forward
and backward. It sits between feature extraction (nothing of the encoder trains) and
fine-tuning (everything trains and everything runs every step); no peer offers it.

The two views share every parameter with the task model and change nothing in it, so the
model that is saved is the ordinary fine-tuned model: it predicts from token ids, opens with
`pipeline`, and exports like any other.
- bottom: the base encoder with layers [0, n) and no pooler; token ids -> hidden states (B, T, H).
- top: the task model whose base encoder starts at layer n: its embeddings pass the given
  `inputs_embeds` (the cached states) through unchanged and only layers [n, N) run.

Supported: encoders laid out like BERT (`embeddings`, `encoder.layer`): BERT, RoBERTa,
XLM-R/e5, ELECTRA, SpanBERT. ALBERT shares one layer's weights across depth, and GPT and
ELMo have other layouts; they are refused with the reason.

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, H hidden, N layers (of the encoder;
n is the number frozen or kept).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from plmkit.errors import ConfigError
from plmkit.models.encoders import encoder_attribute


class PassThrough(nn.Module):
    """Stands in for the embeddings in the top view: the cached states are already embedded."""

    def forward(self, input_ids=None, inputs_embeds=None, **kwargs) -> torch.Tensor:
        if inputs_embeds is None:
            raise ValueError("the top view of a split model reads cached hidden states (inputs_embeds), not token ids")
        return inputs_embeds


def _view(module: nn.Module, **children: nn.Module | None) -> nn.Module:
    """A shallow copy of `module` with some children replaced; every other child (and so every
    parameter) is the original object, and `module` itself is left as it was."""
    out = copy.copy(module)
    out._modules = dict(module._modules)
    out._modules.update(children)
    return out


def _encoder_and_layers(
    model: nn.Module, option: str = "mode: partial", instead: str = "mode=finetune with freeze_layers"
) -> tuple[nn.Module, nn.ModuleList]:
    """(the pretrained encoder inside `model`, or `model` itself when it is one; its layers)."""
    attr = encoder_attribute(model)
    base = getattr(model, attr) if attr else model
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or not isinstance(getattr(base, "embeddings", None), nn.Module):
        kind = getattr(getattr(base, "config", None), "model_type", type(base).__name__)
        reason = " (its layers share one set of weights)" if kind == "albert" else ""
        raise ConfigError(
            f"{option} supports encoders laid out like BERT (embeddings, encoder.layer); "
            f"{kind!r} is not{reason}: use {instead} instead"
        )
    return base, layers


def split(model: nn.Module, n: int) -> tuple[nn.Module, nn.Module]:
    """(bottom, top) views of `model` split below layer `n` (1 <= n < number of layers)."""
    attr = encoder_attribute(model)
    if not attr:
        raise ConfigError(
            f"mode: partial needs a task model with a pretrained encoder inside; {type(model).__name__} has none"
        )
    base, layers = _encoder_and_layers(model)
    if not 1 <= n < len(layers):
        raise ConfigError(
            f"freeze_layers: mode=partial caches the bottom N layers, N in [1, {len(layers) - 1}] "
            f"(the model has {len(layers)}); got {n}"
        )
    bottom = _view(base, encoder=_view(base.encoder, layer=layers[:n]))
    if "pooler" in bottom._modules:
        bottom._modules["pooler"] = None
    replaced = {"embeddings": PassThrough(), "encoder": _view(base.encoder, layer=layers[n:])}
    if "embeddings_project" in base._modules:  # ELECTRA: the cached states are already hidden-sized
        replaced["embeddings_project"] = nn.Identity()
    top = _view(model, **{attr: _view(base, **replaced)})
    return bottom, top


def keep_bottom_layers(model: nn.Module, n: int) -> nn.Module:
    """Drop every encoder layer from `n` up, in place (`keep_layers=N`): the task head then reads
    layer n's output. Top layers can be dropped with little loss on tasks whose information sits low
    (Sajjad et al. 2020, "On the effect of dropping layers of pre-trained transformer models"), and
    each step costs about n/N of the whole (N layers). The encoder's config says n layers, so the saved model
    loads as an ordinary n-layer model."""
    base, layers = _encoder_and_layers(model, "keep_layers", "the whole model or freeze_layers")
    if not 1 <= n <= len(layers):
        raise ConfigError(
            f"keep_layers: keeps the bottom N layers, N in [1, {len(layers)}] "
            f"(the model has {len(layers)}; 0 keeps all); got {n}"
        )
    base.encoder.layer = layers[:n]
    base.config.num_hidden_layers = n
    return model


def keep_spaced_layers(model: nn.Module, n: int) -> nn.Module:
    """Keep `n` of the encoder's L layers, evenly spaced with the top one among them (layers
    k*L/n - 1 for k = 1..n), in place: a student initialised from its teacher, as DistilBERT keeps
    every other layer of BERT. The config says n layers, so the saved model loads as an n-layer model."""
    base, layers = _encoder_and_layers(model, "student layers:N", "a smaller model as the student")
    if not 1 <= n <= len(layers):
        raise ConfigError(f"student: layers:N takes N in [1, {len(layers)}] (the teacher has {len(layers)}); got {n}")
    base.encoder.layer = nn.ModuleList(layers[round((k + 1) * len(layers) / n) - 1] for k in range(n))
    base.config.num_hidden_layers = n
    return model


@torch.no_grad()
def run_bottom(bottom: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden states (B, T, H) after the bottom layers, for a batch of token ids."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if getattr(bottom.config, "type_vocab_size", 0) > 1 and "token_type_ids" in batch:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return bottom(**inputs).last_hidden_state
