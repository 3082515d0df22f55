"""Products with F16 and BF16 weights on the CPU, read as stored (no float32 copy).

A row of 16-bit floats is dotted with a float32 activation row 8 values at a time
(`simd.dot_f32_f16` / `dot_f32_bf16`: conversion and FMA in registers), so every weight
byte is read once per token; the activations stay float32 (no quantization: the weights
carry no blocks to match). Batches convert a tile of rows to float32 for torch's GEMM
(`linear.product`).

- `fmatvec(w, bf16, x, out, chunks)`: w int16 [n_out, K] (the bits), x [n, K], out [n, n_out].
- `fmatvec_selected(w, bf16, n_rows, x, sel, out, chunks)`: out[s] = W_sel[s] . x[s], the
  matrices of a 3D tensor stacked in w, n_rows rows each.
"""

from __future__ import annotations

from numba import njit, prange

from .matmul import chunk_rows
from .simd import dot_f32_bf16, dot_f32_f16


@njit(inline="always")
def _dot(x, w, bf16, K):
    return dot_f32_bf16(x, 0, w, 0, K) if bf16 else dot_f32_f16(x, 0, w, 0, K)


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def fmatvec(w, bf16, x, out, chunks):
    n_rows, K = w.shape
    per = chunk_rows(n_rows, chunks)
    for c in prange((n_rows + per - 1) // per):
        for r in range(c * per, min(n_rows, (c + 1) * per)):
            for t in range(x.shape[0]):
                out[t, r] = _dot(x[t], w[r], bf16, K)


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def fmatvec_selected(w, bf16, n_rows, x, sel, out, chunks):
    K = w.shape[1]
    total = sel.size * n_rows
    per = chunk_rows(total, chunks)
    for c in prange((total + per - 1) // per):
        for i in range(c * per, min(total, (c + 1) * per)):
            s, r = i // n_rows, i % n_rows
            out[s, r] = _dot(x[s], w[sel[s] * n_rows + r], bf16, K)
