"""SentencePiece BPE (`tokenizer.ggml.model = llama`, as Llama 2 and Gemma files use it).

llama.cpp's algorithm (`llm_tokenizer_spm_session`): spaces become "▁"; the
text starts as single characters; repeatedly, of all adjacent pairs whose
concatenation is a token, the one whose token has the highest score is
merged (ties: leftmost first), until no pair is left; a symbol that is no
token (only single characters can be) is spelled out as its UTF-8 bytes in
`<0xAB>` tokens. The caller adds the leading space (`add_space_prefix`).

Speed: no merge can join two neighbouring characters whose two-character
string occurs in no token, so the text is first cut at such places (usually
before each "▁") and the chunks, most of them words that repeat, are
tokenized independently and cached. The result is the same as llama.cpp's on
the whole text.
"""

from __future__ import annotations

import heapq

from ..errors import TokenizerError
from .vocab import BYTE, Vocabulary

SPACE = "▁"
_CACHE_LIMIT = 1 << 16


class SentencePieceBPE:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.ids = vocab.ids
        self.scores = vocab.scores
        self.byte_ids: dict[int, int] = {}
        for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.types, strict=True)):
            if kind == BYTE and _is_byte_text(text):
                self.byte_ids.setdefault(int(text[3:5], 16), i)
        # every two-character string inside some token: only there can a merge join two characters
        self._pairs = {t[k : k + 2] for t in vocab.tokens for k in range(len(t) - 1)}
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (spaces not yet replaced, no prefix added)."""
        if not text:
            return []
        text = text.replace(" ", SPACE)
        out: list[int] = []
        cache, pairs = self._cache, self._pairs
        start = 0
        for k in range(1, len(text)):
            if text[k - 1 : k + 1] not in pairs:
                out.extend(self._chunk(text[start:k], cache))
                start = k
        out.extend(self._chunk(text[start:], cache))
        return out

    def _chunk(self, chunk: str, cache: dict[str, list[int]]) -> list[int]:
        ids = cache.get(chunk)
        if ids is None:
            ids = self._merge(chunk)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[chunk] = ids
        return ids

    def _merge(self, text: str) -> list[int]:
        symbols = list(text)
        n = len(symbols)
        if n == 1:
            return self._ids_of(text)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap: list[tuple[float, int, int]] = []  # (-score, left, length of the merged text)
        ids, scores = self.ids, self.scores

        def push(left: int) -> None:
            right = nxt[left] if left >= 0 else -1
            if right < 0:
                return
            merged = symbols[left] + symbols[right]
            tid = ids.get(merged)
            if tid is not None:
                heapq.heappush(heap, (-scores[tid], left, len(merged)))

        for i in range(n - 1):
            push(i)
        while heap:
            _, left, size = heapq.heappop(heap)
            right = nxt[left]
            # stale: one side was merged into something else since this pair was queued
            if right < 0 or not symbols[left] or len(symbols[left]) + len(symbols[right]) != size:
                continue
            symbols[left] += symbols[right]
            symbols[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left])
            push(left)
        out: list[int] = []
        i = 0
        while i >= 0:
            out.extend(self._ids_of(symbols[i]))
            i = nxt[i]
        return out

    def _ids_of(self, symbol: str) -> list[int]:
        tid = self.ids.get(symbol)
        if tid is not None:
            return [tid]
        out = []
        for b in symbol.encode("utf-8"):
            i = self.byte_ids.get(b)
            if i is None:
                i = self.ids.get(chr(b)) if b < 0x80 else None  # llama.cpp's fallback: the byte as a text
            if i is None:
                if self.vocab.unk_id is None:
                    raise TokenizerError(
                        f"cannot tokenize {symbol!r}: the SentencePiece vocabulary has no token <0x{b:02X}> and no "
                        "unknown token; convert the model again with byte fallback"
                    )
                return [self.vocab.unk_id]
            out.append(i)
        return out

    def piece(self, text: str) -> bytes:
        """The bytes a normal token's text stands for."""
        return text.replace(SPACE, " ").encode("utf-8")

    def byte(self, text: str) -> bytes:
        """The byte of a byte token (type 6), written `<0xAB>`."""
        if _is_byte_text(text):
            return bytes([int(text[3:5], 16)])
        return self.piece(text)


def _is_byte_text(text: str) -> bool:
    if len(text) != 6 or not text.startswith("<0x") or text[5] != ">":
        return False
    try:
        int(text[3:5], 16)
    except ValueError:
        return False
    return True
