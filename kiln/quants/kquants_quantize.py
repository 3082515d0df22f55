"""Quantization (float32 -> bytes) of the k-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K and of
IQ4_NL, IQ4_XS, MXFP4 and Q8_KV, with optional importance weights (an imatrix).

The results are byte-identical to ik_llama.cpp's `ggml_quantize_chunk` (commit 8337e4cd3,
GCC -O3 -march=native with FMA on x86-64, no AVX-512) on the golden set and on random
inputs: every search is ported in the C code's type and order, with explicit fused
multiply-adds where GCC fused them (see `kquants_search`). MXFP4 is also byte-identical
to the `gguf` package's numpy quantizer.

What each type does (ggml-quants.c, iqk/iqk_quantize.cpp). Super-blocks hold 256 values;
"weights" are w_j = imatrix_j * sqrt(sigma2 + x_j^2), sigma2 = c * mean(x^2) over the
super-block (c = 0.75 for Q2_K, 2 otherwise), the imatrix repeating along rows.

- Q2_K (16 sub-blocks of 16, 2-bit quants, 4-bit scale and min per sub-block, f16 d and
  dmin): with imatrix, `make_qkx3_quants` per sub-block and `make_qp_quants` for the 16
  scales and the 16 minimums (weighted by the sub-blocks' weight sums); without, a
  `make_qkx2_quants` search with weights |x| and absolute error, scales and minimums
  rounded against their maximum. Without imatrix ggml first checks whether the data are
  ternary (TriNet); it does so over a whole chunk of rows, kiln over each row.
- Q3_K (16 sub-blocks of 16, 3-bit quants, 6-bit signed scales, f16 d): with imatrix
  `make_qx_quants` per sub-block and once more for the scales; without, `make_q3_quants`
  and scales rounded against the largest. The quants are then recomputed from the
  stored scales (x/d rounded).
- Q4_K, Q5_K (8 sub-blocks of 32, 4/5-bit quants, 6-bit scales and mins, f16 d, dmin):
  with imatrix `make_qkx3_quants` then `make_qp_quants`; without, `make_qkx2_quants`
  with weights rms(sub-block) + |x|. Quants recomputed as round((x + dmin*m)/(d*sc)).
- Q6_K (16 sub-blocks of 16, 6-bit quants, int8 scales, f16 d): `make_qx_quants` with
  the raw imatrix (no sigma2 term) or x*x as weights; scales rounded against the largest.
- IQ4_NL (blocks of 32, f16 d, 4-bit indices into a 16-value non-linear grid), IQ4_XS
  (super-blocks of 256: f16 d, 6-bit scales of 8 sub-blocks of 32): ggml's
  quantize_row_iq4_nl_impl with ntry 7; without imatrix the weights are x*x.
- MXFP4 (blocks of 32: an E8M0 exponent e = floor(log2(amax)) - 2 + 127, then the nearest
  E2M1 value of each x/2^(e-127), ties to the lower code). The imatrix is ignored.
- Q8_K (f32 d = amax/127, 256 int8 round-half-even(x*127/amax), f32 d*sum, int16 sums
  of 16): ik_llama.cpp's AVX2 quantize_row_q8_K, whose scale and quants are also those of
  its Q8_K32 (so Q8_K_R8 is a repack of it). The imatrix is ignored.
- Q8_KV (per row: f32 d = amax/127, int32 sum of the quants, int8 round-half-even(x/d)):
  ik_llama.cpp's AVX2 iqk_quantize_row_q8_KV; Q8_KV_R8 is a repack of it. The imatrix
  is ignored.

The compiled kernels run over whole rows and release the GIL, so callers may quantize row
ranges in threads. `QUANTIZERS[name](x, imatrix)` takes x as float32 [n_rows, n_per_row]
and the per-column weights float32 [n_per_row] or None, and returns uint8
[n_rows, row_bytes] in the block layouts that `kquants.py` dequantizes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES_BY_NAME
from .kquants_search import (
    GROUP_MAX_EPS,
    IQ4NL_INT,
    best_index_iq4nl,
    f16_bits,
    f16_value,
    iq4nl_block,
    make_q3_quants,
    make_qkx2_quants,
    make_qp_quants,
    round_nearest,
)
from .kquants_tables import IQ4NL_VALUES, MXFP4_VALUES
from .legacy_quantize import _check, _make_qx_quants
from .quantize_common import IQ4NL_INDEX, _fma, _nearest, make_qkx3_quants, sum_squares

QK_K = 256
_I = np.int64  # constants passed to a kernel through this are typed int64, not as literals,
# so that each kernel compiles once rather than once per constant


# ---------------------------------------------------------------------------------------
# byte helpers
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _put_f16(o, v):
    """Store v as f16 at o[0:2]; returns the stored value as float32."""
    h = f16_bits(v)
    o[0] = np.uint8(h & 0xFF)
    o[1] = np.uint8(h >> 8)
    return f16_value(h)


@njit(cache=True)
def _put_u32(o, b):
    """Store b little-endian at o[0:4]."""
    o[0] = np.uint8(b & 0xFF)
    o[1] = np.uint8((b >> 8) & 0xFF)
    o[2] = np.uint8((b >> 16) & 0xFF)
    o[3] = np.uint8((b >> 24) & 0xFF)


@njit(cache=True)
def _pack_2bit(L, qs):
    """Q2_K/Q3_K low bits: byte 32g + l holds values 128h + l + 32k (k = 0..3) of half h."""
    for h in range(2):
        for lo in range(32):
            j = 128 * h + lo
            qs[32 * h + lo] = (L[j] & 3) | ((L[j + 32] & 3) << 2) | ((L[j + 64] & 3) << 4) | ((L[j + 96] & 3) << 6)


@njit(cache=True)
def _pack_k4_scales(ls, lm, s):
    """8 six-bit scales and mins into Q4_K/Q5_K's 12 scale bytes."""
    for j in range(4):
        s[j] = ls[j]
        s[j + 4] = lm[j]
    for j in range(4, 8):
        s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4)
        s[j - 4] |= (ls[j] >> 4) << 6
        s[j] |= (lm[j] >> 4) << 6


