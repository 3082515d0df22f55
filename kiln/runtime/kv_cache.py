"""The KV cache: per sequence and layer, the keys and values of every token seen so far.

Storage grows on demand up to the context size (`-c`) and is kept in the
`-ctk`/`-ctv` type (f16 by default, as in llama.cpp; q8_0 stores blocks of 32
values as int8 with one f16 scale, 34 bytes, as ggml's Q8_0); attention reads it
back as float32. A layer may keep no V (the latent cache of MLA keeps one row per
token in K).
"""

from __future__ import annotations

import torch

from ..errors import ContextLimitError, OptionError

CACHE_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
Q8_BLOCK = 32


def bytes_per_value(cache_type: str) -> float:
    if cache_type == "q8_0":
        return 34 / 32
    return torch.empty((), dtype=CACHE_DTYPES[cache_type]).element_size()


def check_row(cache_type: str, row: int, what: str) -> None:
    if cache_type == "q8_0" and row % Q8_BLOCK:
        raise OptionError(
            f"a q8_0 {what} cache needs rows of a multiple of {Q8_BLOCK} values; this model's rows have {row}: "
            "use f16 or bf16 for it"
        )


class RowStore:
    """Rows [capacity, *shape] of one layer's K or V, in the cache type."""

    def __init__(self, cache_type: str, n_ctx: int):
        self.cache_type = cache_type
        self.n_ctx = n_ctx
        self.buf: torch.Tensor | None = None  # values, or int8 quants for q8_0
        self.scales: torch.Tensor | None = None  # q8_0: f16 [capacity, n_blocks]
        self.shape: tuple[int, ...] = ()

    @property
    def capacity(self) -> int:
        return 0 if self.buf is None else self.buf.shape[0]

    def write(self, start: int, new: torch.Tensor) -> None:
        end = start + new.shape[0]
        if self.buf is None or self.capacity < end:
            self._grow(start, end, new.shape[1:])
        if self.cache_type == "q8_0":
            flat = new.float().reshape(new.shape[0], -1, Q8_BLOCK)
            amax = flat.abs().amax(dim=-1)
            d = amax / 127
            inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
            q = torch.round(flat * inv[..., None]).clamp_(-127, 127).to(torch.int8)
            self.buf[start:end] = q.reshape(new.shape[0], -1)
            self.scales[start:end] = d.to(torch.float16)
        else:
            self.buf[start:end] = new.reshape(new.shape[0], *self.shape).to(self.buf.dtype)

    def reserve(self, end: int, shape: tuple[int, ...]) -> None:
        """Room for one new row at end - 1 (rows of `shape`), keeping the rows before it."""
        if self.buf is None or self.capacity < end:
            self._grow(end - 1, end, shape)

    def read(self, end: int) -> torch.Tensor:
        if self.cache_type == "q8_0":
            q = self.buf[:end].reshape(end, -1, Q8_BLOCK).float()
            return (q * self.scales[:end].float()[..., None]).reshape(end, *self.shape)
        return self.buf[:end]

    def _grow(self, keep: int, end: int, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        capacity = min(self.n_ctx, max(end, 256, 2 * self.capacity))
        row = 1
        for d in shape:
            row *= d
        if self.cache_type == "q8_0":
            buf = torch.empty((capacity, row), dtype=torch.int8)
            scales = torch.empty((capacity, row // Q8_BLOCK), dtype=torch.float16)
            if self.buf is not None:
                buf[:keep] = self.buf[:keep]
                scales[:keep] = self.scales[:keep]
            self.buf, self.scales = buf, scales
        else:
            buf = torch.empty((capacity, *shape), dtype=CACHE_DTYPES[self.cache_type])
            if self.buf is not None:
                buf[:keep] = self.buf[:keep]
            self.buf = buf

    def nbytes(self) -> int:
        n = 0
        for t in (self.buf, self.scales):
            if t is not None:
                n += t.numel() * t.element_size()
        return n


class SequenceCache:
    """One sequence: per-layer K/V rows and the token count."""

    def __init__(self, n_layer: int, n_ctx: int, type_k: str, type_v: str):
        self.n_layer = n_layer
        self.n_ctx = n_ctx
        self.k = [RowStore(type_k, n_ctx) for _ in range(n_layer)]
        self.v = [RowStore(type_v, n_ctx) for _ in range(n_layer)]
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

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor | None):
        """Store the new tokens' k (and v, unless None); return all keys, values (None when
        the layer keeps none) and their positions."""
        end = self._start + k.shape[0]
        self.k[layer].write(self._start, k)
        if v is not None:
            self.v[layer].write(self._start, v)
        return self.k[layer].read(end), (self.v[layer].read(end) if v is not None else None), torch.arange(end)

    def attend(self, layer: int, q, k, v, positions, fn):
        """The model's entry point (LayerCache): store the new rows, attend over the whole cache."""
        k_all, v_all, k_pos = self.append(layer, k, v)
        return fn(q, k_all, v_all, positions, k_pos)

    def new_token_rows(self, layer: int, k_shape: tuple[int, ...], v_shape: tuple[int, ...]):
        """For a batch of one token, the model's fused generation step writes and reads the
        cache itself: returns the layer's K and V storage (all rows, in the cache type; int8
        for q8_0), with room for the token, the row it goes to (its position), and the K and
        V scales of q8_0 (f16 [rows, values / 32]; None for other types)."""
        k, v = self.k[layer], self.v[layer]
        if self._count != 1:
            return None
        end = self._start + 1
        k.reserve(end, k_shape)
        v.reserve(end, v_shape)
        return k.buf, v.buf, self._start, k.scales, v.scales

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.k + self.v)


class BatchCache:
    """Several sequences in one forward pass (continuous batching): consecutive row ranges of
    the batch belong to different sequences, each attending only to its own cache."""

    def __init__(self, segments: list[tuple[SequenceCache, int]], direct: bool = True):
        self.segments = segments  # (sequence, its row count), in batch order
        self.direct = direct  # whether new_token_rows may hand the storage to the model

    def attend(self, layer: int, q, k, v, positions, fn):
        outs = []
        start = 0
        for seq, n in self.segments:
            end = start + n
            outs.append(seq.attend(layer, q[start:end], k[start:end], None if v is None else v[start:end],
                                   positions[start:end], fn))
            start = end
        return torch.cat(outs, dim=0)

    def new_token_rows(self, layer: int, k_shape: tuple[int, ...], v_shape: tuple[int, ...]):
        """SequenceCache.new_token_rows when the batch is one sequence's one token, else None."""
        if len(self.segments) != 1 or not self.direct:
            return None
        return self.segments[0][0].new_token_rows(layer, k_shape, v_shape)


class KVCache:
    """All sequences of an engine (sequence ids are small integers, as llama.cpp's seq_id)."""

    def __init__(self, n_layer: int, n_ctx: int, type_k: str = "f16", type_v: str = "f16"):
        self.n_layer = n_layer
        self.n_ctx = n_ctx
        self.type_k = type_k
        self.type_v = type_v
        self.sequences: dict[int, SequenceCache] = {}

    def seq(self, seq_id: int) -> SequenceCache:
        s = self.sequences.get(seq_id)
        if s is None:
            s = self.sequences[seq_id] = SequenceCache(self.n_layer, self.n_ctx, self.type_k, self.type_v)
        return s

    def clear(self, seq_id: int | None = None) -> None:
        if seq_id is None:
            self.sequences.clear()
        else:
            self.sequences.pop(seq_id, None)
