"""Vocabulary pruning: keep the embedding rows a corpus or a script set uses, drop the rest.

A multilingual encoder spends most of its parameters on rows for scripts a user never
sees (multilingual-e5-small: 96M of 117M). Pruning keeps the pieces in the chosen set
(the special tokens always), in their original order, and gathers every weight row
indexed by the vocabulary (input embeddings, a tied or untied output layer and its bias).

Which vocabularies prune: Unigram (sentencepiece: XLM-R, e5) and WordPiece (BERT). A
Unigram segmenter only ever uses pieces whose characters occur in the text, so a script
subset is lossless on text in those scripts; a corpus subset is lossless on that corpus
and may segment new text differently. Byte-level BPE is refused: its merges chain through
pieces, so dropping one changes others.

Shapes (legend in plmkit/models/__init__.py): V vocabulary: the tensors pruned are those with V rows.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plmkit.errors import ConfigError, ModelError

META = "\u2581"  # sentencepiece's visible space
WORDPIECE_CONT = "##"


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    # ideographs (and extensions, compatibility forms), radicals, CJK punctuation, bopomofo
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FA1F
        or 0xF900 <= cp <= 0xFAFF
        or 0x2E80 <= cp <= 0x2FDF
        or 0x3000 <= cp <= 0x303F
        or 0x3100 <= cp <= 0x312F
    )


def _is_ascii(ch: str) -> bool:
    return " " <= ch <= "~"


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    return (
        unicodedata.category(ch)[0] in "PS"
        and cp < 0x3000
        or 0xFF00 <= cp <= 0xFFEF
        or 0xFE30 <= cp <= 0xFE4F
        or 0x2000 <= cp <= 0x206F
    )  # punctuation and symbols, full-width forms, CJK compatibility forms


SCRIPTS = {"cjk": _is_cjk, "ascii": _is_ascii, "punct": _is_punct}


def parse_scripts(spec: str | Iterable[str] | None) -> list[str]:
    if not spec:
        return []
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for name in names:
        if name not in SCRIPTS:
            raise ConfigError(f"keep: unknown script {name!r}; known: {', '.join(SCRIPTS)}")
    return names


def in_scripts(piece: str, scripts: list[str]) -> bool:
    """True when every character of the piece (the word markers aside) is in one of the scripts."""
    body = piece.replace(META, "")
    if body.startswith(WORDPIECE_CONT):
        body = body[len(WORDPIECE_CONT) :]
    tests = [SCRIPTS[s] for s in scripts]
    return all(any(t(ch) for t in tests) for ch in body)


@dataclass
class PruneReport:
    kept: int
    before: int
    parameters_before: int
    parameters_after: int
    corpus_tokens: int
    changed_tokens: int  # corpus tokens whose segmentation differs after pruning
    unknown_tokens: int  # corpus tokens that become <unk> (and were not before)
    changed_texts: int
    texts: int

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["unknown_share"] = self.unknown_tokens / self.corpus_tokens if self.corpus_tokens else 0.0
        d["changed_share"] = self.changed_tokens / self.corpus_tokens if self.corpus_tokens else 0.0
        return d


def _vocab_pieces(tok_json: dict, source: str) -> list[str]:
    model = tok_json["model"]
    if model["type"] == "Unigram":
        return [piece for piece, _ in model["vocab"]]
    if model["type"] == "WordPiece":
        return [p for p, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    raise ModelError(
        f"{source}: prune-vocab handles Unigram (sentencepiece) and WordPiece vocabularies, not "
        f"{model['type']}: byte-level BPE merges chain through pieces, so dropping one changes others"
    )


def pruned_tokenizer_json(tok_json: dict, keep: list[int]) -> dict:
    """The tokenizer.json with only the `keep` ids (sorted), every id that names a piece remapped."""
    new_id = {old: new for new, old in enumerate(keep)}
    out = json.loads(json.dumps(tok_json))
    model = out["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        pieces = _vocab_pieces(tok_json, "")
        model["vocab"] = {pieces[old]: new for new, old in enumerate(keep)}
    for added in out.get("added_tokens", []):
        added["id"] = new_id[added["id"]]

    def remap(node):
        if isinstance(node, dict):
            if "ids" in node and "tokens" in node:
                node["ids"] = [new_id[i] for i in node["ids"]]
            for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
                if isinstance(node.get(key), list) and len(node[key]) == 2:
                    node[key][1] = new_id[node[key][1]]
            for v in node.values():
                remap(v)
        elif isinstance(node, list):
            for v in node:
                remap(v)

    remap(out.get("post_processor"))
    return out


def choose_pieces(
    tok_json: dict, source: str, corpus: Iterable[str] = (), scripts: list[str] = ()
) -> tuple[list[int], list[list[int]]]:
    """Sorted ids to keep: specials, the pieces in `scripts`, the pieces the corpus uses; and the corpus's ids."""
    from tokenizers import Tokenizer

    pieces = _vocab_pieces(tok_json, source)
    keep = {a["id"] for a in tok_json.get("added_tokens", [])}
    if tok_json["model"].get("unk_id") is not None:
        keep.add(tok_json["model"]["unk_id"])
    if scripts:
        keep |= {i for i, p in enumerate(pieces) if in_scripts(p, list(scripts))}
    encoded: list[list[int]] = []
    if corpus:
        tok = Tokenizer.from_str(json.dumps(tok_json))
        encoded = [e.ids for e in tok.encode_batch(list(corpus), add_special_tokens=False)]
        for ids in encoded:
            keep.update(ids)
    return sorted(keep), encoded


