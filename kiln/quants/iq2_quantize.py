"""Quantization (float32 -> bytes) of the lattice i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S,
IQ1_M, of ik_llama.cpp's IQ1_S_R4 and IQ1_M_R4 (quantized directly, one scale per row),
and of IQ2_XXS_R4 / IQ2_XS_R4 (quantized as the plain type, then repacked), with optional
importance weights.

The algorithms are ik_llama.cpp's (ggml-quants.c quantize_row_iq2_xxs_impl,
quantize_row_iq2_xs_impl, quantize_row_iq2_s_impl, quantize_row_iq1_s_impl with
iq1s_process_1block, quantize_row_iq1_m_impl with iq1m_process_1block; iqk_quantize.cpp
quantize_iq1_s_r4, quantize_iq1_m_r4 and, for the _R4 repacks, its per-block weight
guard), ported in float32 in the C code's order, with a fused multiply-add wherever
GCC 12 (-O3 -march=native, znver3) fused one, so that the bytes equal ik_llama.cpp's.

What they do, in short (groups of 8 values are coded by grid entries, iq2_grid.py):

- IQ2_XXS (32-value blocks, 4-bit block scales, signs with an even count of minus signs):
  make_qp_quants gives a first scale; 13 trial scales around it, each snapping the groups
  to the grid (or the best listed neighbour); one refit at the best scale.
- IQ2_XS (16-value blocks, 4-bit scales, even signs): the best 3-level split of the sorted
  |values| gives a first scale; 15 trial scales; up to 3 refit rounds; the super-block
  scale is then refit as 1.05 * sum(w q x) / sum(w q q).
- IQ2_S (16-value blocks, free signs, 1024-entry grid): 19 trial scales around max/5, one
  refit of the groups that were off the grid; super-block scale 0.9875 * max/31.
- IQ1_S / IQ1_S_R4 (32-value blocks, levels -1, 0, 1 shifted by +-1/8): the exact best
  split of the sorted values into 3 levels for both shifts, snapped to the grid; 3-bit
  block scales against max/15 (times 1.125 for IQ1_S, 1.0625 per row for IQ1_S_R4).
- IQ1_M / IQ1_M_R4 (16-value blocks, one shift per group of 8): the same split search
  over the 4 shift pairs; IQ1_M refits the super-block scale (times 1.085) and stores it
  as an f16 spread over the top nibbles of its 4 scale words; IQ1_M_R4 keeps 4-bit
  sub-scales against a per-row max/15 * 1.0625.

Weights per value: imatrix * sqrt(sigma2 + x^2), sigma2 a multiple of the mean x^2 over
the super-block (IQ2_XXS, IQ2_XS: 1x; IQ2_S, IQ1_S: 2x; IQ1_M and the R4 types: 1.5x over
each 32 values). Without an imatrix: IQ2_S uses sigma2/4 + x^2 (so do the _R4 repacks of
IQ2_XXS/IQ2_XS), IQ1_M x^2, IQ1_S_R4/IQ1_M_R4 sqrt(sigma2 + x^2); IQ2_XXS, IQ2_XS and
IQ1_S refuse (ggml asserts). Where ggml aborts on degenerate data (a block whose weights
are all zero), kiln writes that block as zero instead.

This module holds the IQ2 kernels and every public function; the IQ1 kernels are in
iq1_quantize.py, the grid maps and searches in iq2_grid.py. `QUANTIZERS[name](x, imatrix)`
takes float32 [n_rows, n_per_row] and float32 [n_per_row] or None and returns uint8
[n_rows, row_bytes] in the layouts that iquants.py / interleaved_iquants.py read.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import QuantizeError, UnsupportedTypeError
from . import interleaved
from .iq1_quantize import iq1_m_r4_groups, iq1_m_rows, iq1_s_r4_groups, iq1_s_rows
from .iq2_grid import (
    copy,
    fill,
    fmax,
    grid_tables,
    group_key,
    lookup,
    nearest_half,
    nearest_int,
    put16,
    row_weights,
    sort_order,
    sum_squares,
)
from .iquants_tables import IQ2XS_GRID, KSIGNS
from .legacy_quantize import _check as _check_32
from .legacy_quantize import _fma

F32 = np.float32
QK_K = 256
_IQ2XS_GRID = np.ascontiguousarray(IQ2XS_GRID)
_KSIGNS = np.ascontiguousarray(KSIGNS)


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _make_qp_quants(n, nmax, x, L, w):
    """ggml's make_qp_quants: scale for levels 0..nmax of x >= 0, levels in L.

    Not kquants_search.make_qp_quants: inlined into quantize_row_iq2_xxs_impl, GCC
    vectorized the trial-scale error sums (products rounded, then added in order) where
    its out-of-line copies used by the k-quants fuse them."""
    mx = F32(0.0)
    for i in range(n):
        mx = fmax(mx, x[i])
    if mx < F32(1e-16):
        fill(L, 0, n, 0)
        return F32(0.0)
    iscale = F32(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale, x[i])
    scale = F32(1.0) / iscale
    best_mse = F32(0.0)
    for i in range(n):
        diff = _fma(-scale, F32(L[i]), x[i])
        best_mse = _fma(diff, diff * w[i], best_mse)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = _fma(F32(step), F32(0.1), F32(nmax)) / mx
        scale_is = F32(1.0) / iscale_is
        mse = F32(0.0)
        for i in range(n):
            lv = min(nmax, nearest_int(iscale_is, x[i]))
            diff = _fma(-scale_is, F32(lv), x[i])
            mse += diff * (diff * w[i])
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        lv = min(nmax, nearest_int(iscale, x[i]))
        L[i] = lv
        fl = F32(lv)
        sumlx = _fma(x[i] * w[i], fl, sumlx)
        suml2 = _fma(fl, w[i] * fl, suml2)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            wi = w[i]
            fl = F32(L[i])
            slx = _fma(-(wi * x[i]), fl, sumlx)
            if slx > 0:
                sl2 = _fma(-fl, wi * fl, suml2)
                if sl2 > 0:
                    new_l = min(nmax, nearest_int((x[i] * sl2) / slx, F32(1.0)))
                    if new_l != L[i]:
                        fn = F32(new_l)
                        slx = _fma(wi * x[i], fn, slx)
                        sl2 = _fma(fn, wi * fn, sl2)
                        if (slx * slx) * suml2 > sl2 * (sumlx * sumlx):
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2


@njit(cache=True, error_model="numpy")
def _even_signs(xb, weight, base, xval):
    """|x| of a group of 8 into xval; when the count of negatives is odd, the value of least
    w*x*x keeps its sign (so the 8 signs have even parity). Returns the 7 stored sign bits."""
    nflip = 0
    s = 0
    for i in range(8):
        v = xb[base + i]
        if v >= 0:
            xval[base + i] = v
        else:
            xval[base + i] = -v
            nflip += 1
            s |= 1 << i
    if nflip % 2:
        imin = 0
        mn = (weight[base] * xb[base]) * xb[base]
        for i in range(1, 8):
            ax = (weight[base + i] * xb[base + i]) * xb[base + i]
            if ax < mn:
                mn = ax
                imin = i
        xval[base + imin] = -xval[base + imin]
        s ^= 1 << imin
    return s & 127


@njit(cache=True, inline="always", error_model="numpy")
def _snap(idd, xval, base, Laux):
    """Levels 0..2 of a group of 8 at inverse scale idd (on the odd grid 1, 3, 5)."""
    for i in range(8):
        Laux[base + i] = max(0, min(2, nearest_half(idd, xval[base + i])))


@njit(cache=True, error_model="numpy")
def _odd_sums(xval, weight, L, n):
    """sum w*x*q and sum w*q*q with q = 2L+1, fused as compiled."""
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for i in range(n):
        w = weight[i]
        q = F32(2 * np.int32(L[i]) + 1)
        sumqx = _fma(xval[i] * w, q, sumqx)
        sumq2 = _fma(w * q, q, sumq2)
    return sumqx, sumq2


@njit(cache=True, error_model="numpy")
def _scratch(n):
    """Work arrays of a block of n values: weight, waux, xval (float32), L, Laux (levels),
    then per group of 8 the grid index and on-grid flag, and the same for a trial."""
    g = n // 8
    return (np.empty(n, F32), np.empty(n, F32), np.empty(n, F32), np.zeros(n, np.uint8), np.zeros(n, np.uint8),
            np.zeros(g, np.int64), np.zeros(g, np.bool_), np.zeros(g, np.int64), np.zeros(g, np.bool_))


@njit(cache=True, error_model="numpy")
def _max_of(v, n):
    mx = v[0]
    for i in range(1, n):
        mx = fmax(mx, v[i])
    return mx


@njit(cache=True, error_model="numpy")
def _snap_all(idd, scale, xval, waux, Laux, n, tabs, index, on_grid):
    """Levels of each group of 8 at inverse scale idd, then the grid entry (or the best
    neighbour at this scale): entries in index, whether each was on the grid in on_grid."""
    grid_l, kmap, neighbours = tabs
    for k in range(n // 8):
        _snap(idd, xval, 8 * k, Laux)
        on_grid[k] = kmap[group_key(Laux, 8 * k)] >= 0
        index[k] = lookup(kmap, neighbours, grid_l, Laux, 8 * k, xval, waux, scale)


@njit(cache=True, error_model="numpy")
def _trial_scales(steps, base, scale, blk, n, tabs):
    """Inverse scales (5 + step/10)/base for step in -steps..steps; keeps in L, index and
    on_grid (of blk) the snapped levels of largest (sum w x q)^2 / sum w q q and returns
    (scale, best) (scale unchanged if none is usable)."""
    weight, waux, xval, L, Laux, index, on_grid, aux_index, aux_on = blk
    best = F32(0.0)
    for step in range(-steps, steps + 1):
        idd = _fma(F32(step), F32(0.1), F32(5.0)) / base
        _snap_all(idd, F32(1.0) / idd, xval, waux, Laux, n, tabs, aux_index, aux_on)
        sumqx, sumq2 = _odd_sums(xval, weight, Laux, n)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            copy(L, Laux)
            copy(index, aux_index)
            copy(on_grid, aux_on)
    return scale, best


# ---------------------------------------------------------------------------------------
# IQ2_XXS
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _iq2_xxs_rows(x, qw, use_qw, grid_l, kmap, neighbours, d_out, out):
    """Fills d_out [n_rows, nbl] (f32 d) and out [n_rows, nbl*66] (qs words after d)."""
    n_rows, n = x.shape
    nbl = n // QK_K
    blk = _scratch(32)
    weight, waux, xval, L, Laux, index, on_grid, _, _ = blk
    scales = np.empty(8, F32)
    q2 = np.empty(16, np.int64)
    signs = np.empty(4, np.int64)
    tabs = (grid_l, kmap, neighbours)
    for r in range(n_rows):
        wr = row_weights(qw, r)
        for ibl in range(nbl):
            xbl = x[r, QK_K * ibl : QK_K * (ibl + 1)]
            fill(q2, 0, 16, 0)
            d_out[r, ibl] = 0
            max_scale = F32(0.0)
            sigma2 = sum_squares(xbl, 0, QK_K) * F32(1.0 / QK_K)
            s4 = F32(0.25) * sigma2
            for ib in range(8):
                xb = xbl[32 * ib : 32 * ib + 32]
                for i in range(32):
                    if use_qw:
                        weight[i] = wr[QK_K * ibl + 32 * ib + i] * np.sqrt(_fma(xb[i], xb[i], sigma2))
                    else:
                        weight[i] = _fma(xb[i], xb[i], s4)
                    waux[i] = np.sqrt(weight[i])
                for k in range(4):
                    signs[k] = _even_signs(xb, weight, 8 * k, xval)
                scales[ib] = 0
                if _max_of(xval, 32) < F32(1e-15):
                    continue
                scale = _make_qp_quants(32, 4, xval, L, weight)
                scale, _ = _trial_scales(6, scale * F32(3.0), scale, blk, 32, tabs)
                if scale > 0:
                    _snap_all(F32(1.0) / scale, scale, xval, waux, L, 32, tabs, index, on_grid)
                    sumqx, sumq2 = _odd_sums(xval, weight, L, 32)
                    if sumq2 > 0:
                        scale = sumqx / sumq2
                valid = scale == scale
                for k in range(4):
                    valid &= kmap[group_key(L, 8 * k)] >= 0
                if not valid:  # ggml aborts here
                    continue
                if scale < 0:
                    scale = -scale
                    for k in range(4):
                        signs[k] = ~signs[k] & 127
                for k in range(4):
                    q2[2 * ib] |= np.int64(kmap[group_key(L, 8 * k)]) << (8 * k)
                    q2[2 * ib + 1] |= signs[k] << (7 * k)
                scales[ib] = scale
                max_scale = fmax(max_scale, scale)
            if max_scale == 0:
                fill(q2, 0, 16, 0)
            else:
                d = max_scale / F32(31.0)
                d_out[r, ibl] = d
                idd = F32(1.0) / d
                for ib in range(8):
                    lv = max(0, min(15, nearest_half(idd, scales[ib])))
                    q2[2 * ib + 1] |= np.int64(lv) << 28
            o = 66 * ibl + 2
            for j in range(16):
                for b in range(4):
                    out[r, o + 4 * j + b] = (q2[j] >> (8 * b)) & 255


# ---------------------------------------------------------------------------------------
# IQ2_XS
# ---------------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _xs_weights(xb, wr, off, use_qw, sigma2, weight):
    s4 = F32(0.25) * sigma2
    for i in range(16):
        if use_qw:
            weight[i] = wr[off + i] * np.sqrt(_fma(xb[i], xb[i], sigma2))
        else:
            weight[i] = s4 + xb[i] * xb[i]


@njit(cache=True, nogil=True, error_model="numpy")
def _iq2_xs_rows(x, qw, use_qw, grid_l, kmap, neighbours, d_out, out):
    """Fills d_out [n_rows, nbl] and out [n_rows, nbl*74] (qs words, scales after d)."""
    n_rows, n = x.shape
    nbl = n // QK_K
    blk = _scratch(16)
    weight, waux, xval, L, Laux, index, _, aux_index, aux_on = blk
    scales = np.empty(16, F32)
    q2 = np.empty(32, np.int64)
    signs = np.empty(2, np.int64)
    tabs = (grid_l, kmap, neighbours)
    idx = np.empty(16, np.int64)
    sumx = np.empty(17, F32)
    sumw = np.empty(17, F32)
    for r in range(n_rows):
        wr = row_weights(qw, r)
        fill(L, 0, 16, 0)
        for ibl in range(nbl):
            xbl = x[r, QK_K * ibl : QK_K * (ibl + 1)]
            fill(q2, 0, 32, 0)
            o = 74 * ibl
            d_out[r, ibl] = 0
            fill(out[r], o + 66, o + 74, 0)
            max_scale = F32(0.0)
            sigma2 = sum_squares(xbl, 0, QK_K) * F32(1.0 / QK_K)
            for ib in range(16):
                xb = xbl[16 * ib : 16 * ib + 16]
                _xs_weights(xb, wr, QK_K * ibl + 16 * ib, use_qw, sigma2, weight)
                for i in range(16):
                    waux[i] = np.sqrt(weight[i])
                for k in range(2):
                    signs[k] = _even_signs(xb, weight, 8 * k, xval)
                scales[ib] = 0
                if _max_of(xval, 16) < F32(1e-15):
                    fill(L, 0, 16, 0)
                    continue
                sort_order(xval, 16, idx)
                sumx[0] = 0
                sumw[0] = 0
                for j in range(16):
                    i = idx[j]
                    sumx[j + 1] = _fma(weight[i], xval[i], sumx[j])
                    sumw[j + 1] = sumw[j] + weight[i]
                best = F32(0.0)
                scale = F32(0.0)
                for i1 in range(17):
                    for i2 in range(i1, 17):
                        qx = _fma(sumx[i2] - sumx[i1], F32(3.0), sumx[i1])
                        sumqx = _fma(sumx[16] - sumx[i2], F32(5.0), qx)
                        q2w = _fma(sumw[i2] - sumw[i1], F32(9.0), sumw[i1])
                        sumq2 = _fma(sumw[16] - sumw[i2], F32(25.0), q2w)
                        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                            scale = sumqx / sumq2
                            best = sumqx * scale
                fill(index, 0, 2, 0)
                scale, best = _trial_scales(7, scale * F32(5.0), scale, blk, 16, tabs)
                if scale != 0:
                    for _ in range(3):
                        _snap_all(F32(1.0) / scale, scale, xval, waux, Laux, 16, tabs, aux_index, aux_on)
                        if aux_index[0] == index[0] and aux_index[1] == index[1]:
                            break
                        sumqx, sumq2 = _odd_sums(xval, weight, Laux, 16)
                        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                            scale = sumqx / sumq2
                            best = scale * sumqx
                            copy(L, Laux)
                            copy(index, aux_index)
                        else:
                            break
                if scale < 0:
                    scale = -scale
                    for k in range(2):
                        signs[k] = ~signs[k] & 127
                valid = kmap[group_key(L, 0)] >= 0 and kmap[group_key(L, 8)] >= 0
                if not valid or not scale == scale:  # ggml aborts here
                    continue
                for k in range(2):
                    q2[2 * ib + k] = kmap[group_key(L, 8 * k)] | (signs[k] << 9)
                scales[ib] = scale
                max_scale = fmax(max_scale, scale)
            if max_scale == 0:
                fill(q2, 0, 32, 0)
            else:
                d = max_scale / F32(31.0)
                d_out[r, ibl] = d
                idd = F32(1.0) / d
                sumqx = F32(0.0)
                sumq2 = F32(0.0)
                for ib in range(16):
                    lv = max(0, min(15, nearest_half(idd, scales[ib])))
                    out[r, o + 66 + ib // 2] |= lv << (4 * (ib % 2))
                    fl = F32(0.125) * F32(2 * lv + 1)
                    xb = xbl[16 * ib : 16 * ib + 16]
                    _xs_weights(xb, wr, QK_K * ibl + 16 * ib, use_qw, sigma2, weight)
                    for k in range(2):
                        gi = q2[2 * ib + k] & 511
                        sg = _KSIGNS[q2[2 * ib + k] >> 9]
                        for j in range(8):
                            w = weight[8 * k + j]
                            q = fl * F32(_IQ2XS_GRID[gi, j])
                            if (sg >> j) & 1:
                                q = -q
                            sumqx = _fma(q * w, xb[8 * k + j], sumqx)
                            sumq2 = _fma(q, q * w, sumq2)
                if sumq2 > 0:
                    d_out[r, ibl] = (sumqx * F32(1.05)) / sumq2
            for j in range(32):
                put16(out[r], o + 2 + 2 * j, q2[j])


# ---------------------------------------------------------------------------------------
# IQ2_S
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _iq2_s_rows(x, qw, use_qw, grid_l, kmap, neighbours, d_out, out):
    """Fills d_out [n_rows, nbl] (d before the 0.9875 factor) and out [n_rows, nbl*82]."""
    n_rows, n = x.shape
    nbl = n // QK_K
    blk = _scratch(16)
    weight, waux, xval, L, Laux, _, on_grid, _, _ = blk
    scales = np.empty(16, F32)
    signs = np.empty(2, np.int64)
    tabs = (grid_l, kmap, neighbours)
    for r in range(n_rows):
        wr = row_weights(qw, r)
        fill(L, 0, 16, 0)
        for ibl in range(nbl):
            xbl = x[r, QK_K * ibl : QK_K * (ibl + 1)]
            o = 82 * ibl
            fill(out[r], o, o + 82, 0)
            d_out[r, ibl] = 0
            max_scale = F32(0.0)
            sigma2 = (sum_squares(xbl, 0, QK_K) * F32(2.0)) * F32(1.0 / QK_K)
            for ib in range(16):
                xb = xbl[16 * ib : 16 * ib + 16]
                _xs_weights(xb, wr, QK_K * ibl + 16 * ib, use_qw, sigma2, weight)
                for i in range(16):
                    waux[i] = np.sqrt(weight[i])
                for k in range(2):
                    s = 0
                    for i in range(8):
                        v = xb[8 * k + i]
                        if v >= 0:
                            xval[8 * k + i] = v
                        else:
                            xval[8 * k + i] = -v
                            s |= 1 << i
                    signs[k] = s
                mx = _max_of(xval, 16)
                scales[ib] = 0
                if mx < F32(1e-8):
                    continue
                on_grid[0] = on_grid[1] = True
                scale, _ = _trial_scales(9, mx, mx / F32(5.0), blk, 16, tabs)
                if not (on_grid[0] and on_grid[1]) and scale > 0:
                    idd = F32(1.0) / scale
                    for k in range(2):
                        if on_grid[k]:
                            continue
                        _snap(idd, xval, 8 * k, L)
                        lookup(kmap, neighbours, grid_l, L, 8 * k, xval, waux, scale)
                    sumqx, sumq2 = _odd_sums(xval, weight, L, 16)
                    if sumq2 > 0:
                        scale = sumqx / sumq2
                if scale < 0:
                    scale = -scale
                    for k in range(2):
                        signs[k] = ~signs[k] & 255
                if kmap[group_key(L, 0)] < 0 or kmap[group_key(L, 8)] < 0 or not scale == scale:
                    continue  # ggml aborts here
                for k in range(2):
                    gi = kmap[group_key(L, 8 * k)]
                    i8 = 2 * ib + k
                    out[r, o + 2 + i8] = gi & 255
                    out[r, o + 66 + i8 // 4] |= (gi >> 8) << (2 * (i8 % 4))
                    out[r, o + 34 + i8] = signs[k]
                scales[ib] = scale
                max_scale = fmax(max_scale, scale)
            if max_scale == 0:
                continue
            d = max_scale / F32(31.0)
            d_out[r, ibl] = d * F32(0.9875)
            idd = F32(1.0) / d
            for ib in range(16):
                lv = max(0, min(15, nearest_half(idd, scales[ib])))
                out[r, o + 74 + ib // 2] |= lv << (4 * (ib % 2))


# ---------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------


def _check(x: np.ndarray, imatrix: np.ndarray | None, type_name: str, name: str, block: int = QK_K):
    """legacy_quantize's checks (2D, whole blocks of 32, imatrix length), then whole blocks
    of `block`; returns float32 C-contiguous x and the imatrix or None."""
    arr, qw = _check_32(x, imatrix, type_name, name)
    if arr.shape[1] % block:
        raise UnsupportedTypeError(
            f"{name}: row size {arr.shape[1]} not divisible by block size {block} for {type_name}; "
            "keep this tensor in a type with smaller blocks (Q4_0, IQ4_NL use 32) or in F16"
        )
    return arr, qw


def _require_imatrix(imatrix, type_name: str, name: str) -> None:
    if imatrix is None:
        raise QuantizeError(
            f"{name}: {type_name} needs an importance matrix (ik_llama.cpp refuses without one: "
            "the result would be garbage); make one with `kiln imatrix` or choose a type of more bits"
        )


def _f16_bits(d: np.ndarray) -> np.ndarray:
    """float32 -> IEEE half bits (uint16), round to nearest even like F16C; scales past the
    f16 range become Inf, as in ik_llama.cpp."""
    with np.errstate(over="ignore"):
        return d.astype("<f2").view("<u2")


def _f16(d: np.ndarray) -> np.ndarray:
    """float32 [..., k] -> uint8 [..., k, 2] little-endian halves."""
    return _f16_bits(d).view(np.uint8).reshape(*d.shape, 2)


def _run_iq2(kernel, kind: str, block_bytes: int, x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    n_rows, n = x.shape
    nbl = n // QK_K
    out = np.zeros((n_rows, nbl * block_bytes), np.uint8)
    d = np.zeros((n_rows, nbl), F32)
    kernel(x, *_grid_kernel_args(kind, qw, n), d, out)
    out.reshape(n_rows, nbl, block_bytes)[:, :, :2] = _f16(d)
    return out


def quantize_iq2_xxs(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_XXS (2.0625 bpw): f16 d; per 32 values 4 grid bytes and a word of 4x7 sign bits and
    a 4-bit scale. Needs an imatrix."""
    _require_imatrix(imatrix, "IQ2_XXS", name)
    x, qw = _check(x, imatrix, "IQ2_XXS", name)
    return _run_iq2(_iq2_xxs_rows, "IQ2_XXS", 66, x, qw)


