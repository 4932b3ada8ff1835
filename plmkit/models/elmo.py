"""ELMo (Peters et al., 2018): a bidirectional LSTM language model as Hugging Face model classes.

A token is encoded by an embedding (for Chinese the tokens are characters) or by ELMo's character
CNN over the vocabulary entry's characters, then projected to `lstm_size`. A stack of LSTM layers
runs each way, one nn.LSTM per direction per layer (`layers.{k}.forward`, `layers.{k}.backward`),
with residual connections from the second layer up. Every layer's output is [forward; backward]
(hidden_size = 2 * lstm_size); layer 0 is the projected token vector, duplicated.

Inputs must be right-padded: the backward direction reverses each row within its length, so padding
never reaches a real position. Importing this module registers "plmkit-elmo" with AutoConfig,
AutoModel, AutoModelForSequenceClassification and AutoModelForPreTraining (the language model).

Shapes (legend in plmkit/models/__init__.py): B batch, T tokens, H hidden ([forward; backward], so
one direction, lstm_size, is H/2), N layers (N+1 outputs with the token layer), V vocabulary, C classes,
F character-CNN features, I distinct token ids of a batch, W characters per token, E_c character embedding,
D any width.
"""

# no `from __future__ import annotations`: transformers reads the config dataclass's annotations at runtime

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput
from transformers.utils import ModelOutput

from plmkit.models.pooling import pool
from plmkit.models.scalar_mix import ScalarMix

TOKEN_ENCODERS = ("embedding", "char_cnn")
DEFAULT_CHAR_FILTERS = ((1, 32), (2, 64), (3, 128), (4, 128), (5, 128))  # (width, channels)
# character ids every table shares; a token's characters get ids from CHAR_FIRST up
CHAR_PAD, WORD_START, PIECE_START, TOKEN_END, CHAR_FIRST = 0, 1, 2, 3, 4


@strict
class ElmoConfig(PreTrainedConfig):
    """hidden_size is every layer's output, [forward; backward]: 2 * lstm_size. embedding_size is the
    size of the "embedding" encoder's vectors; the "char_cnn" encoder's vectors have sum(channels) of
    char_filters ([width, channels] pairs). lstm_cell_size None: the LSTM cell is lstm_size wide; larger:
    an LSTM with a projection back to lstm_size (ELMo's LSTMP). initializer_range is kept for tools that
    read it; ELMo's initialisation is scale-free (see ElmoPreTrainedModel._init_weights)."""

    model_type = "plmkit-elmo"

    vocab_size: int = 21128
    embedding_size: int = 256
    hidden_size: int = 512
    num_hidden_layers: int = 2
    lstm_cell_size: int | None = None
    token_encoder: str = "embedding"
    char_vocab_size: int = 0
    char_embedding_size: int = 16
    char_filters: list[list[int]] | None = None
    char_highway_layers: int = 1
    max_token_chars: int = 16
    hidden_dropout_prob: float | int = 0.1
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.char_filters is None:
            self.char_filters = [list(f) for f in DEFAULT_CHAR_FILTERS]
        if self.hidden_size % 2:
            raise ValueError(f"hidden_size: {self.hidden_size} is odd; it holds a forward and a backward half")
        if self.token_encoder not in TOKEN_ENCODERS:
            raise ValueError(f"token_encoder: unknown {self.token_encoder!r}; known: {', '.join(TOKEN_ENCODERS)}")
        if self.lstm_cell_size is not None and self.lstm_cell_size < self.lstm_size:
            raise ValueError(f"lstm_cell_size: {self.lstm_cell_size} is below lstm_size {self.lstm_size}")
        widest = max(width for width, _ in self.char_filters)
        if self.token_encoder == "char_cnn" and widest > self.max_token_chars:
            raise ValueError(
                f"char_filters: a filter {widest} wide does not fit max_token_chars {self.max_token_chars}"
            )
        super().__post_init__(**kwargs)

    @property
    def lstm_size(self) -> int:
        """One direction's output size."""
        return self.hidden_size // 2


