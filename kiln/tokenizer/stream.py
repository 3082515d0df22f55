"""`IncrementalDecoder`: token ids in, printable text out, for streaming a generation.

Each token's bytes (`Tokenizer.token_to_piece`, as llama.cpp prints a
stream: no space is stripped, control tokens print nothing unless
`special`) go through an incremental UTF-8 decoder, so a character whose
bytes are spread over several tokens (an emoji in byte-level BPE, `<0xF0>`
byte tokens in SentencePiece) comes out whole once its last byte arrives;
bytes that can never form a character come out as U+FFFD.
"""

from __future__ import annotations

import codecs

from .tokenizer import Tokenizer


class IncrementalDecoder:
    def __init__(self, tokenizer: Tokenizer, special: bool = False):
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        """The text that `token` completes (often "", while a character is still incomplete)."""
        return self._utf8.decode(self.tokenizer.token_to_piece(token, special=self.special))

    def flush(self) -> str:
        """Whatever is held back, at the end of the stream (an incomplete character becomes U+FFFD)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
