"""Byte-level BPE (`tokenizer.ggml.model = gpt2`): text bytes mapped to printable characters,
split by the pre-tokenizer's regexes, then merged by rank. Runs on the `tokenizers` library."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..errors import TokenizerError
from .pretokenizers import pre_tokenizer
from .vocab import Vocabulary


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class ByteLevelBPE:
    def __init__(self, vocab: Vocabulary):
        pre = pre_tokenizer(vocab.pre)
        merges = []
        for i, m in enumerate(vocab.merges):
            parts = m.split(" ")
            if len(parts) != 2:
                raise TokenizerError(f"merge #{i} {m!r} is not two tokens separated by a space; convert the model again")
            merges.append((parts[0], parts[1]))
        model = models.BPE(vocab=dict(vocab.ids), merges=merges, ignore_merges=pre.ignore_merges, fuse_unk=False)
        self._hf = HFTokenizer(model)
        splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        self._hf.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._hf.decoder = decoders.ByteLevel()
        self._decoder = byte_decoder()
        self.vocab = vocab

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids if text else []

    def pre_tokenize(self, text: str) -> list[str]:
        """The pieces the pre-tokenizer cuts `text` into (before merging), as text."""
        dec = self._decoder
        pieces = self._hf.pre_tokenizer.pre_tokenize_str(text)
        return [bytes(dec[c] for c in p).decode("utf-8", errors="replace") for p, _ in pieces]

    def piece(self, text: str) -> bytes:
        """The bytes of a normal token's text."""
        dec = self._decoder
        try:
            return bytes(dec[c] for c in text)
        except KeyError:  # not byte-level text (an added token stored raw)
            return text.encode("utf-8")
