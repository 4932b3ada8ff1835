"""Train a vocabulary from a corpus with `tokenizers`.

Chinese: WordPiece where every CJK character is its own word (so the vocabulary is
characters, plus word pieces for Latin words and numbers), after NFKC folds
full-width letters and digits to their ASCII forms.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(
    lines: Iterable[str], vocab_size: int = 8000, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A WordPiece vocabulary trained on `lines`, the same one in every process (see `_continuations`).
    `lines` is read twice: a list, or an iterable that reads its files anew each time it is iterated
    (plmkit.pretrain.corpus.CorpusLines: nothing holds the whole corpus); a one-shot iterator is listed."""
    if iter(lines) is lines:
        lines = list(lines)
    normalizer = normalizers.Sequence(
        [
            normalizers.NFKC(),
            normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True),
        ]
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    fixed = _continuations(lines, normalizer, pre_tokenizer)
    trained = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trained.normalizer, trained.pre_tokenizer = normalizer, pre_tokenizer
    # limit_alphabet high: every character seen in the corpus stays in the vocabulary
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + fixed, limit_alphabet=20000, min_frequency=2
    )
    trained.train_from_iterator(lines, trainer=trainer)
    tok = Tokenizer(
        models.WordPiece(vocab=_canonical_ids(trained.get_vocab()), unk_token="[UNK]", continuing_subword_prefix="##")
    )
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.add_special_tokens(SPECIAL_TOKENS)  # only these: the ## pieces given to the trainer are ordinary pieces
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _continuations(lines: Iterable[str], normalizer, pre_tokenizer) -> list[str]:
    """`##c` for every character c that follows another inside a word of the corpus, in code-point order.

    The trainer creates these pieces as it meets them in a hash map, whose order each process seeds
    anew, and breaks ties between equally frequent merges by piece id, so the same corpus gave
    different vocabularies run to run (huggingface/tokenizers#1794). Given to it up front, with
    fixed ids, they make every id and every merge the same each time."""
    seen: set[str] = set()
    for line in lines:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            seen.update(word[1:])
    return [f"##{c}" for c in sorted(seen)]


def _canonical_ids(vocab: dict[str, int]) -> dict[str, int]:
    """The trained vocabulary numbered by a fixed rule: the special tokens first, in their order, then
    whole-word pieces and `##` continuations, each in code-point order (WordPiece segments by the
    set of pieces alone, longest match first, so the numbering changes no segmentation)."""
    rest = sorted((t for t in vocab if t not in SPECIAL_TOKENS), key=lambda t: (t.startswith("##"), t))
    return {t: i for i, t in enumerate(SPECIAL_TOKENS + rest)}


BPE_SPECIAL = {
    # family: (special tokens in id order, the names PreTrainedTokenizerFast gives them)
    "roberta": (
        ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        {
            "bos_token": "<s>",
            "cls_token": "<s>",
            "pad_token": "<pad>",
            "eos_token": "</s>",
            "sep_token": "</s>",
            "unk_token": "<unk>",
            "mask_token": "<mask>",
        },
    ),
    "gpt": (
        ["<|endoftext|>", "<pad>"],
        {
            "bos_token": "<|endoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<pad>",
        },
    ),
}


def train_byte_bpe(
    lines: Iterable[str], vocab_size: int = 8000, family: str = "roberta", model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2, RoBERTa): every input is bytes, so nothing is ever unknown; merges learnt from the corpus.

    roberta: `<s> A </s></s> B </s>`; gpt: `A <|endoftext|>` (a GPT classifies by its last token's
    state, so the end token gives every text the same last token to read)."""
    specials, names = BPE_SPECIAL[family]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer=trainer)
    tok.decoder = decoders.ByteLevel()
    if family == "roberta":
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")),
            ("<s>", tok.token_to_id("<s>")),
            trim_offsets=True,
            add_prefix_space=False,
        )
    else:
        eos = ("<|endoftext|>", tok.token_to_id("<|endoftext|>"))
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", pair="$A <|endoftext|> $B:1 <|endoftext|>:1", special_tokens=[eos]
        )
    input_names = ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, model_input_names=input_names, **names
    )
