"""`Tokenizer`: text <-> token ids from a GGUF file's vocabulary alone, as llama.cpp tokenizes.

Special tokens are cut out of the text first (user-defined ones always,
control ones with `parse_special`), the rest goes to the vocabulary's model
(byte-level BPE or SentencePiece BPE), and BOS/EOS are added as the file says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import TokenizerError
from ..gguf.special_tokens import end_of_generation_ids
from .bpe import ByteLevelBPE
from .spm import SentencePieceBPE
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, Vocabulary


class Tokenizer:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        if vocab.model == "gpt2":
            self._model = ByteLevelBPE(vocab)
        elif vocab.model == "llama":
            self._model = SentencePieceBPE(vocab)
        else:
            raise TokenizerError(
                f"tokenizer model {vocab.model!r} (tokenizer.ggml.model) is not supported; kiln reads 'gpt2' "
                "(byte-level BPE) and 'llama' (SentencePiece)"
            )
        self._splitters = {flag: self._splitter(vocab.special_ids(flag)) for flag in (False, True)}
        self._eog = end_of_generation_ids(vocab.metadata)

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        return cls(Vocabulary.from_metadata(meta))

    # ----- properties -----

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.tokens)

    @property
    def bos_id(self) -> int | None:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.vocab.eos_id

    @property
    def eog_ids(self) -> set[int]:
        return set(self._eog)

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def add_eos(self) -> bool:
        return self.vocab.add_eos

    @property
    def chat_template(self) -> str | None:
        return self.vocab.chat_template

    def token_text(self, token: int) -> str:
        return self.vocab.tokens[token]

    # ----- encoding -----

    def _splitter(self, ids: list[int]) -> tuple[re.Pattern | None, dict[str, int]]:
        by_text = {self.vocab.tokens[i]: i for i in ids}
        if not by_text:
            return None, {}
        alternatives = sorted(by_text, key=len, reverse=True)  # longest first
        return re.compile("(" + "|".join(re.escape(t) for t in alternatives) + ")"), by_text

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`; with add_special, BOS/EOS as the file's add_bos/add_eos say."""
        v = self.vocab
        out: list[int] = []
        if add_special and v.add_bos:
            if v.bos_id is None:
                raise TokenizerError("the vocabulary asks for a BOS token but has no bos_token_id; convert the model again")
            out.append(v.bos_id)
        pattern, by_text = self._splitters[parse_special]
        pieces = pattern.split(text) if pattern else [text]
        spm = isinstance(self._model, SentencePieceBPE)
        prev_special = True  # SentencePiece adds its space prefix at the start and after each special token
        for k, piece in enumerate(pieces):
            if k % 2 == 1:  # a special token
                out.append(by_text[piece])
                prev_special = True
                continue
            if not piece:
                continue
            if spm and v.add_space_prefix and prev_special:
                piece = " " + piece
            out.extend(self._model.encode(piece))
            prev_special = False
        if add_special and v.add_eos and v.eos_id is not None:
            out.append(v.eos_id)
        return out

    def pre_tokenize(self, text: str) -> list[str]:
        """How a byte-level BPE vocabulary's pre-tokenizer splits `text` (for inspection)."""
        if not isinstance(self._model, ByteLevelBPE):
            raise TokenizerError("pre_tokenize: SentencePiece vocabularies have no pre-tokenizer")
        return self._model.pre_tokenize(text)

    # ----- decoding -----

    def token_to_piece(self, token: int, special: bool = True) -> bytes:
        """The bytes a token stands for; control tokens give their text only with `special`."""
        if not 0 <= token < self.vocab_size:
            raise TokenizerError(f"token id {token} is outside the vocabulary (0..{self.vocab_size - 1})")
        text = self.vocab.tokens[token]
        kind = self.vocab.types[token]
        if kind == NORMAL or kind == UNUSED:
            return self._model.piece(text)
        if kind == BYTE:
            if len(text) == 6 and text.startswith("<0x"):
                return bytes([int(text[3:5], 16)])
            return self._model.piece(text)
        if kind in (CONTROL, UNKNOWN):
            return text.encode("utf-8") if special else b""
        return text.encode("utf-8")  # user-defined: stored as is

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        data = b"".join(self.token_to_piece(int(t), special=not skip_special) for t in ids)
        text = data.decode("utf-8", errors="replace")
        return text


class IncrementalDecoder:
    """Turns a stream of token ids into text, holding back incomplete UTF-8 sequences.

    Control tokens (end of turn and the like) print nothing, as in llama-cli.
    """

    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self.tokenizer = tokenizer
        self.special = special
        self._pending = b""

    def feed(self, token: int) -> str:
        self._pending += self.tokenizer.token_to_piece(int(token), special=self.special)
        cut = _complete_prefix(self._pending)
        text, self._pending = self._pending[:cut], self._pending[cut:]
        return text.decode("utf-8", errors="replace")

    def flush(self) -> str:
        text, self._pending = self._pending, b""
        return text.decode("utf-8", errors="replace")


def _complete_prefix(data: bytes) -> int:
    """Length of the longest prefix of `data` that does not end inside a UTF-8 sequence."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b < 0x80:
            return n  # ASCII: complete
        if b >= 0xC0:  # lead byte: is its sequence complete?
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return n if back >= need else n - back
    return n  # only continuation bytes: malformed, let it through
