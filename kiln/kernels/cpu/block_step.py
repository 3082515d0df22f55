"""Every pre-norm transformer block of a model for one generated token, in one Numba call
(`blocks_step`; `_block` is one block):

    h   = x + Wo . attention(rope(Wq . n1), rope(Wk . n1), Wv . n1),  n1 = RMSNorm(x) * attn_norm
    out = h + Wdown . (SiLU(Wgate . n2) * (Wup . n2)),                 n2 = RMSNorm(h) * ffn_norm

with optional q/k/v/o biases and per-head q/k RMS norms (Qwen2, Qwen3), rope (ggml's
adjacent-pair or neox mode), a sliding window and a logit softcap; the new key and value
are written to the f16, bf16 or q8_0 KV cache and attention runs over it flash-style
(`attention.head_f16`, `head_q8`).

Generation of one token through the per-operation path pays Python and dispatch on
about 25 operations per block (tens of microseconds each); here the whole stack is one
call, with each layer's weights given by address (one int64 array, no per-call typing).
The products are the generation kernels' (`matmul.py`): each weight through its type's
decoder address, q/k/v in one pass over their rows, gate/up in another. Same numbers as
that path, up to float summation order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from .activations import quantize_row
from .attention import head_bf16, head_f16, head_q8
from .indirect import call_decoder_at
from .matmul import GROUP, _row_buffers, _row_times, chunk_rows, group_rows
from .norm import rms_norm_row
from .rope import rope_head
from .simd import bf16_bits, f16_bits

# order of the seven weights in a block's arrays
W_Q, W_K, W_V, W_O, W_GATE, W_UP, W_DOWN = range(7)


@njit(inline="always")
def _products(decs, data, row_bytes, n_out, m0, m1, K, qx, dx, sx, sx32, out, chunks):
    """out = concatenated W_m . x for m in m0..m1-1 (bytes at address data[m]), x already in
    the 16-bit blocks qx..; the rows of all these matrices are shared among the threads,
    decoded GROUP at a time (`matmul.py`)."""
    total = 0
    for m in range(m0, m1):
        total += n_out[m]
    per = chunk_rows(total, chunks)
    for c in prange((total + per - 1) // per):
        q, sw, mw = _row_buffers(K)
        layouts = np.empty(GROUP, dtype=np.int64)
        end = min(total, (c + 1) * per)
        m, first = m0, 0
        ng = group_rows(K)
        for i0 in range(c * per, end, ng):
            n = min(ng, end - i0)
            for g in range(n):
                while i0 + g - first >= n_out[m]:
                    first += n_out[m]
                    m += 1
                layouts[g] = call_decoder_at(decs[m], data[m], (i0 + g - first) * row_bytes[m], K, q[g], sw[g], mw[g])
            for g in range(n):
                out[i0 + g] = _row_times(layouts[g], K, q[g], sw[g], mw[g], qx[0], dx[0], sx[0], sx32[0])


@njit(inline="always")
def _store_row(cache, slot, values, off, n, bf16):
    row = cache[slot]
    for i in range(n):
        row[i] = bf16_bits(values[off + i]) if bf16 else f16_bits(values[off + i])


@njit(error_model="numpy")  # no fast-math: the same rounding as the cache's own q8_0 writer (kv_cache.RowStore)
def _store_q8(cache, scales, slot, values, off, n):
    """values[off:off + n] as q8_0 into row `slot`: per 32 values d = amax / 127 (stored as
    f16 bits), q = round(v / d) in -127..127."""
    for b in range(n // 32):
        amax = np.float32(0)
        for c in range(32):
            amax = max(amax, abs(values[off + 32 * b + c]))
        d = amax / np.float32(127)
        inv = np.float32(1) / d if d > 0 else np.float32(0)
        for c in range(32):
            cache[slot, 32 * b + c] = np.int8(min(max(np.rint(values[off + 32 * b + c] * inv), -127), 127))
        scales[slot, b] = f16_bits(d)


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def _block(
    x, attn_norm, ffn_norm, eps,
    decs, data, row_bytes, n_out,
    bq, bk, bv, bo, q_norm, k_norm,
    n_head, n_kv, hd, hdv, cos, sin, neox,
    k_cache, v_cache, k_scales, v_scales, bf16, slot, k_pos, window, scale, softcap,
    xa, qx, dx, sx, sx32, proj, att, ffn, chunks,
):  # fmt: skip
    """One block's output into x (float32 [E]) for the token at cache row `slot` (its
    position); returns the output's sum (non-finite when any value is). The block's
    weights' bytes are at addresses data[W_Q..W_DOWN]; k_cache / v_cache: int16 [capacity,
    n_kv * hd] (f16 bits, or bf16 when bf16), or int8 (q8_0) with k_scales / v_scales (int16
    f16 bits [capacity, n_kv * hd / 32]; unused otherwise); k_pos: 0, 1, ... up to slot. xa, qx, dx, sx, sx32
    [1, max K]; proj, att, ffn: float32 scratch (see `scratch`)."""
    E = x.size
    nq, nk = n_head * hd, n_kv * hd
    rms_norm_row(x, attn_norm, True, eps, xa[0, :E])
    quantize_row(xa[:, :E], qx, dx, sx, sx32, 0)
    _products(decs, data, row_bytes, n_out, W_Q, W_V + 1, E, qx, dx, sx, sx32, proj, chunks)
    if bq.size:
        for i in range(nq):
            proj[i] += bq[i]
        for i in range(nk):
            proj[nq + i] += bk[i]
        for i in range(n_kv * hdv):
            proj[nq + nk + i] += bv[i]
    for h in range(n_head + n_kv):
        head = proj[h * hd : (h + 1) * hd]
        if q_norm.size and h < n_head:
            rms_norm_row(head, q_norm, True, eps, head)
        if k_norm.size and h >= n_head:
            rms_norm_row(head, k_norm, True, eps, head)
        rope_head(head, head, cos, sin, neox)
    # one compiled body serves every cache type: the branches not taken for the arrays'
    # type are never run (q8: int8 rows and scales; else 16-bit float bits)
    q8 = k_cache.itemsize == 1
    if q8:
        _store_q8(k_cache, k_scales, slot, proj, nq, nk)
        _store_q8(v_cache, v_scales, slot, proj, nq + nk, n_kv * hdv)
    else:
        _store_row(k_cache, slot, proj, nq, nk, bf16)
        _store_row(v_cache, slot, proj, nq + nk, n_kv * hdv, bf16)
    group = n_head // n_kv
    for h in prange(n_head):
        g = h // group
        if q8:
            head_q8(proj, h * hd, hd, k_cache, k_scales, g * hd, v_cache, v_scales, g * hdv, hdv, slot + 1, k_pos,
                    slot, window, scale, softcap, att, h * hdv)
        elif bf16:
            head_bf16(proj, h * hd, hd, k_cache, g * hd, v_cache, g * hdv, hdv, slot + 1, k_pos, slot, window,
                      scale, softcap, att, h * hdv)
        else:
            head_f16(proj, h * hd, hd, k_cache, g * hd, v_cache, g * hdv, hdv, slot + 1, k_pos, slot, window,
                     scale, softcap, att, h * hdv)
    K_o = n_head * hdv
    quantize_row(att.reshape(1, -1)[:, :K_o], qx, dx, sx, sx32, 0)
    _products(decs, data, row_bytes, n_out, W_O, W_O + 1, K_o, qx, dx, sx, sx32, proj, chunks)
    for i in range(E):
        x[i] += proj[i] + (bo[i] if bo.size else np.float32(0))
    rms_norm_row(x, ffn_norm, True, eps, xa[0, :E])
    quantize_row(xa[:, :E], qx, dx, sx, sx32, 0)
    _products(decs, data, row_bytes, n_out, W_GATE, W_UP + 1, E, qx, dx, sx, sx32, ffn, chunks)
    F = n_out[W_GATE]
    for i in range(F):
        g = ffn[i]
        xa[0, i] = g / (np.float32(1) + np.float32(math.exp(-g))) * ffn[F + i]
    quantize_row(xa[:, :F], qx, dx, sx, sx32, 0)
    _products(decs, data, row_bytes, n_out, W_DOWN, W_DOWN + 1, F, qx, dx, sx, sx32, proj, chunks)
    total = 0.0
    for i in range(E):
        x[i] += proj[i]
        total += x[i]
    return total


@njit(fastmath=True, cache=True, error_model="numpy")
def blocks_step(
    x, attn_norms, ffn_norms, eps, decs, data, row_bytes, n_out,
    bq, bk, bv, bo, q_norm, k_norm, shapes, cos, sin, flags, fparams,
    k_caches, v_caches, k_scales, v_scales, bf16, slot, k_pos,
    xa, qx, dx, sx, sx32, proj, att, ffn, sums, chunks,
):  # fmt: skip
    """Every block of a model for one token (`_block` for layer l = 0, 1, ...), x in place;
    sums[l] = the sum of layer l's output. Per layer l: attn_norms[l], ffn_norms[l], eps[l];
    decs[l], data[l], row_bytes[l], n_out[l] for its seven weights (data: the addresses of
    their bytes);
    bq..k_norm, cos, sin, k_caches, v_caches, k_scales, v_scales: one array per layer;
    shapes[l] = n_head, n_kv, hd, hdv; flags[l] = neox, window; fparams[l] = scale, softcap."""
    for l in range(attn_norms.shape[0]):
        sums[l] = _block(
            x, attn_norms[l], ffn_norms[l], eps[l], decs[l], data[l], row_bytes[l], n_out[l],
            bq[l], bk[l], bv[l], bo[l], q_norm[l], k_norm[l],
            shapes[l, 0], shapes[l, 1], shapes[l, 2], shapes[l, 3], cos[l], sin[l], flags[l, 0] != 0,
            k_caches[l], v_caches[l], k_scales[l], v_scales[l], bf16, slot, k_pos, flags[l, 1], fparams[l, 0],
            fparams[l, 1],
            xa, qx, dx, sx, sx32, proj, att, ffn, chunks,
        )  # fmt: skip


@dataclass(frozen=True)
class BlockWeights:
    """What `_block` reads of one block, prepared once (`dispatch.block_step_plan`)."""

    attn_norm: np.ndarray
    ffn_norm: np.ndarray
    eps: float
    decs: np.ndarray  # int64 [7]: decoder addresses, in W_Q..W_DOWN order
    raws: tuple  # 7 read-only uint8 arrays (kept alive: the step reads them by address)
    row_bytes: np.ndarray  # int64 [7]
    n_out: np.ndarray  # int64 [7]
    biases: tuple  # q, k, v, o as float32 (all empty when the block has none)
    q_norm: np.ndarray  # float32 [hd] or empty
    k_norm: np.ndarray
    n_head: int
    n_kv: int
    hd: int
    hdv: int
    neox: bool
    window: int
    scale: float
    softcap: float

    @property
    def max_k(self) -> int:
        return int(max(self.n_out[W_O], self.n_out[W_GATE], self.n_head * self.hdv))


class ModelSteps:
    """The per-layer arrays of `blocks_step` for a model's blocks, stacked once."""

    def __init__(self, blocks: list[BlockWeights]):
        self.blocks = blocks
        self.attn_norms = np.stack([b.attn_norm for b in blocks])
        self.ffn_norms = np.stack([b.ffn_norm for b in blocks])
        self.eps = np.array([b.eps for b in blocks], dtype=np.float64)
        self.decs = np.stack([b.decs for b in blocks])
        self.data = np.array([[r.ctypes.data for r in b.raws] for b in blocks], dtype=np.int64)
        self.row_bytes = np.stack([b.row_bytes for b in blocks])
        self.n_out = np.stack([b.n_out for b in blocks])
        self.biases = tuple(tuple(b.biases[i] for b in blocks) for i in range(4))
        self.q_norm = tuple(b.q_norm for b in blocks)
        self.k_norm = tuple(b.k_norm for b in blocks)
        self.shapes = np.array([(b.n_head, b.n_kv, b.hd, b.hdv) for b in blocks], dtype=np.int64)
        self.flags = np.array([(b.neox, b.window) for b in blocks], dtype=np.int64)
        self.fparams = np.array([(b.scale, b.softcap) for b in blocks], dtype=np.float32)
        self.sums = np.empty(len(blocks), dtype=np.float32)
        self.scratch = scratch(blocks)


def scratch(blocks: list[BlockWeights]) -> tuple[np.ndarray, ...]:
    """The scratch arrays of `_block` for the largest of these blocks: xa, qx, dx, sx, sx32
    (one activation row), proj, att, ffn."""
    k = max(b.max_k for b in blocks)
    p = max(int(b.n_out[W_Q] + b.n_out[W_K] + b.n_out[W_V] + b.n_out[W_O]) for b in blocks)
    a = max(b.n_head * b.hdv for b in blocks)
    f = max(int(2 * b.n_out[W_GATE]) for b in blocks)
    return (
        np.empty((1, k), dtype=np.float32),
        np.empty((1, k), dtype=np.int16),
        np.empty((1, k // 32), dtype=np.float32),
        np.empty((1, k // 16), dtype=np.float32),
        np.empty((1, k // 32), dtype=np.float32),
        np.empty(p, dtype=np.float32),
        np.empty(a, dtype=np.float32),
        np.empty(f, dtype=np.float32),
    )
