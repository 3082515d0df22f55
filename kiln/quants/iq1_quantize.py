"""Compiled kernels of the IQ1_S, IQ1_M, IQ1_S_R4 and IQ1_M_R4 quantizers (the public
functions and the format notes are in iq2_quantize.py).

The block search is ik_llama.cpp's (ggml-quants.c iq1s_process_1block,
iq1m_process_1block): with 3 levels per value (grid l-1 shifted by delta = +-1/8), sort the
values, and for every split of the sorted values into low/middle/high (i1 <= i2) get the
least-squares scale from prefix sums of w*x and w; keep the split and shift of largest
(sum w x q)^2 / sum w q q, then snap each group of 8 to the IQ1 grid (or its best listed
neighbour) and refit the scale if a group moved. IQ1_M blocks are 16 values whose two
groups each choose their shift (4 combinations). The float operations follow GCC's code
for ggml-quants.c (fused multiply-adds where it fused them, in-order sums).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .iq2_grid import (
    best_neighbour,
    fill,
    fmax,
    group_key,
    nearest_half,
    nearest_int,
    put16,
    row_weights,
    sort_order,
    sum_squares,
)
from .legacy_quantize import _fma

F32 = np.float32
QK_K = 256
XP = np.array([-0.875, 0.125, 1.125], F32)  # levels - 1 + 1/8
XM = np.array([-1.125, -0.125, 0.875], F32)  # levels - 1 - 1/8
_MASKS = np.array([0x00, 0x80, 0x08, 0x88], np.int64)  # IQ1_M qh shift bits per shift pair
IQ1_ZERO = 1029  # the IQ1 grid entry whose levels are all 1 (values 0)
_FLT_MIN = F32(1.1754943508222875e-38)


@njit(cache=True, error_model="numpy")
def _snap_groups(xb, weight, L, n_groups, scale, xx_first, xx_rest, tabs, index):
    """Grid entries of the groups of L (neighbour search where off the grid); returns
    whether all were on the grid."""
    grid_l, kmap, neighbours = tabs
    all_on = True
    for k in range(n_groups):
        xx = xx_first if k == 0 else xx_rest
        gi = kmap[group_key(L, 8 * k)]
        if gi < 0:
            all_on = False
            gi = best_neighbour(neighbours, -gi - 1, grid_l, xb, weight, 8 * k, scale, xx, L)
        index[k] = gi
    return all_on


@njit(cache=True, error_model="numpy")
def _assign_levels(idx, n, i1, i2, L):
    for j in range(n):
        L[idx[j]] = 0 if j < i1 else (1 if j < i2 else 2)


@njit(cache=True, error_model="numpy")
def process_block_s(xb, weight, L, idx, sumx, sumw, tabs, index):
    """iq1s_process_1block for 32 values: returns (scale, shift +-1); index gets 4 entries."""
    n = 32
    mx = abs(xb[0])
    for i in range(1, n):
        mx = fmax(mx, abs(xb[i]))
    if mx < F32(1e-12):
        fill(index, 0, 4, 0)
        return F32(0.0), 1
    sort_order(xb, n, idx)
    sumx[0] = 0
    sumw[0] = 0
    for j in range(n):
        i = idx[j]
        sumx[j + 1] = _fma(weight[i], xb[i], sumx[j])
        sumw[j + 1] = sumw[j] + weight[i]
    best = -_FLT_MIN
    scale = mx
    besti1 = -1
    besti2 = -1
    shift = 0
    for i1 in range(n + 1):
        a = sumx[i1] - sumx[0]
        aw = sumw[i1] - sumw[0]
        ap = a * F32(-0.875)
        am = a * F32(-1.125)
        aq_p = (aw * F32(-0.875)) * F32(-0.875)
        aq_m = (aw * F32(-1.125)) * F32(-1.125)
        for i2 in range(i1, n + 1):
            b = sumx[i2] - sumx[i1]
            c = sumx[n] - sumx[i2]
            bw = sumw[i2] - sumw[i1]
            cw = sumw[n] - sumw[i2]
            bp = b * F32(0.125)
            bq = (bw * F32(0.125)) * F32(0.125)
            sumq2 = (aq_p + bq) + (cw * F32(1.125)) * F32(1.125)
            if sumq2 > 0:
                sumqx = _fma(c, F32(1.125), ap + bp)
                if sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = sumqx * scale
                    besti1, besti2, shift = i1, i2, 1
            sumq2 = _fma(cw * F32(0.875), F32(0.875), bq + aq_m)
            if sumq2 > 0:
                sumqx = _fma(c, F32(0.875), am - bp)
                if sumqx * sumqx > best * sumq2:
                    scale = sumqx / sumq2
                    best = sumqx * scale
                    besti1, besti2, shift = i1, i2, -1
    if besti1 < 0:  # all weights zero: ggml asserts; kiln writes a zero block
        fill(index, 0, 4, IQ1_ZERO)
        return F32(0.0), 1
    _assign_levels(idx, n, besti1, besti2, L)
    if scale < 0:
        for j in range(n):
            L[j] = 2 - L[j]
        scale = -scale
        shift = -shift
    xx = XP if shift == 1 else XM
    if not _snap_groups(xb, weight, L, 4, scale, xx, xx, tabs, index):
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for k in range(4):
            for j in range(8):
                w = weight[8 * k + j]
                q = xx[tabs[0][index[k], j]]
                sumqx = _fma(w * q, xb[8 * k + j], sumqx)
                sumq2 = _fma(q, w * q, sumq2)
        if sumqx > 0 and sumq2 > 0:
            scale = sumqx / sumq2
    return scale, shift


@njit(cache=True, error_model="numpy")
def process_block_m(xb, weight, L, idx, sx, sw, sums, tabs, index):
    """iq1m_process_1block for 16 values: returns (scale, shift pair 0..3: bit 1 set = first
    group shifted down, bit 0 = second group); index gets 2 entries. sx, sw [2, 17] and
    sums [2, 4] are scratch (prefix sums of w*x and w per group in sorted order; the four
    sum w x q and sum w q q)."""
    n = 16
    sort_order(xb, n, idx)
    for g in range(2):
        sx[g, 0] = 0
        sw[g, 0] = 0
    for j in range(n):
        i = idx[j]
        g = 0 if i < 8 else 1
        p = weight[i] * xb[i]
        sx[g, j + 1] = sx[g, j] + p
        sw[g, j + 1] = sw[g, j] + weight[i]
        sx[1 - g, j + 1] = sx[1 - g, j]
        sw[1 - g, j + 1] = sw[1 - g, j]
    c0 = (XP[0], XP[0], XM[0], XM[0])  # level-0 value of group 1 and 2 per shift pair
    c1 = (XP[0], XM[0], XP[0], XM[0])
    e0 = (XP[2], XP[2], XM[2], XM[2])
    e1 = (XP[2], XM[2], XP[2], XM[2])
    sumqx = sums[0]
    sumq2 = sums[1]
    best = F32(0.0)
    scale = F32(0.0)
    besti1 = -1
    besti2 = -1
    best_k = -1
    for i1 in range(n + 1):
        for i2 in range(i1, n + 1):
            b1 = (sx[0, i2] - sx[0, i1]) * F32(0.125)
            b2 = (sx[1, i2] - sx[1, i1]) * F32(0.125)
            c1x = sx[0, n] - sx[0, i2]
            c2x = sx[1, n] - sx[1, i2]
            bq1 = ((sw[0, i2] - sw[0, i1]) * F32(0.125)) * F32(0.125)
            bq2 = ((sw[1, i2] - sw[1, i1]) * F32(0.125)) * F32(0.125)
            c1w = sw[0, n] - sw[0, i2]
            c2w = sw[1, n] - sw[1, i2]
            for k in range(4):
                t = sx[0, i1] * c0[k]
                t = t + b1 if k < 2 else t - b1
                t = _fma(c1x, e0[k], t)
                t = sx[1, i1] * c1[k] + t
                t = t + b2 if k % 2 == 0 else t - b2
                sumqx[k] = _fma(c2x, e1[k], t)
                s = (sw[0, i1] * c0[k]) * c0[k] + bq1
                s = _fma(c1w * e0[k], e0[k], s)
                s = s + (sw[1, i1] * c1[k]) * c1[k]
                s = s + bq2
                sumq2[k] = _fma(c2w * e1[k], e1[k], s)
            for k in range(4):
                if sumq2[k] > 0 and sumqx[k] * sumqx[k] > best * sumq2[k]:
                    scale = sumqx[k] / sumq2[k]
                    best = scale * sumqx[k]
                    besti1, besti2, best_k = i1, i2, k
    if besti1 < 0:  # no usable split (zero weights or values): ggml asserts; kiln writes zeros
        fill(index, 0, 2, IQ1_ZERO)
        return F32(0.0), 0
    _assign_levels(idx, n, besti1, besti2, L)
    if scale < 0:
        for j in range(n):
            L[j] = 2 - L[j]
        scale = -scale
        best_k = 3 - best_k
    xx0 = XP if best_k < 2 else XM
    xx1 = XP if best_k % 2 == 0 else XM
    if not _snap_groups(xb, weight, L, 2, scale, xx0, xx1, tabs, index):
        fill(sumqx, 0, 4, 0)
        fill(sumq2, 0, 4, 0)
        for j in range(n):
            w = weight[j]
            qp = XP[L[j]]
            qm = XM[L[j]]
            wx = xb[j] * w
            px, pq, mx_, mq = wx * qp, (w * qp) * qp, wx * qm, (w * qm) * qm
            sumqx[0] += px
            sumq2[0] += pq
            sumqx[3] += mx_
            sumq2[3] += mq
            a, b = (1, 2) if j < 8 else (2, 1)
            sumqx[a] += px
            sumq2[a] += pq
            sumqx[b] += mx_
            sumq2[b] += mq
        best = F32(0.0)
        for k in range(4):
            if sumqx[k] > 0 and sumq2[k] > 0 and sumqx[k] * sumqx[k] > best * sumq2[k]:
                scale = sumqx[k] / sumq2[k]
                best = scale * sumqx[k]
                best_k = k
    return scale, best_k


# ---------------------------------------------------------------------------------------
# IQ1_S and IQ1_M (super-blocks of 256)
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def iq1_s_rows(x, qw, grid_l, kmap, neighbours, d_out, out):
    """Fills d_out [n_rows, nbl] (d times 1.125) and out [n_rows, nbl*50] (qs, qh after d)."""
    tabs = (grid_l, kmap, neighbours)
    n_rows, n = x.shape
    nbl = n // QK_K
    weight = np.empty(32, F32)
    L = np.zeros(32, np.uint8)
    idx = np.empty(32, np.int64)
    sumx = np.empty(33, F32)
    sumw = np.empty(33, F32)
    index = np.empty(4, np.int64)
    scales = np.empty(8, F32)
    shifts = np.empty(8, np.int64)
    qh = np.empty(8, np.int64)
    for r in range(n_rows):
        wr = row_weights(qw, r)
        for ibl in range(nbl):
            xbl = x[r, QK_K * ibl : QK_K * (ibl + 1)]
            o = 50 * ibl
            d_out[r, ibl] = 0
            max_scale = F32(0.0)
            sigma2 = (sum_squares(xbl, 0, QK_K) * F32(2.0)) * F32(1.0 / QK_K)
            for ib in range(8):
                xb = xbl[32 * ib : 32 * ib + 32]
                for i in range(32):
                    weight[i] = wr[QK_K * ibl + 32 * ib + i] * np.sqrt(_fma(xb[i], xb[i], sigma2))
                scales[ib], shifts[ib] = process_block_s(xb, weight, L, idx, sumx, sumw, tabs, index)
                h = 0
                for k in range(4):
                    out[r, o + 2 + 4 * ib + k] = index[k] & 255
                    h |= (index[k] >> 8) << (3 * k)
                qh[ib] = h
                max_scale = fmax(max_scale, scales[ib])
            if max_scale != 0:
                d = max_scale / F32(15.0)
                d_out[r, ibl] = d * F32(1.125)
                idd = F32(1.0) / d
                for ib in range(8):
                    lv = max(0, min(7, nearest_half(idd, scales[ib])))
                    if shifts[ib] == -1:
                        lv |= 8
                    qh[ib] |= lv << 12
            for ib in range(8):
                put16(out[r], o + 34 + 2 * ib, qh[ib])


@njit(cache=True, error_model="numpy")
def _m_weights(xb, wr, off, use_qw, sigma2, weight):
    for i in range(16):
        if use_qw:
            weight[i] = wr[off + i] * np.sqrt(_fma(xb[i], xb[i], sigma2))
        else:
            weight[i] = xb[i] * xb[i]


@njit(cache=True, nogil=True, error_model="numpy")
def iq1_m_rows(x, qw, use_qw, grid_l, kmap, neighbours, d_out, out):
    """Fills d_out [n_rows, nbl] (the refit d times 1.085, 0 for an all-zero super-block)
    and out [n_rows, nbl*56] (qs, qh, scale words without the f16 nibbles)."""
    tabs = (grid_l, kmap, neighbours)
    n_rows, n = x.shape
    nbl = n // QK_K
    weight = np.empty(16, F32)
    L = np.zeros(16, np.uint8)
    idx = np.empty(16, np.int64)
    sx = np.empty((2, 17), F32)
    sw = np.empty((2, 17), F32)
    sums = np.empty((2, 4), F32)
    index = np.empty(2, np.int64)
    scales = np.empty(16, F32)
    shifts = np.zeros(16, np.int64)  # like ggml's, kept from earlier blocks where not set
    sigmas = np.empty(8, F32)
    sc = np.empty(4, np.int64)
    for r in range(n_rows):
        wr = row_weights(qw, r)
        for ibl in range(nbl):
            xbl = x[r, QK_K * ibl : QK_K * (ibl + 1)]
            o = 56 * ibl
            fill(out[r], o, o + 56, 0)
            d_out[r, ibl] = 0
            max_scale = F32(0.0)
            for ib in range(8):
                sigmas[ib] = (sum_squares(xbl, 32 * ib, 32) * F32(1.5)) * F32(1.0 / 32)
            for ib in range(16):
                xb = xbl[16 * ib : 16 * ib + 16]
                _m_weights(xb, wr, QK_K * ibl + 16 * ib, use_qw, sigmas[ib // 2], weight)
                mx = abs(xb[0])
                sumwx = F32(0.0)
                for i in range(1, 16):
                    ax = abs(xb[i])
                    mx = fmax(mx, ax)
                    sumwx = _fma(ax, weight[i], sumwx)
                scales[ib] = 0
                if mx < F32(1e-7):
                    continue
                if sumwx == 0:
                    for i in range(16):
                        weight[i] = xb[i] * xb[i]
                scales[ib], shifts[ib] = process_block_m(xb, weight, L, idx, sx, sw, sums, tabs, index)
                out[r, o + 2 * ib] = index[0] & 255
                out[r, o + 2 * ib + 1] = index[1] & 255
                out[r, o + 32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
                max_scale = fmax(max_scale, scales[ib])
            if max_scale == 0:
                continue
            d = max_scale / F32(15.0)
            idd = F32(1.0) / d
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            fill(sc, 0, 4, 0)
            for ib in range(16):
                lv = max(0, min(7, nearest_half(idd, scales[ib])))
                sc[ib // 4] |= lv << (3 * (ib % 4))
                out[r, o + 32 + ib] |= _MASKS[shifts[ib]]
                qh = np.int64(out[r, o + 32 + ib])
                xb = xbl[16 * ib : 16 * ib + 16]
                _m_weights(xb, wr, QK_K * ibl + 16 * ib, use_qw, sigmas[ib // 2], weight)
                fl = F32(2 * lv + 1)
                for k in range(2):
                    if k == 0:
                        xx = XP if shifts[ib] < 2 else XM
                    else:
                        xx = XP if shifts[ib] % 2 == 0 else XM
                    gi = np.int64(out[r, o + 2 * ib + k]) | ((qh << (8 - 4 * k)) & 0x700)
                    for j in range(8):
                        w = weight[8 * k + j]
                        q = fl * xx[grid_l[gi, j]]
                        sumqx = _fma(xb[8 * k + j], w * q, sumqx)
                        sumq2 = _fma(w * q, q, sumq2)
            if sumq2 > 0:
                d = sumqx / sumq2
            d_out[r, ibl] = d * F32(1.085)
            for j in range(4):
                put16(out[r], o + 48 + 2 * j, sc[j])


# ---------------------------------------------------------------------------------------
# IQ1_S_R4 and IQ1_M_R4 (groups of 4 rows, blocks of 32, one f16 scale per row)
# ---------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _r4_weights(xb, wr, off, use_qw, sigma2, weight, lo, hi, fused):
    for j in range(lo, hi):
        if use_qw:
            weight[j] = wr[off + j] * np.sqrt(_fma(xb[j], xb[j], sigma2))
        elif fused:
            weight[j] = np.sqrt(_fma(xb[j], xb[j], sigma2))
        else:
            weight[j] = np.sqrt(sigma2 + xb[j] * xb[j])


@njit(cache=True, error_model="numpy")
def _sum_wx(xb, weight, lo, hi):
    s = F32(0.0)
    for j in range(lo, hi):
        s = _fma(abs(xb[j]), weight[j], s)
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def iq1_s_r4_groups(x, qw, use_qw, grid_l, kmap, neighbours, d_out, out):
    """x [4*G, n]; fills d_out [G, 4] (1.0625*max/15 per row) and out [G, 8 + 24*n/32]."""
    tabs = (grid_l, kmap, neighbours)
    n = x.shape[1]
    nblock = n // 32
    weight = np.empty(32, F32)
    L = np.zeros(32, np.uint8)
    idx = np.empty(32, np.int64)
    sumx = np.empty(33, F32)
    sumw = np.empty(33, F32)
    index = np.empty(4, np.int64)
    scales = np.empty((nblock, 4), F32)
    for g in range(x.shape[0] // 4):
        mx = np.zeros(4, F32)
        for ibl in range(nblock):
            o = 8 + 24 * ibl
            for k in range(4):
                r = 4 * g + k
                wr = row_weights(qw, r)
                xb = x[r, 32 * ibl : 32 * ibl + 32]
                sumx2 = sum_squares(xb, 0, 32)
                scales[ibl, k] = 0
                if sumx2 < F32(1e-14):
                    fill(index, 0, 4, IQ1_ZERO)
                    shift = 1
                else:
                    sigma2 = (sumx2 * F32(1.5)) * F32(1.0 / 32)
                    have = use_qw
                    if have:
                        _r4_weights(xb, wr, 32 * ibl, True, sigma2, weight, 0, 32, True)
                        have = not _sum_wx(xb, weight, 0, 32) < F32(1e-14)
                    if not have:
                        _r4_weights(xb, wr, 32 * ibl, False, sigma2, weight, 0, 32, True)
                    scales[ibl, k], shift = process_block_s(xb, weight, L, idx, sumx, sumw, tabs, index)
                    mx[k] = max(mx[k], scales[ibl, k])
                h = 0
                for i in range(4):
                    out[g, o + 4 * i + k] = index[i] & 255
                    h |= (index[i] >> 8) << (3 * i)
                if shift < 0:
                    h |= 0x8000
                put16(out[g], o + 16 + 2 * k, h)
        for k in range(4):
            d_out[g, k] = (mx[k] * F32(1.0625)) / F32(15.0)
            invd = F32(15.0) / mx[k] if mx[k] != 0 else F32(0.0)
            for ibl in range(nblock):
                ls = max(0, min(7, nearest_half(scales[ibl, k], invd)))
                out[g, 8 + 24 * ibl + 17 + 2 * k] |= ls << 4


@njit(cache=True, nogil=True, error_model="numpy")
def iq1_m_r4_groups(x, qw, use_qw, grid_l, kmap, neighbours, d_out, out):
    """x [4*G, n]; fills d_out [G, 4] (1.0625*max/15 per row) and out [G, 8 + 28*n/32]."""
    tabs = (grid_l, kmap, neighbours)
    n = x.shape[1]
    nblock = n // 32
    weight = np.empty(32, F32)
    L = np.zeros(16, np.uint8)
    idx = np.empty(16, np.int64)
    sx = np.empty((2, 17), F32)
    sw = np.empty((2, 17), F32)
    sums = np.empty((2, 4), F32)
    index = np.empty(4, np.int64)
    scales = np.empty((nblock, 4, 2), F32)
    shift1 = 0  # like ggml's, kept from the last block where an all-zero half skips the search
    shift2 = 0
    for g in range(x.shape[0] // 4):
        mx = np.zeros(4, F32)
        for ibl in range(nblock):
            o = 8 + 28 * ibl
            for k in range(4):
                r = 4 * g + k
                wr = row_weights(qw, r)
                xb = x[r, 32 * ibl : 32 * ibl + 32]
                lo = sum_squares(xb, 0, 16)
                hi = sum_squares(xb, 16, 16)
                sumx2 = hi + lo
                scales[ibl, k, 0] = scales[ibl, k, 1] = 0
                if sumx2 < F32(1e-14):
                    for i in range(4):
                        out[g, o + 4 * i + k] = IQ1_ZERO & 255
                    for i in range(2):
                        out[g, o + 16 + 4 * i + k] = (IQ1_ZERO >> 8) | ((IQ1_ZERO >> 8) << 4)
                    continue
                sigma2 = (sumx2 * F32(1.5)) * F32(1.0 / 32)
                _r4_weights(xb, wr, 32 * ibl, use_qw, sigma2, weight, 0, 32, True)
                if use_qw:
                    if _sum_wx(xb, weight, 0, 16) < F32(1e-14):
                        _r4_weights(xb, wr, 32 * ibl, False, sigma2, weight, 0, 16, False)
                    if np.float64(_sum_wx(xb, weight, 16, 32)) < 1e-14:
                        _r4_weights(xb, wr, 32 * ibl, False, sigma2, weight, 16, 32, False)
                if lo > F32(1e-14):
                    scales[ibl, k, 0], shift1 = process_block_m(
                        xb[:16], weight[:16], L, idx, sx, sw, sums, tabs, index[:2]
                    )
                else:
                    index[0] = index[1] = IQ1_ZERO
                if hi > F32(1e-14):
                    scales[ibl, k, 1], shift2 = process_block_m(
                        xb[16:], weight[16:], L, idx, sx, sw, sums, tabs, index[2:]
                    )
                else:
                    index[2] = index[3] = IQ1_ZERO
                mx[k] = max(mx[k], max(scales[ibl, k, 0], scales[ibl, k, 1]))
                for i in range(4):
                    out[g, o + 4 * i + k] = index[i] & 255
                for i in range(2):
                    out[g, o + 16 + 4 * i + k] = (index[2 * i] >> 8) | ((index[2 * i + 1] >> 8) << 4)
                out[g, o + 16 + k] |= _MASKS[shift1]
                out[g, o + 20 + k] |= _MASKS[shift2]
        for k in range(4):
            d_out[g, k] = (mx[k] * F32(1.0625)) / F32(15.0)
            invd = F32(15.0) / mx[k] if mx[k] != 0 else F32(0.0)
            for ibl in range(nblock):
                ls1 = max(0, min(15, nearest_int(invd, scales[ibl, k, 0])))
                ls2 = max(0, min(15, nearest_int(invd, scales[ibl, k, 1])))
                out[g, 8 + 28 * ibl + 24 + k] = ls1 | (ls2 << 4)
