"""Quantization (float32 -> bytes) of IQ2_K, IQ3_K, IQ4_K, IQ5_K and IQ6_K, with optional
importance weights: ik_llama.cpp's non-linear 256-value "IQK" quants.

A block holds 256 values in 16 sub-blocks of 16, an f16 super-block scale `d`, a 16-bit
`extra` (bit s: sub-block s uses the second, shifted half of the value grid) and one small
integer scale per sub-block; the byte layouts are those `iqk_k.py` reads. The algorithms
are ports of ik_llama.cpp's `quantize_row_iq{2,3,5,6}_k_impl` and
`quantize_row_iq4_k_impl_bs16` (ggml/src/iqk/iqk_quantize.cpp), done in float32 in the C
code's order, with a fused multiply-add exactly where GCC 12 (-O3 -march=native, the build
the golden files come from) contracted one; the places were read off its code.

What every type does per 256-value block:

- The importance weights first pass ik's `QHelper`: a 16-value sub-block whose imatrix
  entries, values or imatrix*|x| all sum to at most 16e-18 gets every weight 1e-9. The
  weight of value x is then imatrix * sqrt(sigma2 + x^2), sigma2 being 1.5 (IQ2_K, IQ3_K)
  or 2 (IQ4_K..IQ6_K) times the block's mean x^2; without an imatrix it is
  sigma2/4 + x^2 (IQ4_K: x^2).
- IQ2_K: per sub-block an exhaustive search of the 816 ways to cut the sorted values into
  the 4 grid levels, forward and reversed, plain and shifted grid; the 16 sub-block scales
  are then quantized to 4 bits with ik's variant of `make_qx_quants` (weights: the
  sub-block weight sums), and d = 1.03 * the least-squares scale of the final quants.
- IQ3_K..IQ6_K: per sub-block trial scales (max/v0 and (v0 + k*step)/max for |k| <= 3, 7,
  5, 5), for each both signs and both grid halves, keeping the best weighted fit
  sumqx^2/sumq2; IQ3/5/6 refit the scale once to the chosen quants. The sub-block scales
  are then rounded to 4 bits + sign (IQ3_K, d = max/31), 6 bits (IQ4_K, IQ5_K,
  d = -max/32) or int8 (IQ6_K, d = -max/127), the values requantized with those scales,
  and d set to the least-squares scale (IQ3_K: times 1.01).
- Grid lookup: ik's `best_index_iq*nl` (a table over the integer part of x - v0, with a
  comparison where a midpoint falls in the cell): `quantize_common.nl_best_index`, whose
  tables are derived from the grids and equal ik's. IQ6_K searches the rounded
  `iq6nl_values` (+1 for the shifted half) although it dequantizes through the polynomial.
- The QHelper check, the grid lookups and make_qx_quants are shared with the IQ*_KS
  quantizers (`quantize_common`).

ik_llama.cpp oddities kept as they are: IQ3_K's 128-step refinement after the sub-block
search ends in a value nobody reads (its result is dropped), so it is left out; IQ4_K of an
all-zero block stores d = -0.0.

The compiled kernels release the GIL, so callers may quantize row ranges in threads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import UnsupportedTypeError
from .legacy_quantize import _check, _f16_bytes
from .quantize_common import (
    GRID2,
    _fma,
    _nearest_bits,
    abs_max,
    make_qx_quants_iqk,
    nl_best_index,
    nl_value,
    qhelper_weights,
    sum_squares,
)

QK_K = 256
BLOCK_BYTES = {"IQ2_K": 76, "IQ3_K": 110, "IQ4_K": 144, "IQ5_K": 176, "IQ6_K": 212}
_I8, _I16 = np.int64(8), np.int64(16)  # int64 helper arguments, not literals


# ---------------------------------------------------------------------------------------
# shared per-row steps
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _sub_weights(xb, qwb, use_qw, sigma2, quarter, w):
    """Weights of 16 values: qw*sqrt(sigma2 + x^2) (fused), else quarter*sigma2 + x^2
    (quarter 0: x^2 alone). quarter*sigma2 is exact, so fusing that sum changes nothing."""
    add = np.float32(quarter) * sigma2
    for j in range(16):
        if use_qw:
            w[j] = qwb[j] * np.sqrt(_fma(xb[j], xb[j], sigma2))
        elif quarter == 0:
            w[j] = xb[j] * xb[j]
        else:
            w[j] = add + xb[j] * xb[j]


@njit(cache=True, inline="always")
def _fit(kind, xb, w, off, idv):
    """Sums of the weighted fit with quants best_index(idv*x) and best_index(-idv*x):
    (sumqx_p, sumq2_p, sumqx_m, sumq2_m)."""
    sqx_p = np.float32(0.0)
    sq2_p = np.float32(0.0)
    sqx_m = np.float32(0.0)
    sq2_m = np.float32(0.0)
    for j in range(16):
        al = idv * xb[j]
        q = nl_value(kind, off + nl_best_index(kind, off, al))
        wq = w[j] * q
        sqx_p = _fma(wq, xb[j], sqx_p)
        sq2_p = _fma(wq, q, sq2_p)
        q = nl_value(kind, off + nl_best_index(kind, off, -al))
        wq = w[j] * q
        sqx_m = _fma(wq, xb[j], sqx_m)
        sq2_m = _fma(wq, q, sq2_m)
    return sqx_p, sq2_p, sqx_m, sq2_m


@njit(cache=True, error_model="numpy")
def _sub_block_scale(kind, xb, w, ntry, step):
    """The trial-scale search of IQ3_K..IQ6_K for one sub-block: (scale, shifted).

    kind 3 guards the first fit (sumq2 > 0), the others do not; kinds 3, 5, 6 refit the
    scale once to the quants of the winner.
    """
    amax, mx = abs_max(xb)
    if amax < np.float32(1e-16):
        return np.float32(0.0), False
    n = 1 << kind  # the size of a grid half
    v0 = nl_value(kind, 0)
    d = -mx / v0
    sqx_p, sq2_p, sqx_m, sq2_m = _fit(kind, xb, w, 0, np.float32(1.0) / d)
    best = np.float32(0.0)
    if kind != 3 or sq2_p > 0:
        d = sqx_p / sq2_p
        best = d * sqx_p
    if sq2_m > 0 and sqx_m * sqx_m > best * sq2_m:
        d = sqx_m / sq2_m
        best = d * sqx_m
    shifted = False
    for itry in range(-ntry, ntry + 1):
        for half in range(2):
            off = half * n
            idv = (np.float32(step * itry) + nl_value(kind, off)) / mx
            sqx_p, sq2_p, sqx_m, sq2_m = _fit(kind, xb, w, off, idv)
            if sq2_p > 0 and sqx_p * sqx_p > best * sq2_p:
                d = sqx_p / sq2_p
                best = d * sqx_p
                shifted = half == 1
            if sq2_m > 0 and sqx_m * sqx_m > best * sq2_m:
                d = sqx_m / sq2_m
                best = d * sqx_m
                shifted = half == 1
    if kind == 4 or d == 0:
        return d, shifted
    off = n if shifted else 0
    idv = np.float32(1.0) / d
    sqx = np.float32(0.0)
    sq2 = np.float32(0.0)
    for j in range(16):
        q = nl_value(kind, off + nl_best_index(kind, off, idv * xb[j]))
        wq = w[j] * q
        sqx = _fma(wq, xb[j], sqx)
        sq2 = _fma(wq, q, sq2)
    if sq2 > 0:
        d = sqx / sq2
    return d, shifted


@njit(cache=True, inline="always")
def _requantize(kind, xb, w, off, ls, dl, idx, sums):
    """Final pass over one sub-block: indices for x/dl, and the least-squares sums of
    q = value*ls added into sums[0] (sumqx) and sums[1] (sumq2)."""
    idl = np.float32(1.0) / dl if dl != 0 else np.float32(0.0)
    for j in range(16):
        k = nl_best_index(kind, off, idl * xb[j])
        idx[j] = k
        q = np.float32(nl_value(kind, off + k) * np.float32(ls))
        wq = w[j] * q
        sums[0] = _fma(wq, xb[j], sums[0])
        sums[1] = _fma(wq, q, sums[1])


@njit(cache=True, inline="always")
def _put_extra(y, shifted):
    """The 16 `extra` bits (shifted grid per sub-block) into bytes 2..3 of a block."""
    extra = 0
    for ib in range(16):
        if shifted[ib]:
            extra |= 1 << ib
    y[2] = extra & 0xFF
    y[3] = extra >> 8


# ---------------------------------------------------------------------------------------
# IQ2_K
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _cut_fit(X1, X2, X3, X4, W1, W2, W3, W4, a0, a1, a2, a3):
    """sumqx, sumq2 of one way to cut the sorted sub-block into 4 levels, as GCC fused
    the C expressions (the first product absorbs the second, the rest accumulate)."""
    sqx = _fma(X1, a0, X2 * a1)
    sqx = _fma(X3, a2, sqx)
    sqx = _fma(X4, a3, sqx)
    sq2 = _fma(W1 * a0, a0, (W2 * a1) * a1)
    sq2 = _fma(W3 * a2, a2, sq2)
    sq2 = _fma(W4 * a3, a3, sq2)
    return sqx, sq2


@njit(cache=True, error_model="numpy")
def _iq2k_sub_block(xb, w, grid, order, sumx, sumw):
    """IQ2_K's exhaustive search for one sub-block: (scale, shifted)."""
    # sort (x, index) ascending, as std::sort of pairs
    for j in range(16):
        order[j] = j
    for j in range(1, 16):
        k = order[j]
        i = j - 1
        while i >= 0 and (xb[order[i]] > xb[k] or (xb[order[i]] == xb[k] and order[i] > k)):
            order[i + 1] = order[i]
            i -= 1
        order[i + 1] = k
    sumx[0] = np.float32(0.0)
    sumw[0] = np.float32(0.0)
    for j in range(16):
        jj = order[j]
        sumw[j + 1] = sumw[j] + w[jj]
        sumx[j + 1] = _fma(w[jj], xb[jj], sumx[j])
    best = np.float32(0.0)
    d = np.float32(0.0)
    shifted = False
    p0, p1, p2, p3 = grid[0], grid[1], grid[2], grid[3]
    s0, s1, s2, s3 = grid[4], grid[5], grid[6], grid[7]
    for i1 in range(16):
        for i2 in range(i1, 16):
            for i3 in range(i2, 16):
                X1 = sumx[i1]
                X2 = sumx[i2] - sumx[i1]
                X3 = sumx[i3] - sumx[i2]
                X4 = sumx[16] - sumx[i3]
                W1 = sumw[i1]
                W2 = sumw[i2] - sumw[i1]
                W3 = sumw[i3] - sumw[i2]
                W4 = sumw[16] - sumw[i3]
                for c in range(4):
                    if c == 0:
                        sqx, sq2 = _cut_fit(X1, X2, X3, X4, W1, W2, W3, W4, p0, p1, p2, p3)
                    elif c == 1:
                        sqx, sq2 = _cut_fit(X1, X2, X3, X4, W1, W2, W3, W4, s0, s1, s2, s3)
                    elif c == 2:
                        sqx, sq2 = _cut_fit(X1, X2, X3, X4, W1, W2, W3, W4, p3, p2, p1, p0)
                    else:
                        sqx, sq2 = _cut_fit(X1, X2, X3, X4, W1, W2, W3, W4, s3, s2, s1, s0)
                    if sq2 > 0 and sqx * sqx > best * sq2:
                        d = sqx / sq2
                        best = d * sqx
                        shifted = c == 1 or c == 3
    return d, shifted


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_iq2k(x, qw, use_qw, out, dout):
    n_rows, n = x.shape
    grid = GRID2
    wrow = np.empty(n, np.float32)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    shifted = np.zeros(16, np.bool_)
    order = np.empty(16, np.int64)
    sumx = np.empty(17, np.float32)
    sumw = np.empty(17, np.float32)
    ls_all = np.empty(16, np.int64)
    idx = np.empty(16, np.int64)
    sums = np.empty(2, np.float32)
    for r in range(n_rows):
        if use_qw:
            qhelper_weights(x[r], qw, _I16, wrow)
        for ibl in range(n // QK_K):
            xbl = x[r, ibl * QK_K : (ibl + 1) * QK_K]
            y = out[r, ibl * 76 : (ibl + 1) * 76]
            y[:] = 0
            dout[r, ibl] = np.float32(0.0)
            sigma2 = np.float32(1.5) * sum_squares(xbl) / np.float32(QK_K)
            max_abs = np.float32(0.0)
            for ib in range(16):
                xb = xbl[16 * ib : 16 * ib + 16]
                _sub_weights(xb, wrow[ibl * QK_K + 16 * ib :], use_qw, sigma2, 0.25, w)
                s = np.float32(0.0)
                amax = np.float32(0.0)
                for j in range(16):
                    s += w[j]
                    a = abs(xb[j])
                    amax = a if amax < a else amax
                sw[ib] = s
                shifted[ib] = False
                if amax < np.float32(1e-16):
                    scales[ib] = np.float32(0.0)
                    continue
                scales[ib], shifted[ib] = _iq2k_sub_block(xb, w, grid, order, sumx, sumw)
                a = abs(scales[ib])
                max_abs = a if max_abs < a else max_abs  # std::max
            if max_abs == 0:
                continue
            d = make_qx_quants_iqk(_I8, scales, ls_all, sw)
            if d == 0:
                continue
            _put_extra(y, shifted)
            idv = np.float32(1.0) / d
            sums[0] = np.float32(0.0)
            sums[1] = np.float32(0.0)
            for ib in range(16):
                ls = max(-8, min(7, _nearest_bits(idv, scales[ib])))
                y[4 + ib // 2] |= (ls + 8) << (4 * (ib % 2))
                dl = d * np.float32(ls)
                if dl == 0:
                    continue
                xb = xbl[16 * ib : 16 * ib + 16]
                _sub_weights(xb, wrow[ibl * QK_K + 16 * ib :], use_qw, sigma2, 0.25, w)
                _requantize(2, xb, w, 4 if shifted[ib] else 0, ls, dl, idx, sums)
                ib32 = ib // 2
                base = 12 + 32 * (ib32 // 4) + 16 * (ib % 2)
                for j in range(16):
                    y[base + j] |= idx[j] << (2 * (ib32 % 4))
            dout[r, ibl] = np.float32(1.03) * (sums[0] / sums[1] if sums[1] > 0 else d)


# ---------------------------------------------------------------------------------------
# IQ3_K .. IQ6_K
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_nl(kind, x, qw, use_qw, ntry, step, out, dout):
    """IQ3_K (kind 3), IQ4_K (4), IQ5_K (5), IQ6_K (6): every row's blocks into out
    (the f16 d left out, its float32 value in dout)."""
    n_rows, npr = x.shape
    bs = 110 if kind == 3 else (144 if kind == 4 else (176 if kind == 5 else 212))
    quarter = 0.0 if kind == 4 else 0.25
    sigma_mul = np.float32(1.5) if kind == 3 else np.float32(2.0)
    wrow = np.empty(npr, np.float32)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    shifted = np.zeros(16, np.bool_)
    idx = np.empty(16, np.int64)
    sums = np.empty(2, np.float32)
    for r in range(n_rows):
        if use_qw:
            qhelper_weights(x[r], qw, _I16, wrow)
        for ibl in range(npr // QK_K):
            xbl = x[r, ibl * QK_K : (ibl + 1) * QK_K]
            y = out[r, ibl * bs : (ibl + 1) * bs]
            y[:] = 0
            dout[r, ibl] = np.float32(0.0)
            if kind == 4:
                sigma2 = sum_squares(xbl) * np.float32(2.0 / QK_K)
            else:
                sigma2 = sigma_mul * sum_squares(xbl) / np.float32(QK_K)
            max_abs = np.float32(0.0)
            max_scale = np.float32(0.0)
            for ib in range(16):
                xb = xbl[16 * ib : 16 * ib + 16]
                _sub_weights(xb, wrow[ibl * QK_K + 16 * ib :], use_qw, sigma2, quarter, w)
                scales[ib], shifted[ib] = _sub_block_scale(kind, xb, w, ntry, step)
                if kind == 3 and scales[ib] == 0:
                    shifted[ib] = False
                a = abs(scales[ib])
                if kind == 3:
                    max_abs = max_abs if max_abs > a else a  # C's MAX()
                elif a > max_abs:
                    max_abs = a
                    max_scale = scales[ib]
            if kind != 4 and max_abs == 0:
                continue
            _put_extra(y, shifted)
            if kind == 3:
                d = max_abs / np.float32(31.0)
            elif kind == 6:
                d = -max_scale / np.float32(127.0)
            else:
                d = -max_scale / np.float32(32.0)
            dout[r, ibl] = d
            idv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
            sums[0] = np.float32(0.0)
            sums[1] = np.float32(0.0)
            for ib in range(16):
                if kind == 3:
                    t = _fma(idv, abs(scales[ib]), np.float32(-1.0))
                    ls = max(0, min(15, _nearest_bits(t, np.float32(0.5))))
                    y[6 + ib // 2] |= ls << (4 * (ib % 2))
                    if scales[ib] < 0:
                        y[4 + ib // 8] |= 1 << (ib % 8)
                        ls = -(2 * ls + 1)
                    else:
                        ls = 2 * ls + 1
                elif kind == 6:
                    ls = max(-127, min(127, _nearest_bits(idv, scales[ib])))
                    y[4 + ib] = ls & 0xFF
                else:
                    ls = max(-32, min(31, _nearest_bits(idv, scales[ib])))
                    uls = ls + 32
                    y[8 + ib // 2] |= (uls & 0xF) << (4 * (ib % 2))
                    y[4 + ib // 4] |= (uls >> 4) << (2 * (ib % 4))
                dl = d * np.float32(ls)
                if dl == 0 and kind != 4:
                    continue
                xb = xbl[16 * ib : 16 * ib + 16]
                _sub_weights(xb, wrow[ibl * QK_K + 16 * ib :], use_qw, sigma2, quarter, w)
                off = (1 << kind) if shifted[ib] else 0
                _requantize(kind, xb, w, off, ls, dl, idx, sums)
                ib32 = ib // 2
                o16 = 16 * (ib % 2)
                if kind == 3:
                    qs = 14 + 32 * (ib32 // 4) + o16
                    qh = 78 + o16
                    for j in range(16):
                        y[qs + j] |= (idx[j] & 3) << (2 * (ib32 % 4))
                        y[qh + j] |= (idx[j] >> 2) << ib32
                elif kind == 4:
                    qs = 16 + 16 * ib32
                    for j in range(16):
                        y[qs + j] |= idx[j] << (4 * (ib % 2))
                elif kind == 5:
                    qs = 16 + 32 * (ib32 // 2) + o16
                    qh = 144 + o16
                    for j in range(16):
                        y[qs + j] |= (idx[j] & 0xF) << (4 * (ib32 % 2))
                        y[qh + j] |= (idx[j] >> 4) << ib32
                else:
                    qs = 20 + 32 * (ib32 // 2) + o16
                    qh = 148 + 32 * (ib32 // 4) + o16
                    for j in range(16):
                        y[qs + j] |= (idx[j] & 0xF) << (4 * (ib32 % 2))
                        y[qh + j] |= (idx[j] >> 4) << (2 * (ib32 % 4))
            if kind == 3:
                dout[r, ibl] = np.float32(1.01) * (sums[0] / sums[1] if sums[1] > 0 else d)
            elif sums[1] > 0:
                dout[r, ibl] = sums[0] / sums[1]


# ---------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------

# kind, ntry, trial step
_NL_PARAMS = {"IQ3_K": (3, 3, 2), "IQ4_K": (4, 7, 1), "IQ5_K": (5, 5, 1), "IQ6_K": (6, 5, 1)}


def _check_rows(x, imatrix, type_name: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    arr, qw = _check(x, imatrix, type_name, name)
    if arr.shape[1] % QK_K:
        raise UnsupportedTypeError(
            f"{name}: row size {arr.shape[1]} not divisible by block size {QK_K} for {type_name}; "
            "keep this tensor in a type with 32-value blocks (Q8_0, Q6_0, IQ4_NL) or in F16"
        )
    return arr, np.empty(0, np.float32) if qw is None else qw


def _finish(out: np.ndarray, dout: np.ndarray, block_bytes: int) -> np.ndarray:
    n_rows, nb = dout.shape
    blocks = out.reshape(n_rows, nb, block_bytes)
    blocks[:, :, 0:2] = _f16_bytes(dout)
    return out


def _quantize(type_name: str, x, imatrix, name: str) -> np.ndarray:
    x, qw = _check_rows(x, imatrix, type_name, name)
    n_rows, n = x.shape
    bb = BLOCK_BYTES[type_name]
    out = np.empty((n_rows, n // QK_K * bb), np.uint8)
    dout = np.empty((n_rows, n // QK_K), np.float32)
    if type_name == "IQ2_K":
        _rows_iq2k(x, qw, imatrix is not None, out, dout)
    else:
        kind, ntry, step = _NL_PARAMS[type_name]
        _rows_nl(kind, x, qw, imatrix is not None, ntry, step, out, dout)
    return _finish(out, dout, bb)


def quantize_iq2_k(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_K: 2-bit indices into iq2nl, 4-bit sub-block scales, 2.375 bits per weight."""
    return _quantize("IQ2_K", x, imatrix, name)


def quantize_iq3_k(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ3_K: 3-bit indices into iq3nl, odd 4-bit sub-block scales with a sign bit, 3.4375 bpw."""
    return _quantize("IQ3_K", x, imatrix, name)


def quantize_iq4_k(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ4_K: 4-bit indices into iq4k, 6-bit sub-block scales, 4.5 bpw."""
    return _quantize("IQ4_K", x, imatrix, name)


def quantize_iq5_k(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ5_K: 5-bit indices into iq5nl, 6-bit sub-block scales, 5.5 bpw."""
    return _quantize("IQ5_K", x, imatrix, name)


def quantize_iq6_k(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ6_K: 6-bit indices into the IQ6_K grid, int8 sub-block scales, 6.625 bpw."""
    return _quantize("IQ6_K", x, imatrix, name)


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "IQ2_K": quantize_iq2_k,
    "IQ3_K": quantize_iq3_k,
    "IQ4_K": quantize_iq4_k,
    "IQ5_K": quantize_iq5_k,
    "IQ6_K": quantize_iq6_k,
}
