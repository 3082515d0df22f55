"""Byte-level BPE (`tokenizer.ggml.model = gpt2`), run on the `tokenizers` library.

The text is cut by the pre-tokenizer's regexes (see `pretokenizers`), each
piece's UTF-8 bytes are mapped to GPT-2's printable characters, and within
each piece adjacent symbols are merged by rank (the merge's position in
`tokenizer.ggml.merges`; leftmost first among equal ranks) -- llama.cpp's
`llm_tokenizer_bpe_session`. With `ignore_merges` a piece that is a token is
taken whole.

Differences from llama.cpp, only on malformed vocabularies: a merge whose
parts or result are not tokens is dropped (llama.cpp would merge and then
spell the non-token symbol out in byte tokens); of two identical merges the
first counts.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from .vocab import Vocabulary


@lru_cache(maxsize=1)
def byte_to_char() -> dict[int, str]:
    """GPT-2's table: every byte to a printable character (printable Latin-1 bytes map to themselves)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@lru_cache(maxsize=1)
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


class ByteLevelBPE:
    def __init__(self, vocab: Vocabulary):
        pre = vocab.pretokenizer
        ids = vocab.ids
        merges, seen = [], set()
        for a, b in vocab.merges:
            if (a, b) not in seen and a in ids and b in ids and a + b in ids:
                seen.add((a, b))
                merges.append((a, b))
        model = models.BPE(vocab=dict(ids), merges=merges, ignore_merges=pre.ignore_merges, fuse_unk=False)
        self._hf = HFTokenizer(model)
        splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        self._hf.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._char_to_byte = char_to_byte()

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids if text else []

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces the pre-tokenizer cuts `text` into (before merging), as text."""
        pieces = self._hf.pre_tokenizer.pre_tokenize_str(text)
        return [self.piece(p).decode("utf-8", errors="replace") for p, _ in pieces]

    def piece(self, text: str) -> bytes:
        """The bytes a normal token's text stands for (a character outside GPT-2's table stands for itself)."""
        table = self._char_to_byte
        out = bytearray()
        for c in text:
            b = table.get(c)
            if b is None:
                out += c.encode("utf-8")
            else:
                out.append(b)
        return bytes(out)

    def byte(self, text: str) -> bytes:
        """The byte of a byte token (type 6): its text is one character of GPT-2's table."""
        return self.piece(text)