def quantize_iq2_xs(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_XS (2.3125 bpw): f16 d; 32 words of 9-bit grid index and 7 sign bits; 4-bit scales
    per 16 values. Needs an imatrix."""
    _require_imatrix(imatrix, "IQ2_XS", name)
    x, qw = _check(x, imatrix, "IQ2_XS", name)
    return _run_iq2(_iq2_xs_rows, "IQ2_XS", 74, x, qw)


def quantize_iq2_s(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_S (2.5625 bpw): f16 d; 10-bit grid indices, 8 free sign bits per group of 8;
    4-bit scales per 16 values."""
    x, qw = _check(x, imatrix, "IQ2_S", name)
    return _run_iq2(_iq2_s_rows, "IQ2_S", 82, x, qw)


def _grid_kernel_args(kind: str, qw: np.ndarray | None, n: int):
    weights = qw.reshape(-1, n) if qw is not None else np.zeros((1, n), F32)
    return (weights, qw is not None, *grid_tables(kind))


def quantize_iq1_s(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ1_S (1.5625 bpw): f16 d; 11-bit grid indices per group of 8; per 32 values a 3-bit
    scale and the sign of the 1/8 shift. Needs an imatrix."""
    _require_imatrix(imatrix, "IQ1_S", name)
    x, qw = _check(x, imatrix, "IQ1_S", name)
    n_rows, n = x.shape
    nbl = n // QK_K
    out = np.zeros((n_rows, nbl * 50), np.uint8)
    d = np.zeros((n_rows, nbl), F32)
    weights, _, grid_l, kmap, neighbours = _grid_kernel_args("IQ1", qw, n)
    iq1_s_rows(x, weights, grid_l, kmap, neighbours, d, out)
    out.reshape(n_rows, nbl, 50)[:, :, :2] = _f16(d)
    return out


def quantize_iq1_m(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ1_M (1.75 bpw): 11-bit grid indices; per group of 8 a shift sign; 3-bit scales per 16
    values; the f16 super-block scale in the top nibbles of the 4 scale words. Without an
    imatrix the weights are x^2 (as in ik_llama.cpp)."""
    x, qw = _check(x, imatrix, "IQ1_M", name)
    n_rows, n = x.shape
    nbl = n // QK_K
    out = np.zeros((n_rows, nbl * 56), np.uint8)
    d = np.zeros((n_rows, nbl), F32)
    iq1_m_rows(x, *_grid_kernel_args("IQ1", qw, n), d, out)
    words = out.reshape(n_rows, nbl, 56)[:, :, 48:].view("<u2")  # [n_rows, nbl, 4]
    bits = _f16_bits(d)[..., None]
    words |= (bits >> (4 * np.arange(4, dtype=np.uint16)) & 0xF) << 12
    return out


def _quantize_r4(kernel, type_name: str, block_bytes: int, x, imatrix, name: str) -> np.ndarray:
    x, qw = _check(x, imatrix, type_name, name, 32)
    n_rows, n = x.shape
    if n_rows % 4:
        raise QuantizeError(f"{name}: {type_name} interleaves 4 rows; {n_rows} rows is not a multiple of 4")
    groups = n_rows // 4
    out = np.zeros((groups, 8 + n // 32 * block_bytes), np.uint8)
    d = np.zeros((groups, 4), F32)
    kernel(x, *_grid_kernel_args("IQ1", qw, n), d, out)
    out[:, :8] = _f16(d).reshape(groups, 8)
    return out.reshape(n_rows, -1)


def quantize_iq1_s_r4(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ1_S_R4 (1.5 bpw): 4 rows interleaved, one f16 scale per row, blocks of 32 values
    with IQ1_S's grid indices, shift and 3-bit scale. Works without an imatrix."""
    return _quantize_r4(iq1_s_r4_groups, "IQ1_S_R4", 24, x, imatrix, name)


def quantize_iq1_m_r4(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ1_M_R4 (1.75 bpw): 4 rows interleaved, one f16 scale per row, per 16 values a 4-bit
    scale (used as d*s), per group of 8 a shift sign. Works without an imatrix."""
    return _quantize_r4(iq1_m_r4_groups, "IQ1_M_R4", 28, x, imatrix, name)


@njit(cache=True, nogil=True, error_model="numpy")
def _guarded_weights(x, qw, block, out):
    """iqk_quantize.cpp's QHelper::row_weights, used by its _R4 repacks: per block, the
    imatrix as is, or 1e-9 everywhere where sum w^2, sum x^2 or sum w|x| is not above
    block * 1e-18 (a block the imatrix says nothing about)."""
    eps = F32(1e-9)
    limit = F32(block) * (eps * eps)
    for r in range(x.shape[0]):
        for ib in range(x.shape[1] // block):
            sw2 = F32(0.0)
            sx2 = F32(0.0)
            swx = F32(0.0)
            for j in range(ib * block, (ib + 1) * block):
                w = qw[j]
                out[r, j] = w
                sw2 = _fma(w, w, sw2)
                sx2 = _fma(x[r, j], x[r, j], sx2)
                swx = _fma(w, abs(x[r, j]), swx)
            if not (sw2 > limit and sx2 > limit and swx > limit):
                fill(out[r], ib * block, (ib + 1) * block, eps)


def _repacked(kernel, kind: str, block: int, type_name: str, x, imatrix, name: str) -> np.ndarray:
    x, qw = _check(x, imatrix, type_name, name)
    if x.shape[0] % 4:
        raise QuantizeError(f"{name}: {type_name} interleaves 4 rows; {x.shape[0]} rows is not a multiple of 4")
    if qw is not None:
        rows = np.empty_like(x)
        _guarded_weights(x, qw, block, rows)
        qw = rows
    plain = _run_iq2(kernel, kind, 66 if kind == "IQ2_XXS" else 74, x, qw)
    return interleaved.repack(type_name, plain)


def quantize_iq2_xxs_r4(
    x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor"
) -> np.ndarray:
    """IQ2_XXS_R4: IQ2_XXS of each row (imatrix blocks of 32 that carry no information get
    weight 1e-9, as in ik_llama.cpp), repacked by 4 rows."""
    return _repacked(_iq2_xxs_rows, "IQ2_XXS", 32, "IQ2_XXS_R4", x, imatrix, name)


def quantize_iq2_xs_r4(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_XS_R4: IQ2_XS of each row (uninformative imatrix blocks of 16 weighted 1e-9),
    repacked by 4 rows."""
    return _repacked(_iq2_xs_rows, "IQ2_XS", 16, "IQ2_XS_R4", x, imatrix, name)


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "IQ2_XXS": quantize_iq2_xxs,
    "IQ2_XS": quantize_iq2_xs,
    "IQ2_S": quantize_iq2_s,
    "IQ1_S": quantize_iq1_s,
    "IQ1_M": quantize_iq1_m,
    "IQ1_S_R4": quantize_iq1_s_r4,
    "IQ1_M_R4": quantize_iq1_m_r4,
    "IQ2_XXS_R4": quantize_iq2_xxs_r4,
    "IQ2_XS_R4": quantize_iq2_xs_r4,
}
