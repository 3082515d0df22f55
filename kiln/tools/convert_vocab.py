"""The tokenizer part of `kiln convert`: a Hugging Face tokenizer to `tokenizer.*` GGUF metadata.

Three kinds of vocabulary, chosen the way llama.cpp's converter chooses them:

- `tokenizer.model` (SentencePiece) -> `tokenizer.ggml.model = llama` with the
  pieces, their scores and types (read from the protobuf directly, so the
  `sentencepiece` package is not needed);
- `tokenizer.json` with a BPE model and `byte_fallback` (SentencePiece-style
  BPE as Gemma and Llama 2 ship it) -> `llama` as well, scores from the merge
  ranks;
- `tokenizer.json` with a byte-level BPE model -> `tokenizer.ggml.model = gpt2`
  with tokens, types and merges, and `tokenizer.ggml.pre` found by hashing the
  tokenization of llama.cpp's probe text (see `convert_pretok`).

Then, for all three, the special token ids, the `add_*_token` flags and the
chat template (see `convert_special`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConvertError
from ..gguf import GGUFWriter, ValueType
from .convert_pretok import guess_pre_tokenizer
from .convert_special import TokenizerFiles, load_json, special_vocab, write_special
from .convert_spm import read_sentencepiece_model

log = logging.getLogger("kiln.convert")

# llama.cpp token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPM_SPACE = "\u2581"  # SentencePiece's visible space


@dataclass
class Vocab:
    """Everything `tokenizer.*` that goes into the file."""

    model: str  # "gpt2" or "llama"
    pre: str
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)
    add_special: dict[str, bool] = field(default_factory=dict)
    chat_template: str | list | None = None

    def write(self, w: GGUFWriter) -> None:
        w.add("tokenizer.ggml.model", self.model, ValueType.STRING)
        w.add("tokenizer.ggml.pre", self.pre, ValueType.STRING)
        w.add("tokenizer.ggml.tokens", self.tokens, ValueType.ARRAY, ValueType.STRING)
        if self.scores is not None:
            w.add("tokenizer.ggml.scores", self.scores, ValueType.ARRAY, ValueType.FLOAT32)
        w.add("tokenizer.ggml.token_type", self.token_types, ValueType.ARRAY, ValueType.INT32)
        if self.merges:
            w.add("tokenizer.ggml.merges", self.merges, ValueType.ARRAY, ValueType.STRING)
        write_special(w, self.special_ids, self.add_special, self.chat_template)


# ----- choosing the kind -----


def looks_special(token: str) -> bool:
    """Added tokens that llama.cpp marks as control tokens even when not flagged special."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def build_vocab(files: TokenizerFiles, vocab_size: int | None) -> Vocab:
    """Pick the vocabulary kind as llama.cpp does and read it."""
    if files.spm_path.is_file():
        vocab = _spm_vocab(files, vocab_size)
    else:
        bpe = files.bpe_model
        if bpe is None:
            kind = ((files.tokenizer_json or {}).get("model") or {}).get("type")
            raise ConvertError(
                f"{files.dir / 'tokenizer.json'}: tokenizer model type {kind!r} is not supported; kiln converts "
                "byte-level BPE and SentencePiece (tokenizer.model or BPE with byte_fallback) vocabularies"
            )
        vocab = _hf_spm_vocab(files, bpe) if bpe.get("byte_fallback") else _gpt2_vocab(files, bpe, vocab_size)
    n_vocab = len(vocab.tokens) if vocab.model == "llama" else None
    vocab.special_ids, vocab.add_special, vocab.chat_template = special_vocab(files, n_vocab)
    return vocab


# ----- the three vocabulary kinds -----


def _gpt2_vocab(files: TokenizerFiles, bpe: dict, vocab_size: int | None) -> Vocab:
    full = dict(bpe.get("vocab") or {})
    added = {t["content"]: t for t in files.added_tokens}
    by_id: dict[int, dict] = {int(t["id"]): t for t in files.added_tokens}
    for content, t in added.items():
        full[content] = int(t["id"])
    n = int(vocab_size or len(full))
    if full and max(full.values()) >= n:
        raise ConvertError(
            f"{files.dir}: the tokenizer has token id {max(full.values())} but config.json says vocab_size={n}; "
            "the tokenizer does not belong to this model"
        )
    reverse = {i: tok for tok, i in full.items()}
    tokens, types = [], []
    for i in range(n):
        tok = reverse.get(i)
        if tok is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif tok in added:
            info = by_id.get(i, added[tok])
            if info.get("special") or looks_special(tok):
                types.append(CONTROL)
            else:
                tok = tok.replace(SPM_SPACE, " ")
                types.append(USER_DEFINED)
            tokens.append(tok)
        else:
            tokens.append(tok)
            types.append(NORMAL)
    merges = _merges(bpe, files.dir)
    pre = guess_pre_tokenizer(files.tokenizer_json, files.dir)
    return Vocab("gpt2", pre, tokens, types, merges=merges)


