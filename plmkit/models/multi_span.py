"""Extractive QA with any number of answers: every context token tagged O, B (an answer's first token)
or I (inside one), a softmax per token over the three, so answers are the B I* runs (NER read as
reading comprehension: the question says which type to tag). Li et al. 2020 score a start and an end
per token through independent sigmoids; on a tiny random encoder that formulation stalls at the base
rate (every token "no start") for hundreds of steps, where the per-token softmax learns like the
taggers do, so plmkit tags.

The model is a Hugging Face model type of plmkit's ("plmkit-multi-span", the encoder's own config
inside), registered with AutoConfig and AutoModelForTokenClassification on import, so a saved
directory opens with `AutoModelForTokenClassification` once plmkit is imported; its logits are (B, T,
3) over O, B, I (config.id2label). The loss (cross-entropy over context tokens) is the task's.

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, H hidden.
"""

# no `from __future__ import annotations`: transformers reads the config dataclass's annotations at runtime

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import TokenClassifierOutput

from plmkit.models.pooled import _without_pooler, encoder_states, init_linear


@strict
class MultiSpanConfig(PreTrainedConfig):
    model_type = "plmkit-multi-span"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder_config: PreTrainedConfig | dict | None = None
    classifier_dropout: float | int | None = None

    @property
    def type_vocab_size(self) -> int:
        return getattr(self.encoder_config, "type_vocab_size", 0) or 0

    @property
    def hidden_size(self) -> int:
        return self.encoder_config.hidden_size


TAGS = ("O", "B", "I")


class MultiSpanForQuestionAnswering(PreTrainedModel):
    """encoder (no pooler) -> dropout -> Linear(H, 3): an O, B and I logit per token."""

    config_class = MultiSpanConfig
    base_model_prefix = "encoder"

    def __init__(self, config: MultiSpanConfig, encoder: nn.Module | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else _without_pooler(AutoModel.from_config, config.encoder_config)
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(config.encoder_config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(dropout)
        self.qa_outputs = nn.Linear(config.encoder_config.hidden_size, len(TAGS))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "qa_outputs", None):
            init_linear(module, self.config.encoder_config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        hidden = encoder_states(self, input_ids, attention_mask, token_type_ids, inputs_embeds)  # (B, T, H)
        return TokenClassifierOutput(logits=self.qa_outputs(self.dropout(hidden)))  # (B, T, 3)


def build_multi_span(
    source: str, dropout: float | None = None, trust_remote_code: bool = False
) -> MultiSpanForQuestionAnswering:
    """The multi-span reader on the pretrained encoder at `source`."""
    encoder = _without_pooler(
        AutoModel.from_pretrained, source, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    config = MultiSpanConfig(
        encoder_config=encoder.config.to_dict(),
        classifier_dropout=dropout,
        pad_token_id=encoder.config.pad_token_id,
        id2label=dict(enumerate(TAGS)),
        label2id={t: i for i, t in enumerate(TAGS)},
    )
    config.encoder_config = encoder.config
    return MultiSpanForQuestionAnswering(config, encoder=encoder)


AutoConfig.register(MultiSpanConfig.model_type, MultiSpanConfig, exist_ok=True)
AutoModelForTokenClassification.register(MultiSpanConfig, MultiSpanForQuestionAnswering, exist_ok=True)
