"""Quantized matrix products on the CPU, one compiled kernel for every type.

The kernels take the type's block decoder as an address (`indirect.py`) and call it once
per weight row; they compile once and are cached on disk. Every CPU kernel uses numpy's
error model: a NaN or Inf in the input flows through to the output, where the model's
per-layer check reports it (with Python's model, fast-math code raised a false division
by zero on NaN input; `activations.py` keeps a NaN from vanishing in quantization).

- `qmatvec(dec, raw, row_bytes, K, x, qx, dx, sx, sx32, out, chunks)`: the token-generation
  product: x goes to 16-bit blocks in the buffers qx.. (`activations.py`), then each
  weight row is decoded once into a small per-thread buffer (int8 values and group scales,
  `decode_common.py`) and dotted with every activation row (`simd.row_dot_sub16`); rows
  are shared among threads. Each weight byte is read once per call and no float copy of
  the weights exists.
- `qmatvec_selected(dec, raw, matrix_bytes, row_bytes, K, x, sel, qx, dx, sx, sx32, out, chunks)`:
  the experts of generation: out[s] = W_sel[s] . x[s], every selection s with its own
  matrix of a 3D tensor (raw holds them all, matrix_bytes apart) and its own activation
  row, all in one call whose threads share the rows of every selected matrix.
- `decode_rows(dec, raw, row_bytes, K, first, out, chunks)`: rows first.. of W as float32 into a
  caller's buffer; prompt processing decodes one tile at a time for torch's GEMM.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .activations import quantize_row
from .decode_common import MINS, PER32, U
from .indirect import call_decoder
from .simd import row_dot_block32, row_dot_sub16

# The callers pass `chunks`, the number of work items a product's rows are split into:
# a small multiple of the thread count (Numba cannot cache a kernel that asks for the
# count itself); each item allocates its row buffers once, so more items cost more.
# rows decoded one after another before their dot products: alternating a row's decode and
# its dot costs ~20 ns per row (measured: rows of 576 values ran 1.2-1.5x slower that way);
# fewer for long rows, whose decoded form (2.25 bytes per value) must stay in L1
GROUP = 4
GROUP_VALUES = 8192  # values decoded per group at most


@njit(inline="always")
def group_rows(K):
    """Rows decoded before their dot products, for rows of K values."""
    return max(1, min(GROUP, GROUP_VALUES // K))


@njit(inline="always")
def _row_buffers(K):
    """One thread's buffers for GROUP decoded rows: values, scales, minimums
    (decode_common.py), one row of each per decoded row."""
    return (np.empty((GROUP, K), dtype=np.int8), np.empty((GROUP, K // 4), dtype=np.float32),
            np.empty((GROUP, K // 16), dtype=np.float32))


@njit(inline="always")
def chunk_rows(total, chunks):
    """Rows per work item: an even share of `total` over `chunks`, in whole groups."""
    n = max(1, min(total, chunks))
    per = (total + n - 1) // n
    return (per + GROUP - 1) // GROUP * GROUP


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


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def qmatvec(dec, raw, row_bytes, K, x, qx, dx, sx, sx32, out, chunks):
    n_rows = out.shape[1]
    n_tok = qx.shape[0]
    for t in range(n_tok):
        quantize_row(x, qx, dx, sx, sx32, t)
    per = chunk_rows(n_rows, chunks)
    for c in prange((n_rows + per - 1) // per):
        q, sw, mw = _row_buffers(K)
        end = min(n_rows, (c + 1) * per)
        ng = group_rows(K)
        for r0 in range(c * per, end, ng):
            n = min(ng, end - r0)
            layout = 0
            for g in range(n):
                layout = call_decoder(dec, raw, (r0 + g) * row_bytes, K, q[g], sw[g], mw[g])
            for g in range(n):
                for t in range(n_tok):
                    out[t, r0 + g] = _row_times(layout, K, q[g], sw[g], mw[g], qx[t], dx[t], sx[t], sx32[t])


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def qmatvec_selected(dec, raw, matrix_bytes, row_bytes, K, x, sel, qx, dx, sx, sx32, out, chunks):
    n_sel, n_rows = out.shape
    for s in range(n_sel):
        quantize_row(x, qx, dx, sx, sx32, s)
    total = n_sel * n_rows
    per = chunk_rows(total, chunks)
    for c in prange((total + per - 1) // per):
        q, sw, mw = _row_buffers(K)
        end = min(total, (c + 1) * per)
        ng = group_rows(K)
        for i0 in range(c * per, end, ng):
            n = min(ng, end - i0)
            layout = 0
            for g in range(n):
                s, r = (i0 + g) // n_rows, (i0 + g) % n_rows
                layout = call_decoder(dec, raw, sel[s] * matrix_bytes + r * row_bytes, K, q[g], sw[g], mw[g])
            for g in range(n):
                s, r = (i0 + g) // n_rows, (i0 + g) % n_rows
                out[s, r] = _row_times(layout, K, q[g], sw[g], mw[g], qx[s], dx[s], sx[s], sx32[s])


@njit(inline="always")
def decode_row_f32(dec, raw, row_bytes, K, r, q, sw, mw, o):
    """Row r of the matrix in raw as float32 into o (q, sw, mw: one row's buffers)."""
    layout = call_decoder(dec, raw, r * row_bytes, K, q, sw, mw)
    if layout & PER32:
        for k in range(U(K)):
            o[k] = sw[k // U(32)] * np.float32(q[k]) + mw[k // U(32)]
    else:
        for k in range(U(K)):
            o[k] = sw[k // U(4)] * np.float32(q[k]) + mw[k // U(16)]


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def decode_rows(dec, raw, row_bytes, K, first, out, chunks):
    n = out.shape[0]
    per = chunk_rows(n, chunks)
    for c in prange((n + per - 1) // per):
        q, sw, mw = _row_buffers(K)
        for i in range(c * per, min(n, (c + 1) * per)):
            decode_row_f32(dec, raw, row_bytes, K, first + i, q[0], sw[0], mw[0], out[i])