def _merges(bpe: dict, where: Path) -> list[str]:
    merges = bpe.get("merges") or []
    if not merges:
        return []
    if isinstance(merges[0], str):
        return list(merges)
    if isinstance(merges[0], list) and len(merges[0]) == 2:
        # pairs (tokenizers >= 0.20): a space inside a part is written as U+0120, as llama.cpp does
        return [
            " ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
            for pair in merges
        ]
    raise ConvertError(
        f"{where / 'tokenizer.json'}: unknown format of the BPE merges; save the tokenizer again"
    )


def _spm_vocab(files: TokenizerFiles, vocab_size: int | None) -> Vocab:
    pieces = read_sentencepiece_model(files.spm_path)
    n = int(vocab_size or len(pieces))
    if len(pieces) > n:
        raise ConvertError(
            f"{files.spm_path}: has {len(pieces)} pieces but config.json says vocab_size={n}; "
            "the tokenizer does not belong to this model"
        )
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i, (piece, score, ptype) in enumerate(pieces):
        tokens[i] = piece
        scores[i] = score
        # sentencepiece's own type numbers are llama.cpp's, but user-defined pieces count as normal here
        types[i] = ptype if ptype in (UNKNOWN, CONTROL, UNUSED, BYTE) else NORMAL
    added_file = files.dir / "added_tokens.json"
    if added_file.is_file():
        for text, tid in load_json(added_file, "added tokens").items():
            if int(tid) >= n:
                log.warning("ignoring added token %r: id %d is not below vocab_size %d", text, tid, n)
                continue
            tokens[tid], scores[tid], types[tid] = text, -1000.0, USER_DEFINED
    for tid, info in files.added_tokens_decoder().items():
        if tid >= n:
            log.warning(
                "ignoring added token %r: id %d is not below vocab_size %d", info.get("content"), tid, n
            )
            continue
        text = info["content"]
        if info.get("special") or looks_special(text):
            types[tid] = CONTROL
        else:
            text = text.replace(SPM_SPACE, " ")
            types[tid] = USER_DEFINED
        tokens[tid], scores[tid] = text, -1000.0
    return Vocab("llama", "default", tokens, types, scores=scores)


def _hf_spm_vocab(files: TokenizerFiles, bpe: dict) -> Vocab:
    """SentencePiece-style BPE from tokenizer.json alone.

    llama.cpp gives every token the score -1000 here, which makes its SentencePiece
    tokenizer merge left to right instead of by rank; kiln scores a token by the rank
    of the first merge that makes it (-rank), so that the highest score is the first
    merge, as in the original BPE.
    """
    vocab = dict(bpe.get("vocab") or {})
    base = len(vocab)
    added = sorted(files.added_tokens, key=lambda t: int(t["id"]))
    special_ids = {int(t["id"]) for t in added if t.get("special")}
    rank: dict[str, int] = {}
    for r, merge in enumerate(_merges(bpe, files.dir)):
        left, right = merge.split(" ", 1)
        rank.setdefault(left + right, r)
    reverse = {i: tok for tok, i in vocab.items()}
    tokens, types, scores = [], [], []
    for i in range(base):
        if i not in reverse:
            raise ConvertError(
                f"{files.dir / 'tokenizer.json'}: token ids are not contiguous (id {i} is missing)"
            )
        tok = reverse[i]
        tokens.append(tok)
        scores.append(-float(rank[tok]) if tok in rank else 0.0)
        if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", tok):
            types.append(BYTE)
        elif i in special_ids:
            types.append(CONTROL)
        else:
            types.append(NORMAL)
    for t in added:
        tid = int(t["id"])
        if tid < base:
            continue
        if tid != len(tokens):
            raise ConvertError(f"{files.dir / 'tokenizer.json'}: added token ids are not contiguous at {tid}")
        tokens.append(t["content"])
        scores.append(-1000.0)
        types.append(CONTROL if t.get("special") else USER_DEFINED)
    return Vocab("llama", "default", tokens, types, scores=scores)
