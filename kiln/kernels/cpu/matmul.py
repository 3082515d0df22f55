"""Quantized matrix products on the CPU, one compiled kernel for every type.

The kernels take the type's block decoder as an address (`indirect.py`) and call it once
per weight row; they compile once and are cached on disk.

- `qmatvec(dec, raw, row_bytes, K, x, qx, dx, sx, sx32, out)`: the token-generation
  product: x goes to 16-bit blocks in the buffers qx.. (`activations.py`), then each
  weight row is decoded once into a small per-thread buffer (int8 values and group scales,
  `decode_common.py`) and dotted with every activation row (`simd.row_dot_sub16`); rows
  are shared among threads. Each weight byte is read once per call and no float copy of
  the weights exists.
- `qmatvec_selected(dec, raw, matrix_bytes, row_bytes, K, x, sel, qx, dx, sx, sx32, out)`:
  the experts of generation: out[s] = W_sel[s] . x[s], every selection s with its own
  matrix of a 3D tensor (raw holds them all, matrix_bytes apart) and its own activation
  row, all in one call whose threads share the rows of every selected matrix.
- `decode_rows(dec, raw, row_bytes, K, first, out)`: rows first.. of W as float32 into a
  caller's buffer; prompt processing decodes one tile at a time for torch's GEMM.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import quantize_row
from .decode_common import MINS, PER32, U
from .indirect import call_decoder
from .simd import row_dot_block32, row_dot_sub16

# work items per product shared among the threads (a fixed count: Numba cannot cache a
# kernel that asks for the thread count; 256 balances up to 32 threads)
CHUNKS = 256


@njit(inline="always")
def _row_buffers(K):
    """One thread's buffers for a decoded row: values, scales, minimums (decode_common.py)."""
    return np.empty(K, dtype=np.int8), np.empty(K // 4, dtype=np.float32), np.empty(K // 16, dtype=np.float32)


@njit(inline="always")
def _row_times(layout, K, q, sw, mw, qx, dx, sx, sx32):
    """One decoded weight row (q, sw, mw in `layout`) times one activation row in blocks."""
    if layout & PER32:
        acc = row_dot_block32(q, 0, sw, 0, qx, 0, dx, 0, K // 32)
        if layout & MINS:
            for g in range(U(K) // U(32)):
                acc += mw[g] * sx32[g]
    else:
        acc = row_dot_sub16(q, 0, sw, 0, qx, 0, dx, 0, K // 32)
        if layout & MINS:
            for g in range(U(K) // U(16)):
                acc += mw[g] * sx[g]
    return acc


@njit(parallel=True, fastmath=True, cache=True)
def qmatvec(dec, raw, row_bytes, K, x, qx, dx, sx, sx32, out):
    n_rows = out.shape[1]
    n_tok = qx.shape[0]
    for t in range(n_tok):
        quantize_row(x, qx, dx, sx, sx32, t)
    n_chunks = min(n_rows, CHUNKS)
    per = (n_rows + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        q, sw, mw = _row_buffers(K)
        for r in range(c * per, min(n_rows, (c + 1) * per)):
            layout = call_decoder(dec, raw, r * row_bytes, K, q, sw, mw)
            for t in range(n_tok):
                out[t, r] = _row_times(layout, K, q, sw, mw, qx[t], dx[t], sx[t], sx32[t])


@njit(parallel=True, fastmath=True, cache=True)
def qmatvec_selected(dec, raw, matrix_bytes, row_bytes, K, x, sel, qx, dx, sx, sx32, out):
    n_sel, n_rows = out.shape
    for s in range(n_sel):
        quantize_row(x, qx, dx, sx, sx32, s)
    total = n_sel * n_rows
    n_chunks = min(total, CHUNKS)
    per = (total + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        q, sw, mw = _row_buffers(K)
        for i in range(c * per, min(total, (c + 1) * per)):
            s, r = i // n_rows, i % n_rows
            layout = call_decoder(dec, raw, sel[s] * matrix_bytes + r * row_bytes, K, q, sw, mw)
            out[s, r] = _row_times(layout, K, q, sw, mw, qx[s], dx[s], sx[s], sx32[s])


@njit(inline="always")
def decode_row_f32(dec, raw, row_bytes, K, r, q, sw, mw, o):
    """Row r of the matrix in raw as float32 into o."""
    layout = call_decoder(dec, raw, r * row_bytes, K, q, sw, mw)
    if layout & PER32:
        for k in range(U(K)):
            o[k] = sw[k // U(32)] * np.float32(q[k]) + mw[k // U(32)]
    else:
        for k in range(U(K)):
            o[k] = sw[k // U(4)] * np.float32(q[k]) + mw[k // U(16)]


@njit(parallel=True, fastmath=True, cache=True)
def decode_rows(dec, raw, row_bytes, K, first, out):
    n = out.shape[0]
    n_chunks = min(n, CHUNKS)
    per = (n + n_chunks - 1) // n_chunks
    for c in prange(n_chunks):
        q, sw, mw = _row_buffers(K)
        for i in range(c * per, min(n, (c + 1) * per)):
            decode_row_f32(dec, raw, row_bytes, K, first + i, q, sw, mw, out[i])