def char_table(tokenizer_vocab: dict[str, int], max_chars: int) -> tuple[torch.Tensor, int]:
    """Character ids (V, max_chars) of every vocabulary entry, and the character vocabulary's size.

    A row is [start, c1, ..., cn, end, 0, ...]. A WordPiece continuation ("##ing") is stored as its
    characters ("ing") with its own start marker, so it stays distinct from the word "ing". A token
    longer than max_chars - 2 characters keeps its first max_chars - 2. Characters are numbered in
    the order of the token ids, so the same vocabulary always gives the same table."""
    if max_chars < 3:
        raise ValueError(f"max_chars: {max_chars} leaves no room for a character between the markers")
    chars: dict[str, int] = {}
    rows = [[CHAR_PAD] * max_chars for _ in range(max(tokenizer_vocab.values(), default=-1) + 1)]
    for token, index in sorted(tokenizer_vocab.items(), key=lambda item: item[1]):
        start = WORD_START
        if token.startswith("##") and len(token) > 2:
            token, start = token[2:], PIECE_START
        ids = [chars.setdefault(c, CHAR_FIRST + len(chars)) for c in token[: max_chars - 2]]
        rows[index][: len(ids) + 2] = [start, *ids, TOKEN_END]
    return torch.tensor(rows, dtype=torch.long), CHAR_FIRST + len(chars)