@njit(cache=True)
def _imatrix_weights(xb, qw, sigma2, w):
    for j in range(xb.shape[0]):
        w[j] = qw[j] * np.sqrt(_fma(xb[j], xb[j], sigma2))


# ---------------------------------------------------------------------------------------
# Q2_K
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _trinet_row(x, out, nb):
    """ggml's TriNet shortcut: if x is (nearly) ternary {-max, 0, max}, store it as such."""
    n = x.shape[0]
    mx = np.float32(0.0)
    for j in range(n):
        mx = max(mx, abs(x[j]))
    half = np.float32(0.5) * mx
    mse0 = np.float32(0.0)
    mse = np.float32(0.0)
    for j in range(n):
        lv = -1 if x[j] < -half else (0 if x[j] < half else 1)
        mse0 = _fma(x[j], x[j], mse0)
        diff = _fma(-mx, np.float32(lv), x[j])
        mse = _fma(diff, diff, mse)
    if not mse < np.float32(0.1) * mse0:
        return False
    L = np.empty(QK_K, np.uint8)
    for i in range(nb):
        o = out[84 * i : 84 * (i + 1)]
        _put_f16(o[80:], mx)
        _put_f16(o[82:], mx)
        for j in range(16):
            o[j] = 1 | (1 << 4)
        for j in range(QK_K):
            v = x[QK_K * i + j]
            L[j] = 0 if v < -half else (1 if v < half else 2)
        _pack_2bit(L, o[16:80])
    return True


