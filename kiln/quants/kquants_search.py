"""Per-block scale searches of the k-quants, IQ4_NL/IQ4_XS and the f16 rounding they need,
ported from ik_llama.cpp's ggml-quants.c (commit 8337e4cd3) for `kquants_quantize`.

Each search is done in the C code's type (float32; float64 only where the C code uses
double) and order. ik_llama.cpp is built with GCC -O3 -march=native, which fuses some
`a*b + c` into one fused multiply-add (FMA: one rounding instead of two); `_fma` marks
the places where it does, found by comparing against that build on random blocks.

- `make_qkx2_quants` (Q2_K, Q4_K, Q5_K without imatrix): scale and minimum of an affine
  block, nstep+1 trial scales around nmax/(max - min), each solved by weighted least
  squares; the error is the weighted squared (or, for Q2_K, absolute) difference.
- `make_qkx3_quants` (Q2_K, Q4_K, Q5_K with imatrix) lives in `quantize_common`: the
  same in float64 with 37 trial scales and the squared error, then a greedy refinement
  of single quants (Q2_K's copy fuses the w*x^2 sum, Q4_K's and Q5_K's do not).
- `make_q3_quants` (Q3_K without imatrix): symmetric scale with weights x*x and up to 5
  passes that move one quant at a time to its least-squares optimum.
- `make_qp_quants` (Q2_K, Q4_K, Q5_K with imatrix): the block's sub-block scales (or
  minimums, all >= 0) quantized to 0..nmax with 8 trial scales and 5 refinement passes.
- `make_qx_quants` (Q3_K, Q6_K) lives in `legacy_quantize`.
- `iq4nl_block`: the IQ4_NL/IQ4_XS search over the non-linear grid: 2*(2*ntry+1) trial
  scales, then a greedy one-quant-at-a-time refinement; its grid index table is
  `quantize_common.IQ4NL_INDEX`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kquants_tables import IQ4NL_VALUES
from .quantize_common import _MAGIC, _fma, _nearest, abs_max

GROUP_MAX_EPS = np.float32(1e-15)

IQ4NL_INT = IQ4NL_VALUES.astype(np.int32)


@njit(cache=True)
def round_nearest(v):
    """ggml's nearest_int(v) of a float32 that is not a product (so nothing is fused)."""
    return np.int32(v + np.float32(_MAGIC)) - np.int32(_MAGIC)


@njit(cache=True)
def f16_bits(v):
    """float32 -> IEEE half bits, rounded to nearest even (as F16C's vcvtps2ph)."""
    b = np.int64(np.float32(v).view(np.uint32))
    sign = (b >> 16) & 0x8000
    a = b & 0x7FFFFFFF
    if a >= 0x7F800000:
        return np.uint16(sign | 0x7C00 | (0x200 if a > 0x7F800000 else 0))
    if a >= 0x477FF000:
        return np.uint16(sign | 0x7C00)
    if a >= 0x38800000:
        m = a - 0x38000000
        return np.uint16(sign | ((m + 0xFFF + ((m >> 13) & 1)) >> 13))
    q = abs(np.float32(v)) * np.float32(16777216.0)  # exact: |v| < 2^-14
    return np.uint16(sign | (np.int32(q + np.float32(_MAGIC)) - np.int32(_MAGIC)))


@njit(cache=True)
def f16_value(h):
    """IEEE half bits -> float32 (exact)."""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = np.float32(m) * np.float32(5.9604644775390625e-08)
        return -v if sign else v
    if e == 31:
        return np.uint32(sign | 0x7F800000 | (m << 13)).view(np.float32)
    return np.uint32(sign | ((e + 112) << 23) | (m << 13)).view(np.float32)