class ElmoHighway(nn.Module):
    """x -> g * x + (1 - g) * relu(W x + b), g = sigmoid(V x + c), one (2F, F) matrix for [W; V]."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(2 * size, size))
        self.bias = nn.Parameter(torch.empty(2 * size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        transform, gate = F.linear(x, self.weight, self.bias).chunk(2, -1)  # (..., F) each
        carry = torch.sigmoid(gate)  # (..., F)
        return carry * x + (1 - carry) * F.relu(transform)  # (..., F)


class ElmoCharCNN(nn.Module):
    """ELMo's token encoder: embed a token's characters, convolve with filters of several widths,
    max-pool over the characters, relu, highway layers. The characters of every vocabulary entry
    sit in the persistent buffer `token_chars` (V, W), W = max_token_chars, saved with the weights."""

    def __init__(self, config: ElmoConfig):
        super().__init__()
        if config.char_vocab_size <= CHAR_FIRST:
            raise ValueError("char_vocab_size: not set; take it from char_table (build_elmo does)")
        self.register_buffer("token_chars", torch.zeros(config.vocab_size, config.max_token_chars, dtype=torch.long))
        self.char_embeddings = nn.Embedding(config.char_vocab_size, config.char_embedding_size, padding_idx=CHAR_PAD)
        self.convs = nn.ModuleList(nn.Conv1d(config.char_embedding_size, c, w) for w, c in config.char_filters)
        self.output_size = sum(c for _, c in config.char_filters)
        self.highways = nn.ModuleList(ElmoHighway(self.output_size) for _ in range(config.char_highway_layers))
        self._table_checked = False

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self._table_checked:
            if not bool(self.token_chars[:, 0].any()):
                raise RuntimeError("token_chars is empty: give the model its char_table with set_char_table")
            self._table_checked = True
        unique, inverse = input_ids.unique(return_inverse=True)  # (I,), (B, T): encode each distinct token once
        chars = self.char_embeddings(self.token_chars[unique]).transpose(1, 2)  # (I, E_c, W)
        x = F.relu(torch.cat([conv(chars).amax(-1) for conv in self.convs], -1))  # (I, F)
        for highway in self.highways:
            x = highway(x)  # (I, F)
        return x[inverse]  # (B, T, F)


class ElmoEmbeddings(nn.Module):
    """Token ids -> token vectors (embedding or char CNN) -> projection to lstm_size."""

    def __init__(self, config: ElmoConfig):
        super().__init__()
        self.token_encoder = config.token_encoder
        if config.token_encoder == "embedding":
            pad = config.pad_token_id
            pad = pad if pad is not None and pad < config.vocab_size else None
            self.word_embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=pad)
            size = config.embedding_size
        else:
            self.char_cnn = ElmoCharCNN(config)
            size = self.char_cnn.output_size
        self.projection = nn.Linear(size, config.lstm_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        encoder = self.word_embeddings if self.token_encoder == "embedding" else self.char_cnn
        return self.projection(encoder(input_ids))  # (B, T, H/2)


class ElmoBiLstmLayer(nn.Module):
    """One single-layer LSTM each way, children named `forward` and `backward` as in the checkpoint.
    nn.Module already has a `forward` method, so the two are registered directly and read through
    properties (which getattr-based tools such as get_submodule also see). The layer itself is never
    called: ElmoModel runs the two LSTMs."""

    def __init__(self, lstm_size: int, cell_size: int):
        super().__init__()
        projection = lstm_size if cell_size != lstm_size else 0
        for name in ("forward", "backward"):
            self._modules[name] = nn.LSTM(lstm_size, cell_size, num_layers=1, batch_first=True, proj_size=projection)

    @property
    def forward(self) -> nn.LSTM:  # shadows nn.Module.forward on purpose: see the class docstring
        return self._modules["forward"]

    @property
    def backward(self) -> nn.LSTM:
        return self._modules["backward"]


def right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Lengths (B,) of a right-padded mask (B, T); ValueError for any other padding."""
    lengths = attention_mask.sum(1)  # (B,)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # (T,)
    if not torch.equal(attention_mask != 0, positions[None, :] < lengths[:, None]):
        raise ValueError("ELMo needs right-padded inputs: attention_mask must be 1s followed by 0s in every row")
    return lengths


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` positions of x (B, T, D); padding stays where it is.
    Applying it twice gives x back."""
    positions = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)  # (B, T)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))  # (B, T, D)


def _wants_dict(return_dict: bool | None, config: ElmoConfig) -> bool:
    return return_dict if return_dict is not None else bool(config.return_dict)


class ElmoPreTrainedModel(PreTrainedModel):
    config_class = ElmoConfig
    base_model_prefix = "elmo"

    def _init_weights(self, module: nn.Module) -> None:
        """Unit-scale signals, which an LSTM stack needs (fed vectors of size 0.02 it barely learns):
        embeddings normal(0, 1) with the padding row 0; Linear and Conv1d xavier-uniform, bias 0; LSTMs
        xavier (Hugging Face's rule); highway gates biased to carry their input; an even scalar mix.
        So initializer_range is not read. The rules are per module holding its own tensors (transformers
        skips the others in models outside its package); loaded tensors are never touched."""
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=1.0)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ElmoHighway):
            init.xavier_uniform_(module.weight)
            size = module.weight.shape[1]
            init.copy_(module.bias, torch.cat([torch.zeros(size), torch.ones(size)]))  # [transform; gate]
        elif isinstance(module, ElmoCharCNN):
            init.zeros_(module.token_chars)  # a fresh table waits for set_char_table
        elif isinstance(module, ScalarMix):
            init.zeros_(module.weights)
            init.ones_(module.gamma)
        else:
            super()._init_weights(module)

    def set_char_table(self, table: torch.Tensor) -> None:
        """Store the (V, max_token_chars) character ids from `char_table` in a char_cnn model."""
        config = self.config
        if config.token_encoder != "char_cnn":
            raise ValueError("set_char_table: this model encodes tokens with an embedding, not characters")
        cnn = self.base_model.embeddings.char_cnn
        rows, width = cnn.token_chars.shape
        if table.shape[0] > rows or table.shape[1] != width or int(table.max()) >= config.char_vocab_size:
            raise ValueError(
                f"set_char_table: a table {tuple(table.shape)} with ids up to {int(table.max())} does not fit "
                f"vocab_size {rows}, max_token_chars {width}, char_vocab_size {config.char_vocab_size}"
            )
        with torch.no_grad():
            cnn.token_chars.zero_()
            cnn.token_chars[: table.shape[0]] = table.to(cnn.token_chars.device)
        cnn._table_checked = False


class ElmoModel(ElmoPreTrainedModel):
    """Token encoder + bidirectional LSTM stack; returns every layer's [forward; backward] states."""

    def __init__(self, config: ElmoConfig):
        super().__init__(config)
        self.embeddings = ElmoEmbeddings(config)
        cell = config.lstm_cell_size or config.lstm_size
        self.layers = nn.ModuleList(ElmoBiLstmLayer(config.lstm_size, cell) for _ in range(config.num_hidden_layers))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        if self.config.token_encoder != "embedding":
            raise NotImplementedError("a char_cnn ELMo has no token embedding matrix")
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted and ignored: ELMo has no segments
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = right_padded_lengths(attention_mask)  # (B,)
        keep = attention_mask[..., None].to(self.embeddings.projection.weight.dtype)  # (B, T, 1)
        fwd = self.embeddings(input_ids) * keep  # (B, T, H/2)
        bwd = reverse_within_length(fwd, lengths)  # (B, T, H/2): each row's real tokens read right to left
        states = [torch.cat([fwd, fwd], -1)]  # layer 0: [x; x] (B, T, H)
        for k, layer in enumerate(self.layers):
            new_fwd = layer.forward(self.dropout(fwd))[0]  # (B, T, H/2)
            new_bwd = layer.backward(self.dropout(bwd))[0]  # (B, T, H/2)
            fwd, bwd = (new_fwd + fwd, new_bwd + bwd) if k > 0 else (new_fwd, new_bwd)  # residual from layer 2 up
            states.append(torch.cat([fwd, reverse_within_length(bwd, lengths)], -1) * keep)  # (B, T, H)
        out = BaseModelOutput(
            last_hidden_state=states[-1], hidden_states=tuple(states) if output_hidden_states else None
        )
        return out if _wants_dict(return_dict, self.config) else out.to_tuple()


def bidirectional_lm_loss(
    next_logits: torch.Tensor, prev_logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean of the forward loss (token t+1 from next_logits (B, T, V) at t) and the backward loss
    (token t-1 from prev_logits at t), over pairs of real positions only (right padding)."""
    pairs = attention_mask[:, 1:].bool()  # (B, T-1): t and t+1 both real
    forward = F.cross_entropy(next_logits[:, :-1][pairs].float(), input_ids[:, 1:][pairs])
    backward = F.cross_entropy(prev_logits[:, 1:][pairs].float(), input_ids[:, :-1][pairs])
    return (forward + backward) / 2


@dataclass
class ElmoLanguageModelingOutput(ModelOutput):
    """logits (B, T, V): the next token from the forward state; backward_logits (B, T, V): the
    previous token from the backward state."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    backward_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class ElmoForLanguageModeling(ElmoPreTrainedModel):
    """ElmoModel + one softmax layer shared by both directions, fed the top layer's states."""

    def __init__(self, config: ElmoConfig):
        super().__init__(config)
        self.elmo = ElmoModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.lm_head = nn.Linear(config.lstm_size, config.vocab_size)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ElmoLanguageModelingOutput | tuple:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.elmo(input_ids, attention_mask, output_hidden_states=output_hidden_states, return_dict=True)
        fwd, bwd = self.dropout(out.last_hidden_state).split(self.config.lstm_size, -1)  # (B, T, H/2) each
        next_logits, prev_logits = self.lm_head(fwd), self.lm_head(bwd)  # (B, T, V) each
        # the loss stays in forward: a Hugging Face-style AutoModelForPreTraining class; its labels are its inputs
        loss = bidirectional_lm_loss(next_logits, prev_logits, input_ids, attention_mask)
        result = ElmoLanguageModelingOutput(loss, next_logits, prev_logits, out.hidden_states)
        return result if _wants_dict(return_dict, self.config) else result.to_tuple()


def sequence_classification_loss(config: ElmoConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hugging Face's rule: regression (MSE), single-label (cross entropy) or multi-label (BCE), by
    config.problem_type, which is inferred from num_labels and the labels' dtype when unset."""
    if config.problem_type is None:
        if config.num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return (
            F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
            if config.num_labels == 1
            else F.mse_loss(logits.float(), labels.float())
        )
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.float().view(-1, config.num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class ElmoForSequenceClassification(ElmoPreTrainedModel):
    """ElmoModel -> scalar mix of all layers -> [mean; max] pooling -> dropout -> Linear(2H, num_labels)."""

    def __init__(self, config: ElmoConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.elmo = ElmoModel(config)
        self.scalar_mix = ScalarMix(config.num_hidden_layers + 1)  # the mix feature mode learns too
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.elmo(input_ids, attention_mask, output_hidden_states=True, return_dict=True)
        mixed = self.scalar_mix(torch.stack(out.hidden_states, 2))  # (B, T, N+1, H) -> (B, T, H)
        pooled = pool(mixed, attention_mask, "mean_max")  # (B, 2H)
        logits = self.classifier(self.dropout(pooled))  # (B, C)
        # the loss stays in forward for Hugging Face compatibility (Trainer, pipeline): only when labels are given
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        keep_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        states = out.hidden_states if keep_states else None
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=states)
        return result if _wants_dict(return_dict, self.config) else result.to_tuple()


def build_elmo(
    tokenizer, model_class: type[ElmoPreTrainedModel] = ElmoForLanguageModeling, **config_kwargs
) -> ElmoPreTrainedModel:
    """A freshly initialised ELMo for `tokenizer`: vocab_size, pad_token_id and, for
    token_encoder="char_cnn", char_vocab_size and the character table come from it."""
    vocab = tokenizer.get_vocab()
    kwargs = {"vocab_size": max(len(tokenizer), max(vocab.values()) + 1), "pad_token_id": tokenizer.pad_token_id}
    config = ElmoConfig(**{**kwargs, **config_kwargs})
    table = None
    if config.token_encoder == "char_cnn":
        table, config.char_vocab_size = char_table(vocab, config.max_token_chars)
    model = model_class(config)
    if table is not None:
        model.set_char_table(table)
    return model


def register_auto_classes() -> None:
    """Make "plmkit-elmo" checkpoints open with the Auto classes; safe to call again."""
    AutoConfig.register(ElmoConfig.model_type, ElmoConfig, exist_ok=True)
    AutoModel.register(ElmoConfig, ElmoModel, exist_ok=True)
    AutoModelForSequenceClassification.register(ElmoConfig, ElmoForSequenceClassification, exist_ok=True)
    AutoModelForPreTraining.register(ElmoConfig, ElmoForLanguageModeling, exist_ok=True)


register_auto_classes()
