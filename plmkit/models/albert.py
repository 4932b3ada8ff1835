"""ALBERT: factorised embeddings (E < H) and cross-layer parameter sharing, in four modes.

- ``all``: Hugging Face's own ALBERT with one layer group that every layer runs; its checkpoints load with
  plain transformers.
- ``attention``, ``ffn``, ``none``: model type "plmkit-albert", one layer group per layer. In ``attention``
  mode every layer's attention block (query, key, value, dense and the post-attention LayerNorm) is layer 0's;
  in ``ffn`` mode every layer's ``ffn`` and ``ffn_output`` are layer 0's (the layer norms stay per layer);
  ``none`` shares nothing (a control).

The partial sharing is declared in transformers' tied-weights mechanism: construction ties layers 1.. to
layer 0, ``save_pretrained`` writes each shared tensor once, and ``from_pretrained`` ties them again instead
of initialising them. Importing this module registers "plmkit-albert" with the Auto classes.

Shapes (legend in plmkit/models/__init__.py): E embedding size, H hidden.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    AlbertForPreTraining,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
)

MODEL_TYPE = "plmkit-albert"

# sharing mode -> the AlbertLayer submodules whose parameters every layer takes from layer 0
SHARED_BLOCKS: dict[str, tuple[str, ...]] = {
    "attention": ("attention",),
    "ffn": ("ffn", "ffn_output"),
    "none": (),
}
SHARING_MODES: tuple[str, ...] = ("all", *SHARED_BLOCKS)


def _check_sharing(sharing: str) -> None:
    if sharing not in SHARING_MODES:
        raise ValueError(f"unknown ALBERT sharing {sharing!r}; valid modes: {', '.join(SHARING_MODES)}")


@strict
class SharedAlbertConfig(AlbertConfig):
    """An AlbertConfig with one layer group per layer and a ``sharing`` mode: attention, ffn or none."""

    model_type = MODEL_TYPE

    sharing: str = "attention"
    num_hidden_groups: int | None = None  # None -> num_hidden_layers

    def __post_init__(self, **kwargs) -> None:
        if self.num_hidden_groups is None:
            self.num_hidden_groups = self.num_hidden_layers
        super().__post_init__(**kwargs)

    def validate_sharing(self) -> None:
        """Part of ``@strict`` validation: runs after construction and before saving."""
        if self.sharing not in SHARED_BLOCKS:
            raise ValueError(f"sharing must be one of {', '.join(SHARED_BLOCKS)} (use AlbertConfig for 'all')")
        if self.num_hidden_groups != self.num_hidden_layers or self.inner_group_num != 1:
            raise ValueError(
                f"{MODEL_TYPE} needs one layer group per layer: num_hidden_groups == num_hidden_layers "
                f"({self.num_hidden_groups} vs {self.num_hidden_layers}) and inner_group_num == 1"
            )


def albert_config(
    *,
    vocab_size: int,
    embedding_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    pad_token_id: int,
    sharing: str,
) -> AlbertConfig:
    """An ALBERT config: AlbertConfig for sharing 'all', SharedAlbertConfig for 'attention', 'ffn', 'none'."""
    _check_sharing(sharing)
    sizes = dict(
        vocab_size=vocab_size,
        embedding_size=embedding_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
    )
    if sharing == "all":
        return AlbertConfig(**sizes, num_hidden_groups=1, inner_group_num=1)
    return SharedAlbertConfig(**sizes, sharing=sharing)


def count_parameters(model: nn.Module) -> int:
    """Parameters counted once each: ``nn.Module.parameters`` yields a tied parameter only once."""
    return sum(p.numel() for p in model.parameters())


def shared_layer_ties(model: PreTrainedModel) -> dict[str, str]:
    """{target: source} parameter names: each shared parameter of layers 1.. -> the same one of layer 0."""
    blocks = SHARED_BLOCKS[model.config.sharing]
    base = model.base_model  # the AlbertModel: the model itself, or its `albert` attribute in a head model
    prefix = "" if base is model else f"{model.base_model_prefix}."
    first_layer = base.encoder.albert_layer_groups[0].albert_layers[0]
    suffixes = [f"{block}.{name}" for block in blocks for name, _ in getattr(first_layer, block).named_parameters()]
    ties = {}
    for group in range(1, model.config.num_hidden_groups):
        for suffix in suffixes:
            target = f"{prefix}encoder.albert_layer_groups.{group}.albert_layers.0.{suffix}"
            ties[target] = f"{prefix}encoder.albert_layer_groups.0.albert_layers.0.{suffix}"
    return ties


class _LayerSharing:
    """Declares a plmkit-albert model's cross-layer ties to transformers (mixed into each class below).

    ``get_expanded_tied_weights_keys`` is what ``post_init``, ``from_pretrained`` and ``tie_weights`` tie;
    ``_tied_weights_keys`` names the aliases ``save_pretrained`` may drop from the safetensors file.
    """

    def post_init(self) -> None:
        self._tied_weights_keys = {**(type(self)._tied_weights_keys or {}), **shared_layer_ties(self)}
        if self.base_model is not self:
            # a head model's `albert` is Hugging Face's AlbertModel: name its aliases too, so that
            # `model.albert.save_pretrained(...)` also writes each shared tensor once
            self.base_model._tied_weights_keys = shared_layer_ties(self.base_model)
        super().post_init()

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict[str, str]:
        # the base method returns no ties when config.tie_word_embeddings is False; layer sharing must not depend on it
        return {**super().get_expanded_tied_weights_keys(all_submodels), **shared_layer_ties(self)}


# One class per Auto class that needs one; each is Hugging Face's class plus the layer ties.
class SharedAlbertModel(_LayerSharing, AlbertModel):
    config_class = SharedAlbertConfig


class SharedAlbertForPreTraining(_LayerSharing, AlbertForPreTraining):
    config_class = SharedAlbertConfig


class SharedAlbertForMaskedLM(_LayerSharing, AlbertForMaskedLM):
    config_class = SharedAlbertConfig


class SharedAlbertForSequenceClassification(_LayerSharing, AlbertForSequenceClassification):
    config_class = SharedAlbertConfig


class SharedAlbertForTokenClassification(_LayerSharing, AlbertForTokenClassification):
    config_class = SharedAlbertConfig


AUTO_CLASSES = {
    AutoModel: SharedAlbertModel,
    AutoModelForPreTraining: SharedAlbertForPreTraining,
    AutoModelForMaskedLM: SharedAlbertForMaskedLM,
    AutoModelForSequenceClassification: SharedAlbertForSequenceClassification,
    AutoModelForTokenClassification: SharedAlbertForTokenClassification,
}


def register() -> None:
    """Register plmkit-albert with AutoConfig and the Auto model classes; safe to call again."""
    AutoConfig.register(MODEL_TYPE, SharedAlbertConfig, exist_ok=True)
    for auto_class, model_class in AUTO_CLASSES.items():
        auto_class.register(SharedAlbertConfig, model_class, exist_ok=True)


register()