@njit(cache=True)
def make_qkx2_quants(nmax, x, w, L, Laux, rmin, rdelta, nstep, use_mad, fused_sum_x):
    """ggml's make_qkx2_quants (float32): returns (scale, -min), the block being
    scale*L - (-min); L gets 0..nmax. GCC fuses the running sum of w*x where it unrolls
    the loop (Q2_K: n = 16), not in the loop of Q4_K/Q5_K (n = 32)."""
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        sum_w += w[i]
        if fused_sum_x:
            sum_x = _fma(w[i], x[i], sum_x)
        else:
            sum_x += w[i] * x[i]
    if mn > 0:
        mn = np.float32(0.0)
    if mx - mn < np.float32(1e-10):
        for i in range(n):
            L[i] = 0
        return np.float32(0.0), -mn
    iscale = np.float32(nmax) / (mx - mn)
    scale = np.float32(1.0) / iscale
    best_mad = np.float32(0.0)
    for i in range(n):
        lv = max(0, min(nmax, _nearest(iscale, x[i] - mn)))
        L[i] = lv
        diff = _fma(scale, np.float32(lv), mn) - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_mad = _fma(w[i], diff, best_mad)
    for step in range(nstep + 1):
        iscale = (_fma(rdelta, np.float32(step), rmin) + np.float32(nmax)) / (mx - mn)
        sum_l = np.float32(0.0)
        sum_l2 = np.float32(0.0)
        sum_xl = np.float32(0.0)
        for i in range(n):
            lv = max(0, min(nmax, _nearest(iscale, x[i] - mn)))
            Laux[i] = lv
            fl = np.float32(lv)
            wl = w[i] * fl
            sum_l += wl
            sum_l2 = _fma(wl, fl, sum_l2)
            sum_xl = _fma(wl, x[i], sum_xl)
        D = _fma(sum_w, sum_l2, -(sum_l * sum_l))
        if D > 0:
            this_scale = _fma(-sum_x, sum_l, sum_w * sum_xl) / D
            this_min = _fma(sum_l2, sum_x, -(sum_l * sum_xl)) / D
            if this_min > 0:
                this_min = np.float32(0.0)
                this_scale = sum_xl / sum_l2
            mad = np.float32(0.0)
            for i in range(n):
                diff = _fma(this_scale, np.float32(Laux[i]), this_min) - x[i]
                diff = abs(diff) if use_mad else diff * diff
                mad = _fma(w[i], diff, mad)
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = this_scale
                mn = this_min
    return scale, -mn


@njit(cache=True)
def make_q3_quants(nmax, x, L):
    """ggml's make_q3_quants with do_rmse (weights x*x); L (int8) gets 0..2*nmax-1."""
    n = x.shape[0]
    amax, mx = abs_max(x)
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(-nmax) / mx
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    Ls = L
    for i in range(n):
        lv = max(-nmax, min(nmax - 1, _nearest(iscale, x[i])))
        Ls[i] = lv
        w = x[i] * x[i]
        fl = np.float32(lv)
        sumlx = _fma(w * x[i], fl, sumlx)
        suml2 = _fma(w * fl, fl, suml2)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            wx = w * x[i]
            fl = np.float32(Ls[i])
            slx = _fma(-wx, fl, sumlx)
            if slx > 0:
                sl2 = _fma(-(w * fl), fl, suml2)
                new_l = max(-nmax, min(nmax - 1, round_nearest(x[i] * sl2 / slx)))
                if new_l != np.int32(Ls[i]):
                    fn = np.float32(new_l)
                    slx = _fma(wx, fn, slx)
                    sl2 = _fma(w * fn, fn, sl2)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        Ls[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2


@njit(cache=True)
def make_qp_quants(nmax, x, L, qw):
    """ggml's make_qp_quants: x >= 0 (sub-block scales or minimums) to L in 0..nmax
    with weights qw; returns the scale."""
    n = x.shape[0]
    mx = np.float32(0.0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]
    if mx < np.float32(1e-16):
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(nmax) / mx
    for i in range(n):
        L[i] = _nearest(iscale, x[i])
    scale = np.float32(1.0) / iscale
    best_mse = np.float32(0.0)
    for i in range(n):
        diff = _fma(-scale, np.float32(L[i]), x[i])
        best_mse = _fma(qw[i] * diff, diff, best_mse)
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = _fma(np.float32(0.1), np.float32(step), np.float32(nmax)) / mx
        scale_is = np.float32(1.0) / iscale_is
        mse = np.float32(0.0)
        for i in range(n):
            lv = min(nmax, _nearest(iscale_is, x[i]))
            diff = _fma(-scale_is, np.float32(lv), x[i])
            mse = _fma(qw[i] * diff, diff, mse)
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        lv = min(nmax, _nearest(iscale, x[i]))
        L[i] = lv
        fl = np.float32(lv)
        sumlx = _fma(qw[i] * x[i], fl, sumlx)
        suml2 = _fma(qw[i] * fl, fl, suml2)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            wx = w * x[i]
            fl = np.float32(L[i])
            slx = _fma(-wx, fl, sumlx)
            sl2 = _fma(-(w * fl), fl, suml2)
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, round_nearest(x[i] * sl2 / slx))
                if new_l != np.int32(L[i]):
                    fn = np.float32(new_l)
                    slx = _fma(wx, fn, slx)
                    sl2 = _fma(w * fn, fn, sl2)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2


