"""The KV cache: per sequence and layer, the keys and values of every token seen so far.

Storage grows on demand up to the context size (`-c`) and is kept in the
`-ctk`/`-ctv` type (f16 by default, as in llama.cpp); attention reads it back
as float32.
"""

from __future__ import annotations

import torch

from ..errors import ContextLimitError

CACHE_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


class SequenceCache:
    """One sequence: per-layer K/V buffers [capacity, n_head_kv, head_dim] and the token count."""

    def __init__(self, n_layer: int, n_ctx: int, dtype_k: torch.dtype, dtype_v: torch.dtype):
        self.n_layer = n_layer
        self.n_ctx = n_ctx
        self.dtype_k = dtype_k
        self.dtype_v = dtype_v
        self.k: list[torch.Tensor | None] = [None] * n_layer
        self.v: list[torch.Tensor | None] = [None] * n_layer
        self.n_past = 0  # tokens committed to the cache
        self.tokens: list[int] = []  # their ids, for re-using a common prefix
        self._start = 0  # position of the first token of the batch being evaluated
        self._count = 0  # its size

    def begin(self, n_tokens: int) -> torch.Tensor:
        """Start evaluating `n_tokens` new tokens; returns their positions."""
        if self.n_past + n_tokens > self.n_ctx:
            raise ContextLimitError(
                f"context full: {self.n_past} tokens in the cache + {n_tokens} new exceed the context size "
                f"of {self.n_ctx}; raise -c (up to the model's training context) or shorten the prompt"
            )
        self._start, self._count = self.n_past, n_tokens
        return torch.arange(self.n_past, self.n_past + n_tokens)

    def commit(self, tokens: list[int]) -> None:
        self.n_past = self._start + self._count
        self.tokens[self._start :] = tokens

    def rollback(self) -> None:
        """Forget the batch being evaluated (after an error)."""
        self._count = 0

    def truncate(self, n: int) -> None:
        """Keep only the first n tokens (for re-using a common prompt prefix)."""
        self.n_past = max(0, min(n, self.n_past))
        del self.tokens[self.n_past :]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        end = self._start + k.shape[0]
        self.k[layer] = self._store(self.k[layer], k, self.dtype_k, end)
        self.v[layer] = self._store(self.v[layer], v, self.dtype_v, end)
        k_all = self.k[layer][:end]
        v_all = self.v[layer][:end]
        return k_all, v_all, torch.arange(end)

    def _store(self, buf: torch.Tensor | None, new: torch.Tensor, dtype: torch.dtype, end: int) -> torch.Tensor:
        if buf is None or buf.shape[0] < end:
            capacity = min(self.n_ctx, max(end, 256, 2 * (buf.shape[0] if buf is not None else 0)))
            grown = torch.empty((capacity, *new.shape[1:]), dtype=dtype)
            if buf is not None:
                grown[: self._start] = buf[: self._start]
            buf = grown
        buf[self._start : end] = new.to(dtype)
        return buf

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)


class KVCache:
    """All sequences of an engine (sequence ids are small integers, as llama.cpp's seq_id)."""

    def __init__(self, n_layer: int, n_ctx: int, type_k: str = "f16", type_v: str = "f16"):
        self.n_layer = n_layer
        self.n_ctx = n_ctx
        self.dtype_k = CACHE_DTYPES[type_k]
        self.dtype_v = CACHE_DTYPES[type_v]
        self.sequences: dict[int, SequenceCache] = {}

    def seq(self, seq_id: int) -> SequenceCache:
        s = self.sequences.get(seq_id)
        if s is None:
            s = self.sequences[seq_id] = SequenceCache(self.n_layer, self.n_ctx, self.dtype_k, self.dtype_v)
        return s

    def clear(self, seq_id: int | None = None) -> None:
        if seq_id is None:
            self.sequences.clear()
        else:
            self.sequences.pop(seq_id, None)
