"""SentencePiece BPE (`tokenizer.ggml.model = llama`, as Llama 2 and Gemma files use it).

Spaces become "▁"; starting from single characters, the adjacent pair whose
concatenation is the highest-scoring token is merged until none is left
(ties: leftmost first); characters that are no token fall back to their
UTF-8 bytes as `<0xAB>` tokens. This is llama.cpp's algorithm.
"""

from __future__ import annotations

import heapq

from .vocab import BYTE, Vocabulary

SPACE = "▁"


class SentencePieceBPE:
    def __init__(self, vocab: Vocabulary):
        self.vocab = vocab
        self.ids = vocab.ids
        self.scores = vocab.scores
        self.byte_ids: dict[int, int] = {}
        for i, (text, kind) in enumerate(zip(vocab.tokens, vocab.types, strict=True)):
            if kind == BYTE and len(text) == 6 and text.startswith("<0x"):
                self.byte_ids[int(text[3:5], 16)] = i

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        text = text.replace(" ", SPACE)
        symbols = list(text)
        n = len(symbols)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        alive = [True] * n
        heap: list[tuple[float, int, int, str]] = []

        def push(left: int) -> None:
            right = nxt[left]
            if left < 0 or right < 0:
                return
            merged = symbols[left] + symbols[right]
            tid = self.ids.get(merged)
            if tid is not None:
                heapq.heappush(heap, (-self.scores[tid], left, right, merged))

        for i in range(n - 1):
            push(i)
        while heap:
            _, left, right, merged = heapq.heappop(heap)
            # stale: one side was merged into something else since this pair was queued
            if not (alive[left] and alive[right]) or nxt[left] != right or symbols[left] + symbols[right] != merged:
                continue
            symbols[left] = merged
            alive[right] = False
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            push(prev[left])
            push(left)
        out: list[int] = []
        i = 0
        while i >= 0:
            if alive[i]:
                out.extend(self._ids_of(symbols[i]))
            i = nxt[i]
        return out

    def _ids_of(self, symbol: str) -> list[int]:
        tid = self.ids.get(symbol)
        if tid is not None:
            return [tid]
        ids = [self.byte_ids.get(b) for b in symbol.encode("utf-8")]
        if all(i is not None for i in ids):
            return ids
        return [self.vocab.unk_id if self.vocab.unk_id is not None else 0]

    def piece(self, text: str) -> bytes:
        return text.replace(SPACE, " ").encode("utf-8")
