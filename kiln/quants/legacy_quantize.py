"""Quantization (float32 -> bytes) of the 32-value block types Q8_0, Q4_0, Q4_1, Q5_0,
Q5_1 and ik_llama.cpp's Q6_0, with optional importance weights (an imatrix).

The results are byte-identical to ik_llama.cpp's `ggml_quantize_chunk` as built by its
default CMake set-up (GCC, -O3, -march=native on x86-64 with FMA). That build lets the
compiler fuse some `a*b + c` into one fused multiply-add, which rounds once instead of
twice and so changes a few quants; the code below does the same, at the same places,
with an explicit `fma` (llvm.fma). Where the compiler kept a product and a sum apart,
so do we (the places were read off GCC 12's code for ggml-quants.c). Every other
operation is done in the C code's type (float32, and float64 where it uses double) and
in its order, including the order of running sums. The `gguf` package's numpy
quantizers round x*(1/d) before adding the offset, so for the closed-form types they
differ from this (and from ik_llama.cpp) in about one value in a few million.

What each type does (ggml-quants.c):

- Q8_0 ignores the importance weights: d = amax/127, q = roundf(x/d).
- Q4_0, Q5_0, Q4_1, Q5_1 without weights use the closed-form `_ref` quantizers:
  d from the signed absolute maximum (or from min and max for the _1 types), then
  q = trunc(x*(1/d) + offset), the product fused with the add.
- Q4_0, Q5_0 with weights, and Q6_0 always, search the scale per block with
  `make_qx_quants` (rmse_type 1): 38 trial scales around nmax/max, then a greedy
  one-quant-at-a-time refinement. Q6_0 without weights uses w = x*x.
- Q4_1, Q5_1 with weights search scale and minimum with `make_qkx3_quants`.
- The block weights are w_j = imatrix_j * sqrt(sigma2 + x_j^2), sigma2 being the
  mean of x^2 over the row; the imatrix has one value per column and repeats along
  every row.

The compiled kernels release the GIL, so callers may quantize row ranges in threads.

`QUANTIZERS[name](x, imatrix)` takes x as float32 [n_rows, n_per_row] and the
per-column weights as float32 [n_per_row] or None, and returns uint8
[n_rows, row_bytes] in the block layouts of `legacy.py` (Q6_0: f16 d, 8 bytes of high
bits, 16 bytes of nibbles).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import KilnError, UnsupportedTypeError
from .quantize_common import _fma, _nearest, abs_max, make_qkx3_quants, sum_squares

QK = 32
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q6_0": 26, "Q8_0": 34}

_FLT_MAX = 3.4028234663852886e38


@njit(cache=True, inline="always")
def _roundf(v):
    """C roundf (halfway cases away from zero) of a float32, as a float32."""
    t = np.float32(np.int32(v))
    r = v - t
    if r >= np.float32(0.5):
        t += np.float32(1.0)
    elif r <= np.float32(-0.5):
        t -= np.float32(1.0)
    return t


# ---------------------------------------------------------------------------------------
# closed-form ("_ref") quantizers: one pass per block
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _ref_q8_0(x, d, q):
    nb = x.shape[0] // QK
    for ib in range(nb):
        xb = x[ib * QK : (ib + 1) * QK]
        amax = np.float32(0.0)
        for j in range(QK):
            a = abs(xb[j])
            if a > amax:
                amax = a
        db = amax / np.float32(127.0)
        idb = np.float32(1.0) / db if db != 0 else np.float32(0.0)
        d[ib] = db
        for j in range(QK):
            q[ib * QK + j] = np.int32(_roundf(xb[j] * idb))


@njit(cache=True, nogil=True)
def _ref_symmetric(x, d, q, nhalf):
    """Q4_0 (nhalf 8) and Q5_0 (nhalf 16): d = -max/nhalf, q = trunc(x/d + nhalf + 0.5)."""
    nb = x.shape[0] // QK
    offset = np.float32(nhalf) + np.float32(0.5)
    qmax = 2 * nhalf - 1
    for ib in range(nb):
        xb = x[ib * QK : (ib + 1) * QK]
        amax = np.float32(0.0)
        mx = np.float32(0.0)
        for j in range(QK):
            a = abs(xb[j])
            if amax < a:
                amax = a
                mx = xb[j]
        db = mx / np.float32(-nhalf)
        idb = np.float32(1.0) / db if db != 0 else np.float32(0.0)
        d[ib] = db
        for j in range(QK):
            v = np.int32(_fma(xb[j], idb, offset))
            q[ib * QK + j] = min(qmax, v)


@njit(cache=True, nogil=True)
def _ref_affine(x, d, m, q, qmax, clamp):
    """Q4_1 (qmax 15) and Q5_1 (qmax 31): d = (max - min)/qmax, q = trunc((x - min)/d + 0.5)."""
    nb = x.shape[0] // QK
    half = np.float32(0.5)
    for ib in range(nb):
        xb = x[ib * QK : (ib + 1) * QK]
        mn = np.float32(_FLT_MAX)
        mx = -mn
        for j in range(QK):
            v = xb[j]
            if v < mn:
                mn = v
            if v > mx:
                mx = v
        db = (mx - mn) / np.float32(qmax)
        idb = np.float32(1.0) / db if db != 0 else np.float32(0.0)
        d[ib] = db
        m[ib] = mn
        for j in range(QK):
            v = np.int32(_fma(xb[j] - mn, idb, half))
            q[ib * QK + j] = min(qmax, v) if clamp else v & 0xFF


# ---------------------------------------------------------------------------------------
# weighted searches
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _make_qx_quants(nmax, x, w, L):
    """ggml's make_qx_quants with rmse_type 1 and weights w; L gets 0..2*nmax-1.

    Returns the scale. The first pass fuses its running sums, the 38 trial passes do
    not (GCC vectorized them with in-order adds), the refinement fuses the suml2
    update and x - scale*l.
    """
    n = x.shape[0]
    amax, mx = abs_max(x)
    if amax < np.float32(1e-15):
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(-nmax) / mx
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        lv = max(-nmax, min(nmax - 1, _nearest(iscale, x[i])))
        L[i] = lv + nmax
        fl = np.float32(lv)
        sumlx = _fma(w[i] * x[i], fl, sumlx)
        suml2 = _fma(w[i] * fl, fl, suml2)
    scale = sumlx / suml2 if suml2 != 0 else np.float32(0.0)
    best = scale * sumlx
    best_sumlx = sumlx
    best_suml2 = suml2
    for step in range(-9, 10):
        t = np.float32(0.1) * np.float32(step)
        for k in range(2):
            if k == 0:
                iscale = -(np.float32(nmax) + t) / mx
            else:
                iscale = (np.float32(nmax - 1) + t) / mx
            sumlx = np.float32(0.0)
            suml2 = np.float32(0.0)
            for i in range(n):
                fl = np.float32(max(-nmax, min(nmax - 1, _nearest(iscale, x[i]))))
                sumlx += w[i] * x[i] * fl
                suml2 += w[i] * fl * fl
            if suml2 > 0 and sumlx * sumlx > best * suml2:
                for i in range(n):
                    L[i] = nmax + max(-nmax, min(nmax - 1, _nearest(iscale, x[i])))
                scale = sumlx / suml2
                best = scale * sumlx
                best_sumlx = sumlx
                best_suml2 = suml2
    sumlx = best_sumlx
    suml2 = best_suml2
    for _ in range(n * (2 * nmax - 1)):
        abs_gmax = np.float32(0.0)
        gmax = np.float32(0.0)
        best_j = -1
        for j in range(n):
            lv = np.int32(L[j]) - nmax
            g = (scale * w[j]) * _fma(-scale, np.float32(lv), x[j])
            if (g > 0 and lv < nmax - 1) or (g < 0 and lv > -nmax):
                ag = abs(g)
                if ag > abs_gmax:
                    abs_gmax = ag
                    gmax = g
                    best_j = j
        if best_j < 0:
            break
        wj = w[best_j]
        lv = np.int32(L[best_j]) - nmax
        wx = wj * x[best_j]
        if gmax > 0:
            new_sumlx = sumlx + wx
            new_suml2 = _fma(wj, np.float32(2 * lv + 1), suml2)
            lv += 1
        else:
            new_sumlx = sumlx - wx
            new_suml2 = _fma(-wj, np.float32(2 * lv - 1), suml2)
            lv -= 1
        if new_suml2 > 0 and new_sumlx * new_sumlx > best * new_suml2:
            sumlx = new_sumlx
            suml2 = new_suml2
            scale = sumlx / suml2
            best = scale * sumlx
            L[best_j] = lv + nmax
        else:
            break
    return scale


@njit(cache=True)
def _block_weights(x, qw, out):
    """out[j] = qw[j] * sqrt(sigma2 + x[j]^2) over a row, sigma2 = mean of x^2 (plain sum)."""
    n = x.shape[0]
    sigma2 = sum_squares(x) / np.float32(n)
    for j in range(n):
        out[j] = qw[j] * np.sqrt(_fma(x[j], x[j], sigma2))


@njit(cache=True, nogil=True)
def _rows_qx(x, qw, use_qw, nmax, d, q):
    """make_qx_quants per block of every row; weights from qw, or x*x when not use_qw."""
    n_rows, n = x.shape
    nb = n // QK
    w = np.empty(n, np.float32)
    for r in range(n_rows):
        xr = x[r]
        if use_qw:
            _block_weights(xr, qw, w)
        else:
            for j in range(n):
                w[j] = xr[j] * xr[j]
        for ib in range(nb):
            s = ib * QK
            d[r, ib] = _make_qx_quants(nmax, xr[s : s + QK], w[s : s + QK], q[r, s : s + QK])


@njit(cache=True, nogil=True)
def _rows_qkx3(x, qw, nmax, d, m, q):
    """make_qkx3_quants per block of every row, weights from qw; m gets the minimum."""
    n_rows, n = x.shape
    nb = n // QK
    w = np.empty(n, np.float32)
    Laux = np.empty(QK, np.uint8)
    for r in range(n_rows):
        xr = x[r]
        _block_weights(xr, qw, w)
        for ib in range(nb):
            s = ib * QK
            d[r, ib], m[r, ib] = make_qkx3_quants(
                nmax, xr[s : s + QK], w[s : s + QK], q[r, s : s + QK], Laux, False
            )


# ---------------------------------------------------------------------------------------
# packing and the public functions
# ---------------------------------------------------------------------------------------


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 [n_rows, nb] -> uint8 [n_rows, nb, 2], IEEE half rounded to nearest even."""
    return v.astype("<f2").view(np.uint8).reshape(*v.shape, 2)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """quants [n_rows, nb, 32] -> [n_rows, nb, 16]: value j low nibble, value j+16 high nibble."""
    return (q[..., :16] & 0x0F) | ((q[..., 16:] & 0x0F) << 4)


