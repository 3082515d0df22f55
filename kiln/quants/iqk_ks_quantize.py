"""Quantization (float32 -> bytes) of ik_llama.cpp's row-scaled IQK types IQ2_KS, IQ2_KL,
IQ3_KS, IQ4_KS, IQ4_KSS and IQ5_KS, with optional importance weights (an imatrix).

A row is one row scale d (f16 for IQ2_KS/IQ2_KL/IQ3_KS, f32 for the others), then blocks
of 256 values in which every 32 have an integer scale and a grid half (`iqk_ks.py` reads
them). The bytes are ik_llama.cpp's (iqk_quantize.cpp, as llama-quantize runs it, built by
GCC 12 with -O3 -march=native): all arithmetic is float32 in the C code's order, with a
fused multiply-add (`_fma`) exactly where GCC contracted `a*b + c` (read off its GIMPLE);
sums of squares GCC vectorized with in-order adds, so they stay unfused. The algorithms:

- Weights: imatrix_j * sqrt(sigma2 + x_j^2), sigma2 = 2 (IQ2_KS 1.5, IQ2_KL 2.25) times
  the mean x^2 of the 256 values; imatrix blocks of 32 that are ~0 become 1e-9. Without
  an imatrix x_j^2 (IQ2_KS sigma2/4 + x_j^2, IQ2_KL |x_j|).
- IQ3_KS, IQ4_KS, IQ5_KS: per 32 values the trial scales -max/v0 and (i + v0)/max,
  i = -ntry..ntry (5, 7, 5), both halves and signs, each x to its nearest grid value; the
  best least-squares scale wins. Then d = -max_scale/16 (5-bit scales) or max|scale|/127
  (7-bit scales l, stored as (l << 1) | half, value 2l - 127), the quants again with the
  integer scales, and d becomes the least-squares fit of the whole row.
- IQ2_KS: the AVX2 search llama-quantize runs (not --slow-iq2ks): trial scales max/22 and
  max/(v0 + i/2), i = -13..13, per half; the 5-bit scales from make_qx_quants over the
  row (weighted by the blocks' weight sums), each tried one step toward the block's own
  scale; d is the least-squares fit summed in AVX2 lane order.
- IQ2_KL: pairs of values take one of 32 points of the IQ3 grid's square
  (`iqk_tables.IQ2KL`), a pair off that set the best of its 8 nearest points. Trial
  scales as IQ3_KS on one half; 6-bit scales l-1, l, l+1 by squared error; d * 1.025.
- IQ4_KSS: IQ4_KS with every 4 quants (values 2k, 2k+16, 2k+1, 2k+17) holding an even
  number of set bits: the cheapest change of one quant by up to 2 makes it so. The
  16-bit word is stored as its prefix XOR shifted left, bit 0 a bit of the scale byte;
  the half is chosen by squared error once the scale is known; d * 1.01.

The imatrix check, the grid lookups and make_qx_quants are the IQ*_K quantizers' too
(`quantize_common`). The compiled kernels release the GIL, so callers may quantize row
ranges in threads.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES_BY_NAME
from . import iqk_tables as T
from .legacy_quantize import _check, _f16_bytes
from .quantize_common import (
    IQ3NL_INDEX,
    IQ4NL_INDEX,
    _fma,
    _nearest,
    abs_max,
    best_index_nl,
    make_qx_quants_iqk,
    nl_best_index,
    qhelper_weights,
    sum_squares,
)

QK_K = 256
BS = 32  # values per integer scale
_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
_FLT_MAX = np.float32(3.4028234663852886e38)
# int64 constants for helper arguments: a literal argument would compile the helper anew
_I0, _I1, _I2, _I8, _I16, _I32 = (np.int64(i) for i in (0, 1, 2, 8, 16, 32))


# ---------------------------------------------------------------------------------------
# derived tables (facts of the algorithm, computed here from the grids)
# ---------------------------------------------------------------------------------------


def _kl_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQ2_KL's search tables: for each pair (i1, i2) of IQ3 grid indices the IQ2_KL point
    (>= 0) or -(k+1) for the k-th pair off the set; for those, the 8 points nearest by
    squared distance (ties by index); and the points as float32 [32, 2]."""
    v = np.asarray(T.IQ3NL[:8], dtype=np.float32)
    pts = T.IQ2KL_PAIRS
    kidx = np.empty(64, dtype=np.int8)
    neigh = []
    for j in range(64):
        a, b = v[j // 8], v[j % 8]
        hit = np.nonzero((pts[:, 0] == a) & (pts[:, 1] == b))[0]
        if len(hit):
            kidx[j] = hit[0]
        else:
            neigh.append(np.argsort((pts[:, 0] - a) ** 2 + (pts[:, 1] - b) ** 2, kind="stable")[:8])
            kidx[j] = -len(neigh)
    return kidx, np.asarray(neigh, dtype=np.int8), np.ascontiguousarray(pts, dtype=np.float32)


_KL_INDEX, _KL_NEIGH, _KL_PTS = _kl_tables()
_IQ2NL = T.IQ2NL_F32
_IQ3NL = T.IQ3NL_F32
_IQ4K = T.IQ4K_F32
_IQ5NL = T.IQ5NL_F32
for _t in (_KL_INDEX, _KL_NEIGH, _KL_PTS):
    _t.setflags(write=False)


# ---------------------------------------------------------------------------------------
# shared steps
# ---------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _row_weights(xr, qw, use_qw, mode, w):
    """The weights of a row's values into w: imatrix * sqrt(sigma2 + x^2), or without an
    imatrix x^2 (mode 0), sigma2/4 + x^2 (mode 1: IQ2_KS), |x| (mode 2: IQ2_KL).

    sigma2 is 2 (mode 1: 1.5, mode 2: 2.25) times the mean of x^2 over each 256 values. The
    imatrix is QHelper's: 1e-9 for a block of 32 where it, x or their product is ~0.
    """
    if use_qw:
        qhelper_weights(xr, qw, _I32, w)
    for s in range(0, xr.size, QK_K):
        sigma2 = sum_squares(xr[s : s + QK_K])
        if mode == 1:
            sigma2 = (sigma2 * np.float32(1.5)) * np.float32(1.0 / QK_K)
        else:
            sigma2 *= np.float32((2.25 if mode == 2 else 2.0) / QK_K)
        quarter = sigma2 * np.float32(0.25)
        for j in range(s, s + QK_K):
            if use_qw:
                w[j] = w[j] * np.sqrt(_fma(xr[j], xr[j], sigma2))
            elif mode == 0:
                w[j] = xr[j] * xr[j]
            elif mode == 1:
                w[j] = _fma(xr[j], xr[j], quarter)
            else:
                w[j] = abs(xr[j])


@njit(cache=True, inline="always")
def _scale7(iscale, s):
    """The 7-bit scale l of IQ4_KS/IQ4_KSS/IQ5_KS, value 2l - 127: nearest to (s/d + 127)/2."""
    return max(0, min(127, _nearest(_fma(iscale, s, np.float32(127.0)), np.float32(0.5))))


@njit(cache=True, inline="always")
def _better(sumqx, sumq2, best):
    return sumq2 > 0 and sumqx * sumqx > best * sumq2


@njit(cache=True, inline="always")
def _take(sumqx, sumq2, d, best):
    """(scale, score, taken): the least-squares scale sumqx/sumq2 where it beats best."""
    if _better(sumqx, sumq2, best):
        d = sumqx / sumq2
        return d, d * sumqx, True
    return d, best, False


# ---------------------------------------------------------------------------------------
# IQ3_KS, IQ4_KS, IQ5_KS
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _pm_sums(xb, w, vals, o, bits, iscale):
    """Least-squares sums of x against its nearest grid values at iscale and at -iscale."""
    sqx_p = sq2_p = sqx_m = sq2_m = _F0
    for j in range(xb.size):
        al = iscale * xb[j]
        q = vals[o + nl_best_index(bits, o, al)]
        sqx_p = _fma(w[j] * q, xb[j], sqx_p)
        sq2_p = _fma(w[j] * q, q, sq2_p)
        q = vals[o + nl_best_index(bits, o, -al)]
        sqx_m = _fma(w[j] * q, xb[j], sqx_m)
        sq2_m = _fma(w[j] * q, q, sq2_m)
    return sqx_p, sq2_p, sqx_m, sq2_m


@njit(cache=True, error_model="numpy")
def _search_block(xb, w, vals, kind, ntry):
    """The scale of 32 values and whether the second grid half won (IQ3/4/5_KS)."""
    amax, mx = abs_max(xb)
    if amax < np.float32(1e-16):
        return _F0, False
    d = d0 = -mx / vals[0]
    best = _F0
    shifted = False
    for t in range(-1, 2 * (2 * ntry + 1)):  # -max/v0 first, then (i + v0)/max on each half
        o = (1 << kind) * (t % 2) if t >= 0 else 0
        iscale = _F1 / d0 if t < 0 else np.float32(t // 2 - ntry + np.int32(vals[o])) / mx
        sqx_p, sq2_p, sqx_m, sq2_m = _pm_sums(xb, w, vals, o, kind, iscale)
        if t < 0:
            if kind != 3 or sq2_p > 0:  # only IQ3_KS checks sumq2 here
                d = sqx_p / sq2_p
                best = d * sqx_p
        else:
            d, best, hit = _take(sqx_p, sq2_p, d, best)
            shifted = o > 0 if hit else shifted
        d, best, hit = _take(sqx_m, sq2_m, d, best)
        shifted = o > 0 if hit else shifted
    return d, shifted


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_ks(x, qw, use_qw, kind, vals, nv, ntry, meta, out, dsc):
    """IQ3_KS (kind 3), IQ4_KS (4), IQ5_KS (5): blocks into out, row scales into dsc."""
    n_rows, n = x.shape
    bb = (out.shape[1] - meta) * QK_K // n
    scales = np.empty(n // BS, np.float32)
    shifted = np.zeros(n // BS, np.bool_)
    wrow = np.empty(n, np.float32)
    qv = np.empty(BS, np.float32)
    wq = np.empty(BS, np.float32)
    for r in range(n_rows):
        xr = x[r]
        _row_weights(xr, qw, use_qw, _I0, wrow)
        amax_scale = max_scale = _F0
        for k in range(n // BS):
            d, shifted[k] = _search_block(
                xr[k * BS : (k + 1) * BS], wrow[k * BS : (k + 1) * BS], vals, kind, ntry
            )
            scales[k] = d
            if kind != 3:
                amax_scale = max(amax_scale, abs(d))
            elif abs(d) > amax_scale:
                amax_scale = abs(d)
                max_scale = d
        d = -max_scale / np.float32(16.0) if kind == 3 else amax_scale / np.float32(127.0)
        dsc[r] = d
        blocks = out[r, meta:]
        for k in range(n // BS):  # the grid half is stored even when d is 0
            if shifted[k]:
                blocks[(k // 8) * bb + (1 if kind == 3 else k % 8)] |= (1 << (k % 8)) if kind == 3 else 1
        if d == 0:
            continue
        iscale = _F1 / d
        sumqx = sumq2 = _F0
        for k in range(n // BS):
            ib = k % 8
            blk = blocks[(k // 8) * bb : (k // 8 + 1) * bb]
            o = nv if shifted[k] else 0
            if kind == 3:
                ls = max(-16, min(15, _nearest(iscale, scales[k])))
                blk[2 + ib % 4] |= ((ls + 16) & 0xF) << 4 * (ib // 4)
                blk[0] |= ((ls + 16) >> 4) << ib
            else:
                ls = _scale7(iscale, scales[k]) << 1
                blk[ib] |= ls
                ls -= 127
            dl = d * np.float32(ls)
            idl = _F1 / dl if dl != 0 else _F0
            xb = xr[k * BS : (k + 1) * BS]
            w = wrow[k * BS : (k + 1) * BS]
            for j in range(BS):
                i = nl_best_index(kind, o, idl * xb[j])
                qv[j] = np.float32(np.int32(vals[o + i]) * ls)
                wq[j] = w[j] * qv[j]
                if kind == 3:
                    blk[6 + 32 * (ib // 4) + j] |= (i & 3) << 2 * (ib % 4)
                    blk[70 + j] |= (i >> 2) << ib
                elif kind == 4:
                    blk[8 + 16 * ib + j % 16] |= i << (4 * (j // 16))
                else:
                    blk[8 + 32 * (ib // 2) + j] |= (i & 0xF) << 4 * (ib % 2)
                    blk[136 + j] |= (i >> 4) << ib
            if kind == 4:  # values j and j + 16 summed together, as ik_llama.cpp does
                for j in range(BS // 2):
                    sumqx += _fma(wq[j], xb[j], wq[j + 16] * xb[j + 16])
                    sumq2 += _fma(wq[j], qv[j], wq[j + 16] * qv[j + 16])
            else:
                for j in range(BS):
                    sumqx = _fma(wq[j], xb[j], sumqx)
                    sumq2 = _fma(qv[j], wq[j], sumq2)
        if sumq2 > 0:
            dsc[r] = sumqx / sumq2


# ---------------------------------------------------------------------------------------
# IQ4_KSS
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _popcount(v):
    c = 0
    while v:
        v &= v - 1
        c += 1
    return c


@njit(cache=True, error_model="numpy")
def _prune(v, vals, o, xv, wv, dl):
    """prune_iq4ks: make the 4 nibbles of v have an even number of set bits, at least cost."""
    if _popcount(v) % 2 == 0:
        return v
    best = _FLT_MAX
    jbest = -1
    bestq = 0
    for j in range(4):
        q = (v >> (4 * j)) & 0xF
        diff0 = _fma(_IQ4K[q], dl, -xv[j])  # the first half's value, whatever the half
        for qq in range(max(q - 2, 0), min(q + 2, 15) + 1):
            if qq == q or (_popcount(qq) - _popcount(q)) % 2 == 0:
                continue
            diff1 = _fma(dl, vals[o + qq], -xv[j])
            score = wv[j] * _fma(diff1, diff1, -(diff0 * diff0))
            if score < best:
                best = score
                jbest = j
                bestq = qq
    if jbest < 0:  # only with overflowing scores (ik_llama.cpp aborts): flip the lowest bit
        jbest = 0
        bestq = (v & 0xF) ^ 1
    return (v & ~(0xF << (4 * jbest))) | (bestq << (4 * jbest))


@njit(cache=True, error_model="numpy")
def _word(xb, w, k, o, iscale, dl, xv, wv):
    """The 4 values of IQ4_KSS word k (values 2k, 2k+16, 2k+1, 2k+17) into xv, wv, and
    their pruned nibbles on grid half o at iscale."""
    v = np.int64(0)
    for j in range(4):
        t = 2 * k + (j // 2) + 16 * (j % 2)
        xv[j] = xb[t]
        wv[j] = w[t]
        v |= best_index_nl(_IQ4K, o, _I16, IQ4NL_INDEX, iscale * xv[j]) << (4 * j)
    return _prune(v, _IQ4K, o, xv, wv, dl)


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_kss(x, qw, use_qw, meta, out, dsc):
    n_rows, n = x.shape
    vals = _IQ4K
    scales = np.empty(n // BS, np.float32)
    wrow = np.empty(n, np.float32)
    xv = np.empty(4, np.float32)
    wv = np.empty(4, np.float32)
    vs = np.empty((2, 8), np.int64)
    for r in range(n_rows):
        xr = x[r]
        _row_weights(xr, qw, use_qw, _I0, wrow)
        amax_scale = _F0
        for k0 in range(n // BS):
            xb = xr[k0 * BS : (k0 + 1) * BS]
            w = wrow[k0 * BS : (k0 + 1) * BS]
            amax, mx = abs_max(xb)
            d = _F0
            if amax >= np.float32(1e-16):
                best = _F0
                d = -mx / vals[0]
                for t in range(30):  # (i + v0)/max, i = -7..7, on each half
                    o = 16 * (t % 2)
                    iscale = np.float32(t // 2 - 7 + np.int32(vals[o])) / mx
                    sqx_p = sq2_p = sqx_m = sq2_m = _F0
                    for k in range(8):
                        vp = _word(xb, w, k, o, iscale, _F1 / iscale, xv, wv)
                        vm = _word(xb, w, k, o, -iscale, _F1 / iscale, xv, wv)
                        for j in range(4):
                            q = vals[o + ((vp >> (4 * j)) & 0xF)]
                            sqx_p = _fma(wv[j] * q, xv[j], sqx_p)
                            sq2_p = _fma(q, wv[j] * q, sq2_p)
                            q = vals[o + ((vm >> (4 * j)) & 0xF)]
                            sqx_m = _fma(wv[j] * q, xv[j], sqx_m)
                            sq2_m = _fma(q, wv[j] * q, sq2_m)
                    d, best, _ = _take(sqx_p, sq2_p, d, best)
                    d, best, _ = _take(sqx_m, sq2_m, d, best)
            scales[k0] = d
            amax_scale = max(amax_scale, abs(d))
        d = amax_scale / np.float32(127.0)
        dsc[r] = d
        if d == 0:
            continue
        iscale = _F1 / d
        sumqx = sumq2 = _F0
        for k0 in range(n // BS):
            xb = xr[k0 * BS : (k0 + 1) * BS]
            w = wrow[k0 * BS : (k0 + 1) * BS]
            ls = (_scale7(iscale, scales[k0]) << 1) - 127  # odd, so never 0
            dl = d * np.float32(ls)
            mse_p = mse_m = _F0
            for k in range(8):
                vs[0, k] = _word(xb, w, k, _I0, _F1 / dl, dl, xv, wv)
                vs[1, k] = _word(xb, w, k, _I16, _F1 / dl, dl, xv, wv)
                for j in range(4):
                    e = _fma(-dl, vals[(vs[0, k] >> (4 * j)) & 0xF], xv[j])
                    mse_p = _fma(e, wv[j] * e, mse_p)
                    e = _fma(-dl, vals[16 + ((vs[1, k] >> (4 * j)) & 0xF)], xv[j])
                    mse_m = _fma(e, wv[j] * e, mse_m)
            h = 1 if mse_m < mse_p else 0  # the grid half
            ul = (ls + 127) | h
            base = meta + (k0 // 8) * 128 + 16 * (k0 % 8)
            for k in range(8):
                v = vs[h, k]
                for j in range(4):
                    t = 2 * k + (j // 2) + 16 * (j % 2)
                    q = np.float32(np.int32(vals[16 * h + ((v >> (4 * j)) & 0xF)]) * ls)
                    sumqx = _fma(w[t] * q, xb[t], sumqx)
                    sumq2 = _fma(q, w[t] * q, sumq2)
                p = v & 0x7FFF  # prefix XOR: the word whose xor with itself >> 1 is v
                p ^= p << 1
                p ^= p << 2
                p ^= p << 4
                p ^= p << 8
                word = ((p & 0x7FFF) << 1) | ((ul >> k) & 1)
                out[r, base + 2 * k] = word & 0xFF
                out[r, base + 2 * k + 1] = word >> 8
        if sumq2 > 0:
            dsc[r] = sumqx / sumq2 * np.float32(1.01)


# ---------------------------------------------------------------------------------------
# IQ2_KS (ik_llama.cpp's AVX2 "fast" search, the one llama-quantize runs)
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _hsum8(a):
    """hsum_float_8: the two 128-bit halves added, then pairs, then the last two."""
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))


@njit(cache=True, inline="always")
def _nearest_q(x, d0, d1, d2, d3, v0, v1, v2, v3):
    """The v_j of the d_j nearest x (least (x - d_j)^2, the first on ties), in selects."""
    e, q = (x - d0) * (x - d0), v0
    t = (x - d1) * (x - d1)
    e, q = (t, v1) if t < e else (e, q)
    t = (x - d2) * (x - d2)
    e, q = (t, v2) if t < e else (e, q)
    t = (x - d3) * (x - d3)
    return v3 if t < e else q


@njit(cache=True, error_model="numpy")
def _iq2ks_fit(d, xb, w, o, qs, lanes):
    """compute_1block_iq2ks: (ok, best scale, score) at trial scale d, both signs."""
    v0, v1, v2, v3 = _IQ2NL[o], _IQ2NL[o + 1], _IQ2NL[o + 2], _IQ2NL[o + 3]
    d0, d1, d2, d3 = d * v0, d * v1, d * v2, d * v3
    for i in range(BS):
        qs[0, i] = _nearest_q(xb[i], d0, d1, d2, d3, v0, v1, v2, v3)
        qs[1, i] = _nearest_q(xb[i], -d0, -d1, -d2, -d3, v0, v1, v2, v3)
    for ln in range(8):  # the AVX2 lanes: lane ln sums values ln, ln + 8, ln + 16, ln + 24
        a0 = a1 = a2 = a3 = _F0
        for i in range(ln, BS, 8):
            a0 = _fma(w[i] * qs[0, i], xb[i], a0)
            a1 = _fma(w[i] * qs[0, i], qs[0, i], a1)
            a2 = _fma(w[i] * qs[1, i], xb[i], a2)
            a3 = _fma(w[i] * qs[1, i], qs[1, i], a3)
        lanes[0, ln], lanes[1, ln], lanes[2, ln], lanes[3, ln] = a0, a1, a2, a3
    sqx1, sq21, sqx2, sq22 = _hsum8(lanes[0]), _hsum8(lanes[1]), _hsum8(lanes[2]), _hsum8(lanes[3])
    ok = sq21 > 0
    bd = sqx1 / sq21 if ok else _F0
    score = sqx1 * bd
    if sq22 > 0 and (not ok or sqx2 * sqx2 > score * sq22):
        bd = sqx2 / sq22
        return True, bd, sqx2 * bd
    return ok, bd, score


@njit(cache=True, error_model="numpy")
def _iq2ks_rmse(d, xb, w, o, idx, lanes):
    """compute_1block_iq2ks_rmse: nearest indices at scale d into idx, weighted squared error."""
    d0, d1, d2, d3 = d * _IQ2NL[o], d * _IQ2NL[o + 1], d * _IQ2NL[o + 2], d * _IQ2NL[o + 3]
    lanes[0, :] = 0
    for i in range(BS):
        idx[i] = np.int32(_nearest_q(xb[i], d0, d1, d2, d3, _F0, _F1, np.float32(2), np.float32(3)))
        diff = _fma(-d, _IQ2NL[o + idx[i]], xb[i])
        lanes[0, i % 8] = _fma(w[i] * diff, diff, lanes[0, i % 8])
    return _hsum8(lanes[0])


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_iq2ks(x, qw, use_qw, meta, out, dsc):
    n_rows, n = x.shape
    nsc = n // BS
    scales = np.empty(nsc, np.float32)
    sw = np.empty(nsc, np.float32)
    Ls = np.empty(nsc, np.int32)
    wrow = np.empty(n, np.float32)
    lanes = np.empty((4, 8), np.float32)
    qs = np.empty((2, BS), np.float32)
    idx = np.empty((2, BS), np.int32)
    acc = np.empty((2, 8), np.float32)
    for r in range(n_rows):
        xr = x[r]
        blocks = out[r, meta:]
        _row_weights(xr, qw, use_qw, _I1, wrow)
        for k in range(nsc):
            xb = xr[k * BS : (k + 1) * BS]
            w = wrow[k * BS : (k + 1) * BS]
            amax, mx = abs_max(xb)
            sw[k] = _F0
            for j in range(BS):
                sw[k] += w[j]
            scales[k] = 0
            if amax < np.float32(1e-14):
                continue
            ok, d, best = _iq2ks_fit(mx / _IQ2NL[7], xb, w, _I0, qs, lanes)
            d = d if ok else mx / _IQ2NL[7]
            best = best if ok else _F0
            shifted = False
            for t in range(54):  # max/(v0 + i/2), i = -13..13, on each half
                o = 4 * (t // 27)
                ok, td, ts = _iq2ks_fit(
                    mx / _fma(np.float32(t % 27 - 13), np.float32(0.5), _IQ2NL[o]), xb, w, o, qs, lanes
                )
                if ok and ts > best:
                    best, d, shifted = ts, td, o > 0
            scales[k] = d
            blocks[(k // 8) * 70] |= (1 << (k % 8)) if shifted else 0
        d = make_qx_quants_iqk(_I16, scales, Ls, sw)
        if d == 0:
            continue
        acc[:] = 0
        for k in range(nsc):
            ib = k % 8
            blk = blocks[(k // 8) * 70 : (k // 8 + 1) * 70]
            o = 4 * ((blk[0] >> ib) & 1)
            xb = xr[k * BS : (k + 1) * BS]
            w = wrow[k * BS : (k + 1) * BS]
            dl = d * np.float32(Ls[k] - 16)
            rmse1 = _iq2ks_rmse(dl, xb, w, o, idx[0], lanes)
            step = 0
            if Ls[k] > 0 and dl > scales[k]:
                step = -1
            elif Ls[k] < 15 and dl < scales[k]:  # sic: 15, not 31, in ik_llama.cpp
                step = 1
            use = 0
            if step != 0 and _iq2ks_rmse(d * np.float32(Ls[k] - 16 + step), xb, w, o, idx[1], lanes) < rmse1:
                Ls[k] += step
                use = 1
            vd = np.float32(Ls[k] - 16)
            for i in range(BS):
                vq = vd * _IQ2NL[o + idx[use, i]]
                acc[0, i % 8] = _fma(w[i] * vq, xb[i], acc[0, i % 8])
                acc[1, i % 8] = _fma(w[i] * vq, vq, acc[1, i % 8])
                blk[6 + 32 * (ib // 4) + i] |= idx[use, i] << (2 * (ib % 4))
            blk[2 + ib // 2] |= (Ls[k] & 0xF) << (4 * (ib % 2))
            blk[1] |= (Ls[k] >> 4) << ib
        sumq2 = _hsum8(acc[1])
        dsc[r] = _hsum8(acc[0]) / sumq2 if sumq2 > 0 else d


# ---------------------------------------------------------------------------------------
# IQ2_KL
# ---------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _kl_index(iscale, x1, x2, w1, w2):
    """The IQ2_KL point for the pair (x1, x2) at inverse scale iscale."""
    sx1 = iscale * x1
    sx2 = iscale * x2
    l1 = best_index_nl(_IQ3NL, _I0, _I8, IQ3NL_INDEX, sx1)
    i = np.int64(_KL_INDEX[8 * l1 + best_index_nl(_IQ3NL, _I0, _I8, IQ3NL_INDEX, sx2)])
    if i >= 0:
        return i
    best = _FLT_MAX
    ibest = np.int64(_KL_NEIGH[-i - 1, 0])
    for c in _KL_NEIGH[-i - 1]:
        d1 = _KL_PTS[c, 0] - sx1
        d2 = _KL_PTS[c, 1] - sx2
        score = _fma(w1 * d1, d1, (w2 * d2) * d2)
        if score < best:
            best = score
            ibest = np.int64(c)
    return ibest


@njit(cache=True, inline="always")
def _pair_sums(q1, q2, x1, x2, w1, w2, sqx, sq2):
    """sumqx and sumq2 plus one pair, as GCC compiled `w1*q1*x1 + w2*q2*x2`."""
    return sqx + _fma(w1 * q1, x1, (w2 * q2) * x2), sq2 + _fma(w1 * q1, q1, (w2 * q2) * q2)


@njit(cache=True, error_model="numpy")
def _kl_sums(xb, w, iscale):
    """Least-squares sums of the pairs against their points at iscale and at -iscale."""
    sqx_p = sq2_p = sqx_m = sq2_m = _F0
    for j in range(0, BS, 2):
        x1, x2, w1, w2 = xb[j], xb[j + 1], w[j], w[j + 1]
        i = _kl_index(iscale, x1, x2, w1, w2)
        sqx_p, sq2_p = _pair_sums(_KL_PTS[i, 0], _KL_PTS[i, 1], x1, x2, w1, w2, sqx_p, sq2_p)
        i = _kl_index(-iscale, x1, x2, w1, w2)
        sqx_m, sq2_m = _pair_sums(_KL_PTS[i, 0], _KL_PTS[i, 1], x1, x2, w1, w2, sqx_m, sq2_m)
    return sqx_p, sq2_p, sqx_m, sq2_m


@njit(cache=True, nogil=True, error_model="numpy")
def _rows_iq2kl(x, qw, use_qw, meta, out, dsc):
    n_rows, n = x.shape
    v0 = _IQ3NL[0]
    scales = np.empty(n // BS, np.float32)
    wrow = np.empty(n, np.float32)
    for r in range(n_rows):
        xr = x[r]
        _row_weights(xr, qw, use_qw, _I2, wrow)
        max_scale = max_abs = _F0
        for k in range(n // BS):
            xb = xr[k * BS : (k + 1) * BS]
            w = wrow[k * BS : (k + 1) * BS]
            amax, mx = abs_max(xb)
            scales[k] = 0
            if amax < np.float32(1e-16):
                continue
            sqx_p, sq2_p, sqx_m, sq2_m = _kl_sums(xb, w, _F1 / (-mx / v0))
            d = sqx_p / sq2_p
            d, best, _ = _take(sqx_m, sq2_m, d, d * sqx_p)
            for itry in range(-5, 6):
                sqx_p, sq2_p, sqx_m, sq2_m = _kl_sums(xb, w, np.float32(itry + np.int32(v0)) / mx)
                d, best, _ = _take(sqx_p, sq2_p, d, best)
                d, best, _ = _take(sqx_m, sq2_m, d, best)
            scales[k] = d
            if abs(d) > max_abs:
                max_abs = abs(d)
                max_scale = d
        if max_abs == 0:
            continue
        d = -max_scale / np.float32(32.0)
        iscale = _F1 / d
        sumqx = sumq2 = _F0
        for k in range(n // BS):
            ib = k % 8
            blk = out[r, meta + (k // 8) * 86 : meta + (k // 8 + 1) * 86]
            xb = xr[k * BS : (k + 1) * BS]
            w = wrow[k * BS : (k + 1) * BS]
            ls = max(-32, min(31, _nearest(iscale, scales[k])))
            best_score = _FLT_MAX
            best_ls = ls
            for ils in range(max(-32, ls - 1), min(31, ls + 1) + 1):  # the scale by squared error
                dl = d * np.float32(ils)
                idl = _F1 / dl if dl != 0 else _F0
                score = _F0
                for j in range(0, BS, 2):
                    i = _kl_index(idl, xb[j], xb[j + 1], w[j], w[j + 1])
                    diff1 = _fma(_KL_PTS[i, 0], dl, -xb[j])
                    diff2 = _fma(_KL_PTS[i, 1], dl, -xb[j + 1])
                    score += _fma(w[j] * diff1, diff1, (w[j + 1] * diff2) * diff2)
                if score < best_score:
                    best_score = score
                    best_ls = ils
            ls = best_ls
            blk[2 + ib % 4] |= ((ls + 32) & 0xF) << (4 * (ib // 4))
            blk[ib // 4] |= ((ls + 32) >> 4) << (2 * (ib % 4))
            if ls == 0:
                continue
            idl = _F1 / (d * np.float32(ls))
            for j in range(0, BS, 2):
                i = _kl_index(idl, xb[j], xb[j + 1], w[j], w[j + 1])
                blk[6 + 16 * (ib // 2) + j // 2] |= (i & 0xF) << (4 * (ib % 2))
                blk[70 + j // 2] |= (i >> 4) << ib
                q1 = np.float32(ls * np.int32(_KL_PTS[i, 0]))
                q2 = np.float32(ls * np.int32(_KL_PTS[i, 1]))
                sumqx, sumq2 = _pair_sums(q1, q2, xb[j], xb[j + 1], w[j], w[j + 1], sumqx, sumq2)
        dsc[r] = np.float32(1.025) * (sumqx / sumq2 if sumq2 > 0 else d)


# ---------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------


def _quantize(type_name: str, x, imatrix, name: str, kernel, *args) -> np.ndarray:
    shape = np.shape(x)
    if len(shape) == 2 and shape[1] % QK_K:
        raise UnsupportedTypeError(
            f"{name}: row size {shape[1]} not divisible by block size {QK_K} for {type_name}; "
            "use a type with 32-value blocks (Q8_0, Q6_0, IQ4_NL, Q5_0, Q4_0) or F16 for this tensor"
        )
    x, qw = _check(x, imatrix, type_name, name)
    n_rows, n = x.shape
    g = GGML_TYPES_BY_NAME[type_name]
    meta = g.row_meta_size
    out = np.zeros((n_rows, g.row_bytes(n)), np.uint8)
    dsc = np.zeros(n_rows, np.float32)
    use_qw = qw is not None
    kernel(x, qw if use_qw else np.zeros(n, np.float32), use_qw, *args, meta, out, dsc)
    if meta == 2:
        out[:, :2] = _f16_bytes(dsc[:, None]).reshape(n_rows, 2)
    else:
        out[:, :4] = dsc.astype("<f4").view(np.uint8).reshape(n_rows, 4)
    return out


def quantize_iq2_ks(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_KS: f16 row scale; per 256 values extra (u16), scales[4], qs[64] (2-bit indices)."""
    return _quantize("IQ2_KS", x, imatrix, name, _rows_iq2ks)


def quantize_iq2_kl(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_KL: f16 row scale; per 256 values scales_h (u16), scales_l[4], qs[64], qh[16]."""
    return _quantize("IQ2_KL", x, imatrix, name, _rows_iq2kl)


def quantize_iq3_ks(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ3_KS: f16 row scale; per 256 values extra (u16), scales[4], qs[64], qh[32]."""
    return _quantize("IQ3_KS", x, imatrix, name, _rows_ks, 3, _IQ3NL, 8, 5)


def quantize_iq4_ks(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ4_KS: f32 row scale; per 256 values scales[8], qs[128]."""
    return _quantize("IQ4_KS", x, imatrix, name, _rows_ks, 4, _IQ4K, 16, 7)


def quantize_iq4_kss(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ4_KSS: f32 row scale; per 256 values 64 16-bit words (quants and scale bits)."""
    return _quantize("IQ4_KSS", x, imatrix, name, _rows_kss)


def quantize_iq5_ks(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ5_KS: f32 row scale; per 256 values scales[8], qs[128], qh[32]."""
    return _quantize("IQ5_KS", x, imatrix, name, _rows_ks, 5, _IQ5NL, 32, 5)


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "IQ2_KS": quantize_iq2_ks,
    "IQ2_KL": quantize_iq2_kl,
    "IQ3_KS": quantize_iq3_ks,
    "IQ4_KS": quantize_iq4_ks,
    "IQ4_KSS": quantize_iq4_kss,
    "IQ5_KS": quantize_iq5_ks,
}