@njit(cache=True, nogil=True)
def _rows_q2_k(x, qw, use_qw, out):
    n_rows, n = x.shape
    nb = n // QK_K
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(16, np.uint8)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    Ls = np.empty(16, np.uint8)
    Lm = np.empty(16, np.uint8)
    for r in range(n_rows):
        if not use_qw and _trinet_row(x[r], out[r], nb):
            continue
        for i in range(nb):
            xb = x[r, QK_K * i : QK_K * (i + 1)]
            o = out[r, 84 * i : 84 * (i + 1)]
            if use_qw:
                sigma2 = np.float32(0.75) * sum_squares(xb) / np.float32(QK_K)
                for j in range(16):
                    xs = xb[16 * j : 16 * j + 16]
                    _imatrix_weights(xs, qw[QK_K * i + 16 * j : QK_K * i + 16 * j + 16], sigma2, w)
                    s = np.float32(0.0)
                    for k in range(16):
                        s += w[k]
                    sw[j] = s
                    sc, mn = make_qkx3_quants(_I(3), xs, w, L[16 * j : 16 * j + 16], Laux, True)
                    scales[j] = sc
                    mins[j] = -mn
                dm = make_qp_quants(_I(15), scales, Ls, sw)
                mm = make_qp_quants(_I(15), mins, Lm, sw)
                _put_f16(o[80:], dm)
                _put_f16(o[82:], mm)
                for j in range(16):
                    d = dm * np.float32(Ls[j])
                    m = mm * np.float32(Lm[j])
                    inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
                    for k in range(16):
                        L[16 * j + k] = max(0, min(3, _nearest(xb[16 * j + k] + m, inv)))
                    o[j] = Ls[j] | (Lm[j] << 4)
            else:
                max_scale = np.float32(0.0)
                max_min = np.float32(0.0)
                for j in range(16):
                    xs = xb[16 * j : 16 * j + 16]
                    for k in range(16):
                        w[k] = abs(xs[k])
                    sc, mn = make_qkx2_quants(_I(3), xs, w, L[16 * j : 16 * j + 16], Laux,
                                              np.float32(-0.5), np.float32(0.1), 15, True, True)
                    scales[j] = sc
                    mins[j] = mn
                    if sc > max_scale:
                        max_scale = sc
                    if mn > max_min:
                        max_min = mn
                if max_scale > 0:
                    iscale = np.float32(15.0) / max_scale
                    for j in range(16):
                        o[j] = np.uint8(_nearest(iscale, scales[j]) & 0xFF)
                    dd = _put_f16(o[80:], max_scale / np.float32(15.0))
                else:
                    for j in range(16):
                        o[j] = 0
                    dd = _put_f16(o[80:], np.float32(0.0))
                if max_min > 0:
                    iscale = np.float32(15.0) / max_min
                    for j in range(16):
                        o[j] |= np.uint8((_nearest(iscale, mins[j]) << 4) & 0xFF)
                    dmin = _put_f16(o[82:], max_min / np.float32(15.0))
                else:
                    dmin = _put_f16(o[82:], np.float32(0.0))
                for j in range(16):
                    d = dd * np.float32(o[j] & 0xF)
                    if d == 0:
                        continue
                    m = dmin * np.float32(o[j] >> 4)
                    for k in range(16):
                        L[16 * j + k] = max(0, min(3, round_nearest((xb[16 * j + k] + m) / d)))
            _pack_2bit(L, o[16:80])


