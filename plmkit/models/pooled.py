"""Any encoder with a classification head on its token states: masked mean, masked max, or both, over
the real tokens only (padding never counts; for the max it is pushed to the dtype's lowest value), or
a TextCNN / BiLSTM + TextCNN head on them (plmkit.models.text_heads).

A `[CLS]` head reads one token through a pooler; an encoder trained to be read by its mean
(e5 pools by the mean of its token states, and its checkpoint has no pooler) may suit a mean
head better. The model is a Hugging Face model type of plmkit's ("plmkit-pooled", the encoder's
own config inside), registered with AutoConfig and AutoModelForSequenceClassification on import,
so a saved directory opens with `AutoModelForSequenceClassification` and `pipeline` once plmkit
is imported.

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, H hidden, C classes.
"""

# no `from __future__ import annotations`: transformers reads the config dataclass's annotations at runtime

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import SequenceClassifierOutput

from plmkit.models.pooling import POOLINGS, pool
from plmkit.models.text_heads import TEXT_HEADS, text_head

HEADS = ("pool", *TEXT_HEADS)


@strict
class PooledConfig(PreTrainedConfig):
    model_type = "plmkit-pooled"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder_config: PreTrainedConfig | dict | None = None
    pooling: str = "mean"  # head pool
    classifier_dropout: float | int | None = None
    head: str = "pool"  # pool | textcnn | rnn_cnn
    # jieba word vectors fused into the token states before the head: none | add | concat
    word_fusion: str = "none"
    word_buckets: int = 0  # hashed word ids 1..word_buckets-1; 0 is "no word" (special tokens, padding)
    word_dim: int = 64

    def __post_init__(self, **kwargs):
        if self.word_fusion not in ("none", "add", "concat"):
            raise ValueError(f"word_fusion: unknown {self.word_fusion!r}; known: none, add, concat")
        if self.head not in HEADS:
            raise ValueError(f"head: unknown {self.head!r}; known: {', '.join(HEADS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: unknown {self.pooling!r}; known: {', '.join(POOLINGS)}")
        super().__post_init__(**kwargs)

    @property
    def type_vocab_size(self) -> int:
        return getattr(self.encoder_config, "type_vocab_size", 0) or 0

    @property
    def hidden_size(self) -> int:
        return self.encoder_config.hidden_size


class PooledForSequenceClassification(PreTrainedModel):
    """encoder (no pooler) -> masked pooling -> dropout -> Linear(H or 2H, C); or encoder -> a text head."""

    config_class = PooledConfig
    base_model_prefix = "encoder"

    def __init__(self, config: PooledConfig, encoder: nn.Module | None = None):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = encoder if encoder is not None else _without_pooler(AutoModel.from_config, config.encoder_config)
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(config.encoder_config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        hidden = config.encoder_config.hidden_size
        if config.word_fusion != "none":  # the word table, learnt with the head
            self.words = nn.Embedding(config.word_buckets, config.word_dim, padding_idx=0)
            if config.word_fusion == "add":
                self.word_proj = nn.Linear(config.word_dim, hidden, bias=False)
            else:
                hidden += config.word_dim
        if config.head == "pool":
            self.classifier = nn.Linear(hidden * (2 if config.pooling == "mean_max" else 1), config.num_labels)
        else:
            self.classifier = text_head(config.head, hidden, config.num_labels, dropout)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None) and isinstance(module, nn.Linear):
            init_linear(module, self.config.encoder_config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        word_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        """`word_ids` (B, T): each token's hashed jieba word (0 for none), read when the model fuses word
        vectors (word_fusion add | concat); without them (a plain `pipeline`) every token reads "no word"."""
        if attention_mask is None:
            given = input_ids if input_ids is not None else inputs_embeds
            attention_mask = torch.ones(given.shape[:2], dtype=torch.long, device=given.device)
        hidden = encoder_states(self, input_ids, attention_mask, token_type_ids, inputs_embeds)  # (B, T, H)
        if self.config.word_fusion != "none":
            if word_ids is None:
                word_ids = torch.zeros(hidden.shape[:2], dtype=torch.long, device=hidden.device)
            words = self.words(word_ids).to(hidden.dtype)  # (B, T, D)
            if self.config.word_fusion == "add":
                hidden = hidden + self.word_proj(words)  # (B, T, H)
            else:
                hidden = torch.cat([hidden, words], -1)  # (B, T, H+D)
        if self.config.head == "pool":
            logits = self.classifier(self.dropout(pool(hidden, attention_mask, self.config.pooling)))  # (B, C)
        else:
            logits = self.classifier(hidden, attention_mask.bool())  # (B, C): the head has its own dropout
        return SequenceClassifierOutput(logits=logits)  # the loss is the task's, outside the model


def encoder_states(model, input_ids, attention_mask, token_type_ids, inputs_embeds) -> torch.Tensor:
    """The last states (B, T, H) of `model.encoder` (a plmkit model type's own encoder) for exactly one
    of input_ids and inputs_embeds; token types only for a family that has more than one."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("give exactly one of input_ids and inputs_embeds")
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "inputs_embeds": inputs_embeds}
    if token_type_ids is not None and model.config.type_vocab_size > 1:
        inputs["token_type_ids"] = token_type_ids
    return model.encoder(**inputs).last_hidden_state  # (B, T, H)


def init_linear(module: nn.Linear, encoder_config) -> None:
    """A head's linear layer initialised as the encoder's family initialises its own."""
    nn.init.normal_(module.weight, std=getattr(encoder_config, "initializer_range", 0.02))
    nn.init.zeros_(module.bias)


def _without_pooler(build, *args, **kwargs) -> nn.Module:
    try:
        return build(*args, add_pooling_layer=False, **kwargs)
    except TypeError:  # families without a pooler take no such argument
        return build(*args, **kwargs)


def build_pooled_classifier(
    source: str,
    pooling: str,
    labels_kwargs: dict,
    dropout: float | None = None,
    trust_remote_code: bool = False,
    head: str = "pool",
    words: dict | None = None,
) -> PooledForSequenceClassification:
    """A classifier with `head` (pool, textcnn, rnn_cnn) on the pretrained encoder at `source`;
    `labels_kwargs`: num_labels, id2label, ..."""
    encoder = _without_pooler(
        AutoModel.from_pretrained, source, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    config = PooledConfig(
        encoder_config=encoder.config.to_dict(),
        pooling=pooling,
        head=head,
        **(words or {}),
        classifier_dropout=dropout,
        pad_token_id=encoder.config.pad_token_id,
        **labels_kwargs,
    )
    config.encoder_config = encoder.config
    return PooledForSequenceClassification(config, encoder=encoder)


AutoConfig.register(PooledConfig.model_type, PooledConfig, exist_ok=True)
AutoModelForSequenceClassification.register(PooledConfig, PooledForSequenceClassification, exist_ok=True)
