"""An encoder with a tagging head: softmax (per-unit linear), crf, or bilstm_crf.

The head reads one vector per unit (character or word): the encoder's output at the
unit's first sub-token; the other sub-tokens carry no label and get no prediction.
Saved, the encoder's weights keep their Hugging Face names (`bert.…`) beside
`classifier.…`, so a softmax tagger also opens as `AutoModelForTokenClassification`.

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, U units, H hidden (H' a BiLSTM head's
output), K tags, D a bigram embedding's width (in packed_lstm: any input width, D' the output's).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from plmkit.models.crf import CRF, allowed_transitions

HEADS = ("softmax", "crf", "bilstm_crf")


def load_encoder(source: str, config=None, trust_remote_code: bool = False) -> nn.Module:
    """AutoModel without its pooler (a tagger never reads it): from a checkpoint, or fresh from `config`."""
    from transformers import AutoModel

    def build(**kwargs):
        if config is not None:
            return AutoModel.from_config(config, trust_remote_code=trust_remote_code, **kwargs)
        return AutoModel.from_pretrained(source, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs)

    try:
        return build(add_pooling_layer=False)
    except TypeError:  # families without a pooler take no such argument
        return build()


def encoder_dropout(config) -> float:
    """The checkpoint's own dropout on hidden states, by whichever name its family gives it."""
    for key in ("hidden_dropout_prob", "resid_pdrop", "dropout"):
        if isinstance(getattr(config, key, None), float):
            return getattr(config, key)
    return 0.1


def packed_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A batch-first LSTM over the real positions only: (B, T, D), mask (B, T) -> (B, T, D'), zeros on padding."""
    lengths = mask.sum(1).clamp(min=1).cpu()  # (B,)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]  # (B, T, D')


class Tagger(nn.Module):
    def __init__(
        self,
        encoder: nn.Module | None,
        labels: list[str],
        head: str,
        scheme: str,
        dropout: float | None = None,
        hidden_size: int | None = None,
        *,
        bigram_buckets: int = 0,
        bigram_dim: int = 64,
    ):
        """`encoder` None: a head alone, fed unit vectors of `hidden_size` (feature extraction).
        `bigram_buckets` > 0: each unit's vector is joined by the embeddings of its two hashed
        character bigrams (`bigram_dim` each) before the head: the n-gram memory a CRF's features have."""
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head: unknown {head!r}; known: {', '.join(HEADS)}")
        self.encoder, self.labels, self.head, self.scheme = encoder, list(labels), head, scheme
        self.config = encoder.config if encoder is not None else None
        hidden = encoder.config.hidden_size if encoder is not None else hidden_size
        default_dropout = encoder_dropout(encoder.config) if encoder is not None else 0.1
        self.dropout = nn.Dropout(default_dropout if dropout is None else dropout)
        self.bigrams = nn.Embedding(bigram_buckets, bigram_dim, padding_idx=0) if bigram_buckets else None
        joined = hidden + (2 * bigram_dim if self.bigrams is not None else 0)
        self.lstm = nn.LSTM(joined, hidden // 2, batch_first=True, bidirectional=True) if head == "bilstm_crf" else None
        self.classifier = nn.Linear(2 * (hidden // 2) if self.lstm else joined, len(labels))
        self.crf = CRF(len(labels), *allowed_transitions(labels, scheme)) if head != "softmax" else None

    def forward(
        self, input_ids, attention_mask, unit_pos, unit_mask, token_type_ids=None, inputs_embeds=None, bigrams=None
    ) -> torch.Tensor:
        """Emission scores (B, U, K) for the units at `unit_pos` (B, U) of `input_ids` (B, T); with
        `inputs_embeds` (B, T, H) given (mode=partial: cached states), those are read instead of the ids;
        `bigrams` (B, U, 2): each unit's hashed bigram ids, when the tagger has bigram embeddings."""
        if inputs_embeds is not None:
            inputs = {"inputs_embeds": inputs_embeds, "attention_mask": attention_mask}
        else:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and getattr(self.config, "type_vocab_size", 0) > 1:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state  # (B, T, H)
        units = hidden.gather(1, unit_pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))  # (B, U, H)
        return self.emissions(units, unit_mask, bigrams)

    def emissions(
        self, units: torch.Tensor, unit_mask: torch.Tensor, bigrams: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Emission scores (B, U, K) from unit vectors (B, U, H) and, with bigram embeddings, ids (B, U, 2)."""
        if self.bigrams is not None:
            if bigrams is None:
                raise ValueError("this tagger reads character bigrams: pass each unit's bigram ids (B, U, 2)")
            joined = self.bigrams(bigrams).flatten(2).to(units.dtype)  # (B, U, 2 * D)
            units = torch.cat([units, joined], dim=-1)  # (B, U, H + 2D)
        units = self.dropout(units)
        if self.lstm is not None:
            units = self.dropout(packed_lstm(self.lstm, units, unit_mask))  # (B, U, H')
        return self.classifier(units)  # (B, U, K)

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        """Mean per unit: cross-entropy (softmax) or CRF negative log-likelihood."""
        mask = unit_mask.bool()  # (B, U)
        if self.crf is None:
            return F.cross_entropy(emissions.float()[mask], tags[mask])
        return self.crf.nll(emissions, tags, mask) * emissions.shape[0] / mask.sum()

    def decode(self, emissions: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        """Tag ids (B, U); -1 beyond each window's units."""
        mask = unit_mask.bool()  # (B, U)
        if self.crf is None:
            return emissions.argmax(-1).masked_fill(~mask, -1)  # (B, U)
        return self.crf.decode(emissions, mask)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights under Hugging Face's names: the encoder's under its base_model_prefix."""
        prefix = getattr(self.encoder, "base_model_prefix", "encoder") or "encoder"
        out = {}
        for name, tensor in self.state_dict().items():
            if name.startswith("encoder."):
                name = f"{prefix}.{name[len('encoder.') :]}"
            out[name] = tensor.detach().contiguous()
        return out

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefix = getattr(self.encoder, "base_model_prefix", "encoder") or "encoder"
        renamed = {
            (f"encoder.{k[len(prefix) + 1 :]}" if k.startswith(prefix + ".") else k): v for k, v in state.items()
        }
        self.load_state_dict(renamed, strict=True)

    def save_pretrained(self, path: str | Path, safe_serialization: bool = True) -> None:
        """config.json (the encoder's, with the tag set) and model.safetensors."""
        from safetensors.torch import save_file

        path = Path(path)
        config = self.config
        config.id2label = dict(enumerate(self.labels))
        config.label2id = {label: i for i, label in enumerate(self.labels)}
        name = type(self.encoder).__name__  # BertModel -> BertForTokenClassification: what a softmax tagger is
        config.architectures = (
            [name.removesuffix("Model") + "ForTokenClassification"] if self.head == "softmax" else None
        )
        config.save_pretrained(path)
        save_file(self.hf_state_dict(), str(path / "model.safetensors"), metadata={"format": "pt"})