def _fifth_bits(q: np.ndarray) -> np.ndarray:
    """quants [n_rows, nb, 32] -> [n_rows, nb, 4]: bit 4 of value j at bit j of a little-endian uint32."""
    bits = ((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    return bits.sum(axis=-1, dtype=np.uint32).astype("<u4")[..., None].view(np.uint8)


def _q6_high_bits(q: np.ndarray) -> np.ndarray:
    """quants [n_rows, nb, 32] -> [n_rows, nb, 8]: byte b holds bits 4-5 of values b, b+16 (low
    nibble) and b+8, b+24 (high nibble)."""
    hi = q >> 4
    h = hi[..., :16] | (hi[..., 16:] << 2)  # one nibble per j = 0..15
    return h[..., :8] | (h[..., 8:] << 4)


def _check(x: np.ndarray, imatrix: np.ndarray | None, type_name: str, name: str):
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise KilnError(
            f"{name}: quantizing to {type_name} needs a 2D array [rows, row length], got shape {arr.shape}"
        )
    n = arr.shape[1]
    if n % QK:
        raise UnsupportedTypeError(
            f"{name}: row size {n} not divisible by block size {QK} for {type_name}; keep this tensor in F16/F32"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if imatrix is None:
        return arr, None
    qw = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    if qw.shape[0] != n:
        raise KilnError(
            f"{name}: imatrix has {qw.shape[0]} values, the row length is {n}; "
            "the imatrix was made for another model (or this tensor's slice of it is wrong)"
        )
    return arr, qw


def _assemble(parts: list[np.ndarray], n_rows: int) -> np.ndarray:
    return np.concatenate(parts, axis=-1).reshape(n_rows, -1)


def quantize_q8_0(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """Q8_0: f16 d = amax/127, 32 int8 roundf(x/d). The imatrix is ignored, as in ggml."""
    x, _ = _check(x, imatrix, "Q8_0", name)
    n_rows, n = x.shape
    d = np.empty(n_rows * n // QK, np.float32)
    q = np.empty(n_rows * n, np.int8)
    _ref_q8_0(x.reshape(-1), d, q)
    nb = n // QK
    return _assemble([_f16_bytes(d.reshape(n_rows, nb)), q.view(np.uint8).reshape(n_rows, nb, QK)], n_rows)


def _symmetric(x, imatrix, type_name, nhalf, name):
    x, qw = _check(x, imatrix, type_name, name)
    n_rows, n = x.shape
    nb = n // QK
    if qw is None:
        d = np.empty(n_rows * nb, np.float32)
        q = np.empty(n_rows * n, np.uint8)
        _ref_symmetric(x.reshape(-1), d, q, nhalf)
    else:
        d = np.empty((n_rows, nb), np.float32)
        q = np.empty((n_rows, n), np.uint8)
        _rows_qx(x, qw, True, nhalf, d, q)
    d = d.reshape(n_rows, nb)
    q = q.reshape(n_rows, nb, QK)
    parts = [_f16_bytes(d)]
    if nhalf == 16:
        parts.append(_fifth_bits(q))
    parts.append(_nibbles(q))
    return _assemble(parts, n_rows)


def quantize_q4_0(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """Q4_0: f16 d, 16 bytes of nibbles q in 0..15, value (q - 8)*d."""
    return _symmetric(x, imatrix, "Q4_0", 8, name)


def quantize_q5_0(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """Q5_0: f16 d, 4 bytes of fifth bits, 16 bytes of nibbles; value (q - 16)*d."""
    return _symmetric(x, imatrix, "Q5_0", 16, name)


def _affine(x, imatrix, type_name, qmax, name):
    x, qw = _check(x, imatrix, type_name, name)
    n_rows, n = x.shape
    nb = n // QK
    if qw is None:
        d = np.empty(n_rows * nb, np.float32)
        m = np.empty(n_rows * nb, np.float32)
        q = np.empty(n_rows * n, np.uint8)
        _ref_affine(x.reshape(-1), d, m, q, qmax, qmax == 15)
    else:
        d = np.empty((n_rows, nb), np.float32)
        m = np.empty((n_rows, nb), np.float32)
        q = np.empty((n_rows, n), np.uint8)
        _rows_qkx3(x, qw, qmax, d, m, q)
    d = d.reshape(n_rows, nb)
    q = q.reshape(n_rows, nb, QK)
    parts = [_f16_bytes(d), _f16_bytes(m.reshape(n_rows, nb))]
    if qmax == 31:
        parts.append(_fifth_bits(q))
    parts.append(_nibbles(q))
    return _assemble(parts, n_rows)


def quantize_q4_1(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """Q4_1: f16 d, f16 m, 16 bytes of nibbles; value q*d + m."""
    return _affine(x, imatrix, "Q4_1", 15, name)


def quantize_q5_1(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """Q5_1: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of nibbles; value q*d + m."""
    return _affine(x, imatrix, "Q5_1", 31, name)


def quantize_q6_0(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """Q6_0 (ik_llama.cpp): f16 d, 8 bytes of high bit pairs, 16 bytes of nibbles; value
    (q - 32)*d. Always the weighted search, with w = x*x when there is no imatrix."""
    x, qw = _check(x, imatrix, "Q6_0", name)
    n_rows, n = x.shape
    nb = n // QK
    d = np.empty((n_rows, nb), np.float32)
    q = np.empty((n_rows, n), np.uint8)
    _rows_qx(x, qw if qw is not None else np.empty(0, np.float32), qw is not None, 32, d, q)
    q = q.reshape(n_rows, nb, QK)
    return _assemble([_f16_bytes(d), _q6_high_bits(q), _nibbles(q)], n_rows)


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "Q8_0": quantize_q8_0,
    "Q4_0": quantize_q4_0,
    "Q4_1": quantize_q4_1,
    "Q5_0": quantize_q5_0,
    "Q5_1": quantize_q5_1,
    "Q6_0": quantize_q6_0,
}