def prune_vocab(
    model: str,
    output: str | Path,
    *,
    corpus: Iterable[str] = (),
    scripts: Iterable[str] | str = (),
    check: Iterable[str] = (),
    name: str | None = None,
) -> PruneReport:
    """Write `output`: the model directory `model` with only the pieces `corpus` uses and/or those in `scripts`.
    `check` (default: the corpus) is the text whose segmentation change is reported. `model` is a directory:
    plmkit.api.prune_vocab resolves shipped names first (resolving here would import plmkit.models.encoders,
    which imports this module to prune e5-small); `name`: the source config.json records (default `model`)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    from tokenizers import Tokenizer

    from plmkit.io import atomic_dir, plain_mode

    source = Path(model).expanduser()
    scripts = parse_scripts(scripts)
    corpus = list(corpus)
    if not scripts and not corpus:
        raise ConfigError("prune-vocab: give --corpus, --keep or both: nothing says which pieces to keep")
    if not (source / "tokenizer.json").is_file():
        raise ModelError(f"{source}: no tokenizer.json (prune-vocab needs a fast tokenizer's file)")
    weights = sorted(source.glob("*.safetensors"))
    if [w.name for w in weights] != ["model.safetensors"]:
        raise ModelError(f"{source}: prune-vocab reads one model.safetensors (found {[w.name for w in weights]})")
    tok_json = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    keep, _ = choose_pieces(tok_json, str(source), corpus, scripts)
    rows = int(config["vocab_size"])
    if keep[-1] >= rows:
        raise ModelError(f"{source}: the tokenizer has id {keep[-1]} but the embeddings hold {rows} rows")
    state = load_file(str(source / "model.safetensors"))
    index = np.asarray(keep)
    pruned = {name: (t[index] if t.ndim >= 1 and t.shape[0] == rows else t) for name, t in state.items()}
    before = sum(t.size for t in state.values())
    after = sum(t.size for t in pruned.values())

    new_json = pruned_tokenizer_json(tok_json, keep)
    check = list(check) or corpus
    changed = unknown = total = changed_texts = 0
    if check:
        old_tok, new_tok = Tokenizer.from_str(json.dumps(tok_json)), Tokenizer.from_str(json.dumps(new_json))
        unk_old = tok_json["model"].get("unk_id")
        unk_new = new_json["model"].get("unk_id")
        for a, b in zip(
            old_tok.encode_batch(check, add_special_tokens=False), new_tok.encode_batch(check, add_special_tokens=False)
        ):
            total += len(a.ids)
            old_pieces = a.tokens
            if old_pieces != b.tokens:
                changed_texts += 1
                changed += sum(1 for s in _spans(a.offsets) - _spans(b.offsets))
            unknown += sum(1 for i in b.ids if i == unk_new) - sum(1 for i in a.ids if i == unk_old)

    new_id = {old: new for new, old in enumerate(keep)}
    for key in (
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "sep_token_id",
        "cls_token_id",
        "decoder_start_token_id",
    ):
        if isinstance(config.get(key), int) and config[key] in new_id:
            config[key] = new_id[config[key]]
    config["vocab_size"] = len(keep)
    config["plmkit_pruned_from"] = {
        "model": name or model,
        "vocab_size": rows,
        "kept": len(keep),
        "scripts": scripts,
        "corpus_texts": len(corpus),
    }
    with atomic_dir(output) as tmp:
        save_file(pruned, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "tokenizer.json").write_text(json.dumps(new_json, ensure_ascii=False), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if (source / "special_tokens_map.json").is_file():
            specials = (source / "special_tokens_map.json").read_text(encoding="utf-8")
            (tmp / "special_tokens_map.json").write_text(specials, encoding="utf-8")
        if (source / "tokenizer_config.json").is_file():
            tok_config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
            if "added_tokens_decoder" in tok_config:  # keyed by id: remapped like the rest
                added = tok_config["added_tokens_decoder"]
                tok_config["added_tokens_decoder"] = {
                    str(new_id[int(k)]): v for k, v in added.items() if int(k) in new_id
                }
            (tmp / "tokenizer_config.json").write_text(
                json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        for f in tmp.iterdir():
            f.chmod(plain_mode())
    return PruneReport(
        len(keep),
        len(_vocab_pieces(tok_json, str(source))),
        before,
        after,
        total,
        changed,
        unknown,
        changed_texts,
        len(check),
    )


def _spans(offsets) -> set[tuple[int, int]]:
    return set(map(tuple, offsets))