# ---------------------------------------------------------------------------------------
# Q3_K
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rows_q3_k(x, qw, use_qw, out):
    n_rows, n = x.shape
    nb = n // QK_K
    L = np.empty(QK_K, np.uint8)
    L8 = np.empty(16, np.int8)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    Ls = np.empty(16, np.uint8)
    for r in range(n_rows):
        for i in range(nb):
            xb = x[r, QK_K * i : QK_K * (i + 1)]
            o = out[r, 110 * i : 110 * (i + 1)]
            if use_qw:
                sigma2 = np.float32(2.0) * sum_squares(xb) / np.float32(QK_K)
                for j in range(16):
                    xs = xb[16 * j : 16 * j + 16]
                    _imatrix_weights(xs, qw[QK_K * i + 16 * j : QK_K * i + 16 * j + 16], sigma2, w)
                    s = np.float32(0.0)
                    for k in range(16):
                        s += w[k]
                    sw[j] = s
                    scales[j] = _make_qx_quants(_I(4), xs, w, L[16 * j : 16 * j + 16])
                d_block = _make_qx_quants(_I(32), scales, sw, Ls)
            else:
                max_scale = np.float32(0.0)
                amax = np.float32(0.0)
                for j in range(16):
                    scales[j] = make_q3_quants(_I(4), xb[16 * j : 16 * j + 16], L8)
                    for k in range(16):
                        L[16 * j + k] = L8[k]
                    a = abs(scales[j])
                    if a > amax:
                        amax = a
                        max_scale = scales[j]
                if max_scale != 0:
                    iscale = np.float32(-32.0) / max_scale
                    for j in range(16):
                        Ls[j] = max(-32, min(31, np.int32(np.int8(_nearest(iscale, scales[j]) & 0xFF)))) + 32
                    d_block = np.float32(1.0) / iscale
                else:
                    for j in range(16):
                        Ls[j] = 0
                    d_block = np.float32(0.0)
            s = o[96:108]
            for k in range(12):
                s[k] = 0
            for j in range(16):
                lv = Ls[j]
                if j < 8:
                    s[j] = lv & 0xF
                else:
                    s[j - 8] |= (lv & 0xF) << 4
                s[j % 4 + 8] |= (lv >> 4) << (2 * (j // 4))
            dd = _put_f16(o[108:], d_block)
            for j in range(16):
                d = dd * np.float32(np.int32(Ls[j]) - 32)
                if d == 0:
                    continue
                for k in range(16):
                    L[16 * j + k] = max(-4, min(3, round_nearest(xb[16 * j + k] / d))) + 4
            hm = o[0:32]
            for k in range(32):
                hm[k] = 0
            for j in range(QK_K):
                if L[j] > 3:
                    hm[j % 32] |= np.uint8(1 << (j // 32))
                    L[j] -= 4
            _pack_2bit(L, o[32:96])


# ---------------------------------------------------------------------------------------
# Q4_K, Q5_K
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rows_q45_k(x, qw, use_qw, nmax, out):
    """Q4_K (nmax 15, 144-byte blocks) and Q5_K (nmax 31, 176-byte blocks)."""
    n_rows, n = x.shape
    nb = n // QK_K
    bsz = 144 if nmax == 15 else 176
    # the no-imatrix search: Q4_K tries 21 scales from -1, Q5_K 16 from -0.5
    rmin = np.float32(-1.0) if nmax == 15 else np.float32(-0.5)
    nstep = 20 if nmax == 15 else 15
    L = np.empty(QK_K, np.uint8)
    Laux = np.empty(32, np.uint8)
    w = np.empty(32, np.float32)
    scales = np.empty(8, np.float32)
    mins = np.empty(8, np.float32)
    sw = np.empty(8, np.float32)
    Ls = np.empty(8, np.uint8)
    Lm = np.empty(8, np.uint8)
    for r in range(n_rows):
        for i in range(nb):
            xb = x[r, QK_K * i : QK_K * (i + 1)]
            o = out[r, bsz * i : bsz * (i + 1)]
            if use_qw:
                sigma2 = np.float32(2.0) * sum_squares(xb) / np.float32(QK_K)
                for j in range(8):
                    xs = xb[32 * j : 32 * j + 32]
                    _imatrix_weights(xs, qw[QK_K * i + 32 * j : QK_K * i + 32 * j + 32], sigma2, w)
                    s = np.float32(0.0)
                    for k in range(32):
                        s += w[k]
                    sw[j] = s
                    sc, mn = make_qkx3_quants(nmax, xs, w, L[32 * j : 32 * j + 32], Laux, False)
                    scales[j] = sc
                    mins[j] = -mn
                d_block = make_qp_quants(_I(63), scales, Ls, sw)
                m_block = make_qp_quants(_I(63), mins, Lm, sw)
            else:
                max_scale = np.float32(0.0)
                max_min = np.float32(0.0)
                for j in range(8):
                    xs = xb[32 * j : 32 * j + 32]
                    av_x = np.sqrt(sum_squares(xs) / np.float32(32.0))
                    for k in range(32):
                        w[k] = av_x + abs(xs[k])
                    sc, mn = make_qkx2_quants(nmax, xs, w, L[32 * j : 32 * j + 32], Laux,
                                              rmin, np.float32(0.1), nstep, False, False)
                    scales[j] = sc
                    mins[j] = mn
                    if sc > max_scale:
                        max_scale = sc
                    if mn > max_min:
                        max_min = mn
                inv_scale = np.float32(63.0) / max_scale if max_scale > 0 else np.float32(0.0)
                inv_min = np.float32(63.0) / max_min if max_min > 0 else np.float32(0.0)
                for j in range(8):
                    Ls[j] = min(63, _nearest(inv_scale, scales[j]) & 0xFF)
                    Lm[j] = min(63, _nearest(inv_min, mins[j]) & 0xFF)
                d_block = max_scale / np.float32(63.0)
                m_block = max_min / np.float32(63.0)
            _pack_k4_scales(Ls, Lm, o[4:16])
            dd = _put_f16(o, d_block)
            dmin = _put_f16(o[2:], m_block)
            for j in range(8):
                d = dd * np.float32(Ls[j])
                if d == 0:
                    continue
                dm = dmin * np.float32(Lm[j])
                for k in range(32):
                    L[32 * j + k] = max(0, min(nmax, round_nearest((xb[32 * j + k] + dm) / d)))
            if nmax == 15:
                for g in range(4):
                    for k in range(32):
                        o[16 + 32 * g + k] = L[64 * g + k] | (L[64 * g + 32 + k] << 4)
            else:
                qh = o[16:48]
                for k in range(32):
                    qh[k] = 0
                for g in range(4):
                    for k in range(32):
                        l1 = L[64 * g + k]
                        l2 = L[64 * g + 32 + k]
                        if l1 > 15:
                            l1 -= 16
                            qh[k] |= np.uint8(1 << (2 * g))
                        if l2 > 15:
                            l2 -= 16
                            qh[k] |= np.uint8(2 << (2 * g))
                        o[48 + 32 * g + k] = l1 | (l2 << 4)


# ---------------------------------------------------------------------------------------
# Q6_K
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rows_q6_k(x, qw, use_qw, out):
    n_rows, n = x.shape
    nb = n // QK_K
    L = np.empty(QK_K, np.uint8)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    isc = np.empty(16, np.int32)
    for r in range(n_rows):
        for i in range(nb):
            xb = x[r, QK_K * i : QK_K * (i + 1)]
            o = out[r, 210 * i : 210 * (i + 1)]
            max_scale = np.float32(0.0)
            max_abs = np.float32(0.0)
            for j in range(16):
                xs = xb[16 * j : 16 * j + 16]
                if use_qw:
                    ws = qw[QK_K * i + 16 * j : QK_K * i + 16 * j + 16]
                else:
                    for k in range(16):
                        w[k] = xs[k] * xs[k]
                    ws = w
                sc = _make_qx_quants(_I(32), xs, ws, L[16 * j : 16 * j + 16])
                scales[j] = sc
                a = abs(sc)
                if a > max_abs:
                    max_abs = a
                    max_scale = sc
            if max_abs < GROUP_MAX_EPS:
                for k in range(210):
                    o[k] = 0
                continue
            iscale = np.float32(-128.0) / max_scale
            dd = _put_f16(o[208:], np.float32(1.0) / iscale)
            for j in range(16):
                isc[j] = np.int8(min(127, _nearest(iscale, scales[j])))
                o[192 + j] = np.uint8(isc[j] & 0xFF)
            for j in range(16):
                d = dd * np.float32(isc[j])
                if d == 0:
                    continue
                for k in range(16):
                    L[16 * j + k] = max(-32, min(31, round_nearest(xb[16 * j + k] / d))) + 32
            for h in range(2):
                for k in range(32):
                    j = 128 * h + k
                    q1, q2, q3, q4 = L[j], L[j + 32], L[j + 64], L[j + 96]
                    o[64 * h + k] = (q1 & 0xF) | ((q3 & 0xF) << 4)
                    o[64 * h + 32 + k] = (q2 & 0xF) | ((q4 & 0xF) << 4)
                    o[128 + 32 * h + k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)


# ---------------------------------------------------------------------------------------
# IQ4_NL, IQ4_XS
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rows_iq4(x, qw, use_qw, super_block, out, index, vals, ivals):
    """IQ4_NL (super_block 32: 18-byte blocks) and IQ4_XS (super_block 256: 136 bytes)."""
    n_rows, n = x.shape
    nsb = n // super_block
    nsub = super_block // 32
    bsz = 18 if super_block == 32 else 136
    qoff = 2 if super_block == 32 else 8
    L = np.empty(super_block, np.uint8)
    w = np.empty(32, np.float32)
    scales = np.empty(nsub, np.float32)
    for r in range(n_rows):
        for i in range(nsb):
            xs = x[r, super_block * i : super_block * (i + 1)]
            o = out[r, bsz * i : bsz * (i + 1)]
            sigma2 = sum_squares(xs) * np.float32(2.0 / super_block)
            max_scale = np.float32(0.0)
            amax_scale = np.float32(0.0)
            for ib in range(nsub):
                xb = xs[32 * ib : 32 * ib + 32]
                if use_qw:
                    _imatrix_weights(xb, qw[super_block * i + 32 * ib : super_block * i + 32 * ib + 32], sigma2, w)
                else:
                    for j in range(32):
                        w[j] = xb[j] * xb[j]
                d, ok = iq4nl_block(xb, w, L[32 * ib : 32 * ib + 32], _I(7), index, vals, ivals)
                scales[ib] = d
                if not ok:
                    continue
                if abs(d) > amax_scale:
                    amax_scale = abs(d)
                    max_scale = d
            if nsub > 1:
                d = -max_scale / np.float32(32.0)
                _put_f16(o, d)
                inv = np.float32(1.0) / d if d != 0 else np.float32(0.0)
                sh = 0
                for ib in range(nsub):
                    lv = max(-32, min(31, _nearest(inv, scales[ib])))
                    dl = d * np.float32(lv)
                    idl = np.float32(1.0) / dl if dl != 0 else np.float32(0.0)
                    for j in range(32):
                        L[32 * ib + j] = best_index_iq4nl(index, vals, idl * xs[32 * ib + j])
                    lv += 32
                    if ib % 2 == 0:
                        o[4 + ib // 2] = lv & 0xF
                    else:
                        o[4 + ib // 2] |= (lv & 0xF) << 4
                    sh |= (lv >> 4) << (2 * ib)
                o[2] = sh & 0xFF
                o[3] = (sh >> 8) & 0xFF
            else:
                _put_f16(o, scales[0])
                inv = np.float32(1.0) / scales[0] if scales[0] != 0 else np.float32(0.0)
                for j in range(32):
                    L[j] = best_index_iq4nl(index, vals, inv * xs[j])
            for g in range(nsub):
                for j in range(16):
                    o[qoff + 16 * g + j] = L[32 * g + j] | (L[32 * g + 16 + j] << 4)


# ---------------------------------------------------------------------------------------
# MXFP4, Q8_K, Q8_KV
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rows_mxfp4(x, out, vals):
    n_rows, n = x.shape
    for r in range(n_rows):
        for ib in range(n // 32):
            xb = x[r, 32 * ib : 32 * ib + 32]
            o = out[r, 17 * ib : 17 * ib + 17]
            for k in range(17):
                o[k] = 0
            amax = np.float32(0.0)
            for j in range(32):
                amax = max(amax, abs(xb[j]))
            if amax == 0:
                continue
            e = (np.int32(np.floor(np.log2(amax)) - np.float32(2.0) + np.float32(127.0))) & 0xFF
            if e >= 2:
                d = np.uint32((e - 1) << 23).view(np.float32)
            else:
                d = np.uint32(0x00400000 if e == 1 else 0x00200000).view(np.float32)
            o[0] = e
            for j in range(32):
                best = abs(xb[j] - d * vals[0])
                idx = 0
                for k in range(1, 16):
                    diff = abs(xb[j] - d * vals[k])
                    if diff < best:
                        best = diff
                        idx = k
                if j < 16:
                    o[1 + j] = idx
                else:
                    o[1 + j - 16] |= idx << 4


@njit(cache=True, nogil=True)
def _rows_q8_k(x, out):
    n_rows, n = x.shape
    for r in range(n_rows):
        for i in range(n // QK_K):
            xb = x[r, QK_K * i : QK_K * (i + 1)]
            o = out[r, 296 * i : 296 * (i + 1)]
            amax = np.float32(0.0)
            for j in range(QK_K):
                amax = max(amax, abs(xb[j]))
            d = amax / np.float32(127.0)
            inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
            if inv == np.inf:  # amax below 127/FLT_MAX: stored as zeros (ggml's x*inf is undefined)
                d = inv = np.float32(0.0)
            total = 0
            for g in range(16):
                bsum = 0
                for k in range(16):
                    q = max(-128, min(127, round_nearest(inv * xb[16 * g + k])))
                    o[8 + 16 * g + k] = np.uint8(q & 0xFF)
                    bsum += q
                total += bsum
                o[264 + 2 * g] = np.uint8(bsum & 0xFF)
                o[265 + 2 * g] = np.uint8((bsum >> 8) & 0xFF)
            _put_u32(o, np.float32(d).view(np.uint32))
            _put_u32(o[4:], np.float32(d * np.float32(total)).view(np.uint32))


@njit(cache=True, nogil=True)
def _rows_q8_kv(x, out):
    n_rows, n = x.shape
    for r in range(n_rows):
        xr = x[r]
        o = out[r]
        amax = np.float32(0.0)
        for j in range(n):
            amax = max(amax, abs(xr[j]))
        d = amax / np.float32(127.0)
        inv = np.float32(1.0) / d if d != 0 else np.float32(np.inf)
        if inv == np.inf:  # zero, or so tiny that ggml's 1/d overflows (x*inf is undefined there)
            for k in range(n + 8):
                o[k] = 0
            continue
        total = 0
        for j in range(n):
            q = max(-128, min(127, round_nearest(inv * xr[j])))
            o[8 + j] = np.uint8(q & 0xFF)
            total += q
        _put_u32(o, np.float32(d).view(np.uint32))
        _put_u32(o[4:], np.uint32(total & 0xFFFFFFFF))


# ---------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------


def _quantizer(type_name: str, kernel: Callable, doc: str) -> Callable[..., np.ndarray]:
    """The public quantizer of `type_name`: checks, allocates the rows, runs `kernel(x, qw,
    use_qw, out)` over all of them."""
    geometry = GGML_TYPES_BY_NAME[type_name]
    block = geometry.block_size

    def quantize(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
        arr = np.asarray(x)
        if arr.ndim == 2 and arr.shape[1] % block:
            raise UnsupportedTypeError(
                f"{name}: row size {arr.shape[1]} not divisible by block size {block} for {type_name}; "
                "keep this tensor in a type with smaller blocks or in F16"
            )
        arr, qw = _check(arr, imatrix, type_name, name)
        n_rows, n = arr.shape
        out = np.empty((n_rows, geometry.row_bytes(n)), np.uint8)
        kernel(arr, np.empty(0, np.float32) if qw is None else qw, qw is not None, out)
        return out

    quantize.__name__ = f"quantize_{type_name.lower()}"
    quantize.__doc__ = doc
    return quantize


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "Q2_K": _quantizer(
        "Q2_K", _rows_q2_k, "Q2_K: 16 four-bit scale/min pairs, 64 bytes of 2-bit quants, f16 d and dmin."
    ),
    "Q3_K": _quantizer(
        "Q3_K", _rows_q3_k, "Q3_K: 32 bytes of high bits, 64 of low 2 bits, 12 of 6-bit scales, f16 d."
    ),
    "Q4_K": _quantizer(
        "Q4_K",
        lambda x, qw, use, out: _rows_q45_k(x, qw, use, 15, out),
        "Q4_K: f16 d and dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles.",
    ),
    "Q5_K": _quantizer(
        "Q5_K",
        lambda x, qw, use, out: _rows_q45_k(x, qw, use, 31, out),
        "Q5_K: as Q4_K with 32 bytes of fifth bits before the nibbles.",
    ),
    "Q6_K": _quantizer(
        "Q6_K", _rows_q6_k, "Q6_K: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, f16 d."
    ),
    "Q8_K": _quantizer(
        "Q8_K",
        lambda x, qw, use, out: _rows_q8_k(x, out),
        "Q8_K: f32 d, f32 sum, 256 int8 quants, 16 int16 sums. The imatrix is ignored.",
    ),
    "IQ4_NL": _quantizer(
        "IQ4_NL",
        lambda x, qw, use, out: _rows_iq4(x, qw, use, 32, out, IQ4NL_INDEX, IQ4NL_VALUES, IQ4NL_INT),
        "IQ4_NL: f16 d and 16 bytes of grid indices per block of 32.",
    ),
    "IQ4_XS": _quantizer(
        "IQ4_XS",
        lambda x, qw, use, out: _rows_iq4(x, qw, use, 256, out, IQ4NL_INDEX, IQ4NL_VALUES, IQ4NL_INT),
        "IQ4_XS: f16 d, 2+4 bytes of 6-bit scales, 128 bytes of grid indices.",
    ),
    "MXFP4": _quantizer(
        "MXFP4",
        lambda x, qw, use, out: _rows_mxfp4(x, out, MXFP4_VALUES),
        "MXFP4: an E8M0 exponent and 16 bytes of E2M1 codes per block of 32. The imatrix is ignored.",
    ),
    "Q8_KV": _quantizer(
        "Q8_KV",
        lambda x, qw, use, out: _rows_q8_kv(x, out),
        "Q8_KV: per row f32 d and int32 quant sum, then int8 quants. The imatrix is ignored.",
    ),
}