@njit(cache=True)
def best_index_iq4nl(index, values, v):
    """The IQ4_NL grid index nearest to v (ggml's best_index_iq4nl, ties as there)."""
    if v <= np.float32(-128.0):
        return 0
    if v >= np.float32(114.0):
        return 15
    ix = np.int32(index[np.int32(v) + 127])
    if ix < 16:
        return ix
    return ix - 16 if v - values[ix - 16] < values[ix - 15] - v else ix - 15


@njit(cache=True)
def iq4nl_block(xb, w, Lb, ntry, index, vals, ivals):
    """One block of quantize_row_iq4_nl_impl's search: returns the block scale d and fills
    Lb with grid indices, or returns (0, False) for an all-zero block (Lb untouched).
    `vals` is the grid as float32, `ivals` as int32."""
    n = xb.shape[0]
    amax, mx = abs_max(xb)
    if amax < GROUP_MAX_EPS:
        return np.float32(0.0), False
    d = -mx / vals[0] if ntry > 0 else mx / vals[0]
    inv = np.float32(1.0) / d
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    for j in range(n):
        lv = best_index_iq4nl(index, vals, inv * xb[j])
        Lb[j] = lv
        wq = w[j] * vals[lv]
        sumqx = _fma(wq, xb[j], sumqx)
        sumq2 = _fma(wq, vals[lv], sumq2)
    # all importance weights of the block zero (an expert no token reached): ggml divides
    # 0 by 0 and writes a NaN scale; kiln keeps the max-based scale
    if sumq2 > 0:
        d = sumqx / sumq2
    best = d * sumqx
    best_sumqx = sumqx
    best_sumq2 = sumq2
    for itry in range(-ntry, ntry + 1):
        for k in range(2):
            inv = np.float32(itry + (ivals[0] if k == 0 else ivals[15])) / mx
            sumqx = np.float32(0.0)
            sumq2 = np.float32(0.0)
            for j in range(n):
                lv = best_index_iq4nl(index, vals, inv * xb[j])
                wq = w[j] * vals[lv]
                sumqx = _fma(wq, xb[j], sumqx)
                sumq2 = _fma(wq, vals[lv], sumq2)
            if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
                best_sumqx = sumqx
                best_sumq2 = sumq2
                for j in range(n):
                    Lb[j] = best_index_iq4nl(index, vals, inv * xb[j])
    sumqx = best_sumqx
    sumq2 = best_sumq2
    for _ in range(32 * n):
        min_step = np.float32(np.inf)
        best_j = -1
        dr = 0
        for j in range(n):
            lj = np.int32(Lb[j])
            g = (d * w[j]) * _fma(-d, vals[lj], xb[j])
            if g > 0 and lj < 15:
                st = np.float32(ivals[lj + 1] - ivals[lj]) / g
                if st < min_step:
                    min_step = st
                    best_j = j
                    dr = 1
            elif g < 0 and lj > 0:
                st = np.float32(ivals[lj - 1] - ivals[lj]) / g
                if st < min_step:
                    min_step = st
                    best_j = j
                    dr = -1
        if best_j < 0:
            break
        lj = np.int32(Lb[best_j])
        v0 = ivals[lj]
        v1 = ivals[lj + dr]
        wb = w[best_j]
        new_sumqx = _fma(wb * xb[best_j], np.float32(v1 - v0), sumqx)
        new_sumq2 = _fma(wb, np.float32(v1 * v1 - v0 * v0), sumq2)
        if new_sumq2 > 0 and new_sumqx * new_sumqx > best * new_sumq2:
            sumqx = new_sumqx
            sumq2 = new_sumq2
            d = sumqx / sumq2
            best = d * sumqx
            Lb[best_j] = lj + dr
        else:
            break
    return d, True
