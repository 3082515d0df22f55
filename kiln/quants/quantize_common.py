"""Numba building blocks shared by the quantizers (`legacy_quantize`, `kquants_*`,
`iqk_*_quantize`, `trellis_quantize`, ...), so that each exists once.

Every quantizer reproduces ik_llama.cpp's bytes as built by GCC 12 (-O3 -march=native):
float32 arithmetic in the C code's order, with a fused multiply-add (`_fma`) exactly where
GCC contracted `a*b + c`. The pieces here keep those conventions; which ones a caller
uses, and where, is part of its own port.

- Arithmetic: `_fma`, ggml's nearest_int as `_nearest` (through an int conversion, exact
  for |v| < 2^22) and `_nearest_bits` (read off the float's bits, as C does, so also for
  NaN and out-of-range values), and C's (int)x on x86 as `_trunc`.
- The non-linear grids of the IQK types (`iqk_tables`): `nl_index_table` (ik's
  `iq*nl_index` nearest-value shortcut, derived from a grid), the tables of the IQ3, IQ4
  (= IQ4_NL's grid), IQ5 and IQ6 grids, the lookups `best_index_nl`, `best_index_iq2nl`
  and `best_index_iq6nl`, and `nl_best_index` / `nl_value`, which pick the grid by its
  bit count (2..6) and read it and its table as module globals.
- Per-block steps: `abs_max`, `sum_squares`, ik's QHelper imatrix check
  (`qhelper_weights`), iqk_quantize.cpp's `make_qx_quants` (`make_qx_quants_iqk`) and
  ggml's `make_qkx3_quants` (with or without the fused w*x^2 sum).

Numba notes: the helpers marked inline are inlined into the kernels; in hot loops give
them scalars and let them read tables as module globals (as `nl_best_index` does), since
an array handed to a helper costs reference counting on every call (kernels ran ~3x
slower so). Integer constants passed to a compiled (not inlined) helper should be typed
int64 (`np.int64(8)`), not literals, or the helper compiles once per value.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from . import iqk_tables as T

# ---------------------------------------------------------------------------------------
# arithmetic as GCC compiled it
# ---------------------------------------------------------------------------------------


@intrinsic
def _fma(typingctx, a, b, c):
    """a*b + c rounded once, in the (common) float type of the arguments."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@intrinsic
def _f32_bits(typingctx, v):
    """The bits of a float32 as an int32 (a register move, as C's memcpy)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


_MAGIC = 12582912.0  # 1.5 * 2**23: adding it leaves round-half-even(v) in the low mantissa bits
_INT_MIN = -2147483648


@njit(cache=True, inline="always")
def _nearest(a, b):
    """ggml's nearest_int(a*b) as compiled: the product fused with the magic add."""
    return np.int32(_fma(a, b, np.float32(_MAGIC))) - np.int32(_MAGIC)


@njit(cache=True, inline="always")
def _nearest_bits(a, b):
    """ik's nearest_int(a*b), the product fused with the magic add, read off the bits
    (so NaN gives 0, as in C)."""
    return (np.int64(_f32_bits(_fma(a, b, np.float32(_MAGIC)))) & 0x7FFFFF) - 0x400000


@njit(cache=True, inline="always")
def _trunc(x):
    """C's (int)x as x86 computes it: toward zero, INT_MIN when out of range (or NaN)."""
    if x > np.float32(-2147483648.0) and x < np.float32(2147483648.0):
        return np.int64(np.int32(x))
    return np.int64(_INT_MIN)


# ---------------------------------------------------------------------------------------
# the non-linear grids
# ---------------------------------------------------------------------------------------


def nl_index_table(values) -> np.ndarray:
    """ik_llama.cpp's `iq*nl_index` for a sorted grid (one half): entry ix covers
    v0 + ix, i.e. every x with trunc(x) = v0 + ix; it is the index of the nearest grid
    value, or n + k where the midpoint of values k and k+1 lies less than 1 away (then
    the caller compares the two)."""
    v = [int(t) for t in values]
    n = len(v)
    mids = [(v[k] + v[k + 1]) / 2 for k in range(n - 1)]
    table = np.empty(v[-1] - v[0] + 1, np.uint8)
    for ix in range(len(table)):
        p = v[0] + ix
        close = [k for k, m in enumerate(mids) if abs(p - m) < 1]
        table[ix] = n + close[0] if close else min(range(n), key=lambda i: (abs(p - v[i]), i))
    table.setflags(write=False)
    return table


IQ3NL_INDEX = nl_index_table(T.IQ3NL[:8])
IQ4NL_INDEX = nl_index_table(T.IQ4K[:16])  # IQ4_K's first half is IQ4_NL's grid
IQ5NL_INDEX = nl_index_table(T.IQ5NL[:32])
IQ6NL_INDEX = nl_index_table(T.IQ6NL[:64])

# The search grids as float32, both halves. IQ6_K searches the rounded values and the
# same plus 1 (ik's S_IQ6K), although it dequantizes through a polynomial.
GRID2, GRID3, GRID4, GRID5 = T.IQ2NL_F32, T.IQ3NL_F32, T.IQ4K_F32, T.IQ5NL_F32
GRID6 = np.concatenate([T.IQ6NL[:64], np.asarray(T.IQ6NL[:64]) + 1]).astype(np.float32)
GRID6.setflags(write=False)


@njit(cache=True, inline="always")
def best_index_nl(values, off, n, table, x):
    """ik's best_index_iq3nl/iq4nl/iq5nl: index into values[off : off + n] nearest to x.

    `values` is a float32 grid (both halves), `table` the index table of the first half
    (the halves are the same up to a shift, so one table serves both). In a hot loop, pass
    module-level arrays from an inlined wrapper (as `nl_best_index` does): arrays handed
    down from the caller's arguments cost a reference count per call.
    """
    ix = _trunc(x) - np.int64(values[off])
    if ix < 0:
        return 0
    if ix >= table.shape[0]:
        return n - 1
    k = np.int64(table[ix])
    if k < n:
        return k
    k -= n
    return k if x - values[off + k] < values[off + k + 1] - x else k + 1


@njit(cache=True, inline="always")
def best_index_iq6nl(values, off, x):
    """ik's best_index_iq6nl: the integer part is taken of x - v0 (in float32)."""
    ix = _trunc(x - values[off])
    if ix < 0:
        return 0
    if ix >= IQ6NL_INDEX.shape[0]:
        return 63
    k = np.int64(IQ6NL_INDEX[ix])
    if k < 64:
        return k
    k -= 64
    return k if x - values[off + k] < values[off + k + 1] - x else k + 1


@njit(cache=True, inline="always")
def best_index_iq2nl(values, off, x):
    """ik's best_index_iq2nl over the 4 values values[off : off + 4]."""
    idx = 0 if x < values[off + 1] else (2 if x > values[off + 2] else 1)
    return idx if x - values[off + idx] < values[off + idx + 1] - x else idx + 1


@njit(cache=True, inline="always")
def nl_best_index(bits, off, x):
    """The index for x in the half at `off` of the `bits`-bit grid (2: IQ2 .. 6: IQ6),
    `off` being 0 or 2**bits. The grids and tables are read as module globals."""
    if bits == 2:
        return best_index_iq2nl(GRID2, off, x)
    if bits == 3:
        return best_index_nl(GRID3, off, 8, IQ3NL_INDEX, x)
    if bits == 4:
        return best_index_nl(GRID4, off, 16, IQ4NL_INDEX, x)
    if bits == 5:
        return best_index_nl(GRID5, off, 32, IQ5NL_INDEX, x)
    return best_index_iq6nl(GRID6, off, x)


@njit(cache=True, inline="always")
def nl_value(bits, i):
    """Value i of the `bits`-bit search grid (both halves)."""
    if bits == 2:
        return GRID2[i]
    if bits == 3:
        return GRID3[i]
    if bits == 4:
        return GRID4[i]
    if bits == 5:
        return GRID5[i]
    return GRID6[i]


# ---------------------------------------------------------------------------------------
# per-block steps
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def abs_max(x):
    """(max |x|, the x that has it), the first one on ties."""
    amax = np.float32(0.0)
    mx = np.float32(0.0)
    for j in range(x.shape[0]):
        a = abs(x[j])
        if a > amax:
            amax = a
            mx = x[j]
    return amax, mx


@njit(cache=True, inline="always")
def sum_squares(x):
    """Sum of x^2 in order, products rounded (GCC vectorizes the products, not the sum)."""
    s = np.float32(0.0)
    for j in range(x.shape[0]):
        s += x[j] * x[j]
    return s


@njit(cache=True, error_model="numpy")
def qhelper_weights(x, qw, block, out):
    """ik's QHelper::row_weights: the imatrix qw into out, with 1e-9 for every weight of
    a `block`-value block whose sums of qw^2, x^2 and qw*|x| are all-but zero (any of
    them at most block * 1e-18)."""
    eps = np.float32(1e-9)
    limit = np.float32(block) * (eps * eps)
    for s in range(0, x.shape[0], block):
        sw2 = np.float32(0.0)
        sx2 = np.float32(0.0)
        swx = np.float32(0.0)
        for j in range(s, s + block):
            sw2 += qw[j] * qw[j]
            sx2 += x[j] * x[j]
            swx += qw[j] * abs(x[j])
        keep = sw2 > limit and sx2 > limit and swx > limit
        for j in range(s, s + block):
            out[j] = qw[j] if keep else eps


@njit(cache=True, error_model="numpy")
def make_qx_quants_iqk(nmax, x, L, w):
    """iqk_quantize.cpp's make_qx_quants: returns the scale, L gets l + nmax.

    Unlike ggml's (`legacy_quantize._make_qx_quants`) it tries only -nmax/max and
    -(nmax + t/10)/max for t = +-1..9, and does not refine.
    """
    amax, mx = abs_max(x)
    if amax == 0:
        L[:] = nmax
        return np.float32(0.0)
    scale = np.float32(0.0)
    best = np.float32(0.0)
    for s in range(19):  # -nmax/max, then -(nmax + t/10)/max for t = -9..-1, 1..9
        t = 0 if s == 0 else (s - 10 if s < 10 else s - 9)
        if t == 0:
            iscale = np.float32(-nmax) / mx
        else:
            iscale = -_fma(np.float32(t), np.float32(0.1), np.float32(nmax)) / mx
        sumlx = np.float32(0.0)
        suml2 = np.float32(0.0)
        for i in range(x.size):
            fl = np.float32(max(-nmax, min(nmax - 1, _nearest_bits(iscale, x[i]))))
            sumlx = _fma(w[i] * x[i], fl, sumlx)
            suml2 = _fma(w[i] * fl, fl, suml2)
        if t == 0 or (suml2 > 0 and sumlx * sumlx > best * suml2):
            for i in range(x.size):
                L[i] = nmax + max(-nmax, min(nmax - 1, _nearest_bits(iscale, x[i])))
            scale = sumlx / suml2 if suml2 != 0 else np.float32(0.0)
            best = scale * sumlx
    return scale


@njit(cache=True, inline="always")
def _score(s, m, sum_w, sum_x, sum_l, sum_l2, sum_xl):
    """2*s*sum_xl + 2*m*sum_x - 2*s*m*sum_l - s*s*sum_l2 - m*m*sum_w, fused as compiled."""
    s2 = s + s
    acc = _fma(sum_xl, s2, (m + m) * sum_x)
    acc = _fma(-(s2 * m), sum_l, acc)
    acc = _fma(-(s * s), sum_l2, acc)
    return _fma(-(m * m), sum_w, acc)


@njit(cache=True, inline="always")
def _solve(sum_w, sum_x, sum_l, sum_l2, sum_xl):
    """Least-squares scale and minimum (min <= 0) for fixed quants; D <= 0 gives ok False."""
    D = _fma(sum_w, sum_l2, -(sum_l * sum_l))
    if not D > 0:
        return False, 0.0, 0.0
    this_min = _fma(sum_l2, sum_x, -(sum_l * sum_xl)) / D
    if this_min > 0:
        return True, sum_xl / sum_l2, 0.0
    return True, _fma(-sum_l, sum_x, sum_w * sum_xl) / D, this_min


@njit(cache=True)
def make_qkx3_quants(nmax, x, w, L, Laux, fused_x2):
    """ggml's make_qkx3_quants(rmin -0.9, rdelta 0.05, nstep 36, use_mad false).

    Returns (scale, min) with min <= 0, the block being scale*L + min; L gets 0..nmax.
    Note that the trial scales use the *current* min, which changes when a trial wins.
    `fused_x2`: the running sum of w*x^2 is fused, as GCC compiled the copy it inlined and
    unrolled for Q2_K's 16-value sub-blocks; the out-of-line copy that Q4_1, Q5_1, Q4_K
    and Q5_K call rounds the product.
    """
    n = x.shape[0]
    mn = x[0]
    mx = x[0]
    sum_w = np.float64(w[0])
    sum_x = sum_w * np.float64(x[0])
    sum_x2 = sum_x * np.float64(x[0])
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        wd = np.float64(w[i])
        xd = np.float64(x[i])
        sum_w += wd
        wx = wd * xd
        sum_x += wx
        if fused_x2:
            sum_x2 = _fma(wx, xd, sum_x2)
        else:
            sum_x2 += wx * xd
    if mn > 0:
        mn = np.float32(0.0)
    if mx - mn < np.float32(1e-10):
        for i in range(n):
            L[i] = 0
        return np.float32(0.0), mn
    iscale = np.float32(nmax) / (mx - mn)
    scale = np.float32(1.0) / iscale
    best_mad = 0.0
    for i in range(n):
        lv = max(0, min(nmax, _nearest(iscale, x[i] - mn)))
        L[i] = lv
        diff = _fma(np.float64(lv), np.float64(scale), np.float64(mn)) - np.float64(x[i])
        best_mad = _fma(diff * diff, np.float64(w[i]), best_mad)
    for step in range(37):
        iscale = (_fma(np.float32(step), np.float32(0.05), np.float32(-0.9)) + np.float32(nmax)) / (mx - mn)
        sum_l = 0.0
        sum_l2 = 0.0
        sum_xl = 0.0
        for i in range(n):
            lv = max(0, min(nmax, _nearest(iscale, x[i] - mn)))
            Laux[i] = lv
            fl = np.float64(lv)
            wl = np.float64(w[i]) * fl
            sum_l += wl
            sum_l2 = _fma(wl, fl, sum_l2)
            sum_xl = _fma(wl, np.float64(x[i]), sum_xl)
        ok, this_scale, this_min = _solve(sum_w, sum_x, sum_l, sum_l2, sum_xl)
        if ok:
            mad = _fma(-sum_xl, this_scale + this_scale, sum_x2)
            mad = _fma(-sum_x, this_min + this_min, mad)
            mad = _fma(sum_l, (this_scale + this_scale) * this_min, mad)
            mad = _fma(sum_l2, this_scale * this_scale, mad)
            mad = _fma(this_min * this_min, sum_w, mad)
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = np.float32(this_scale)
                mn = np.float32(this_min)
    sum_l = 0.0
    sum_l2 = 0.0
    sum_xl = 0.0
    for i in range(n):
        fl = np.float64(L[i])
        wl = np.float64(w[i]) * fl
        sum_l += wl
        sum_l2 = _fma(fl, wl, sum_l2)
        sum_xl = _fma(wl, np.float64(x[i]), sum_xl)
    best = _score(np.float64(scale), np.float64(mn), sum_w, sum_x, sum_l, sum_l2, sum_xl)
    last_j = -1
    last_dir = 0
    for _ in range(nmax * n):
        gmax = np.float32(0.0)
        best_j = -1
        dr = 0
        for j in range(n):
            lj = np.int32(L[j])
            g = _fma(-scale, np.float32(lj), x[j]) - mn
            if g > 0 and lj < nmax and g > gmax:
                gmax = g
                best_j = j
                dr = 1
            elif g < 0 and lj > 0 and -g > gmax:
                gmax = -g
                best_j = j
                dr = -1
        if best_j < 0 or (best_j == last_j and dr == -last_dir):
            break
        wd = np.float64(w[best_j])
        sum_l = _fma(wd, np.float64(dr), sum_l)
        sum_l2 = _fma(wd, np.float64(2 * np.int32(L[best_j]) * dr + 1), sum_l2)
        sum_xl = _fma(wd * np.float64(x[best_j]), np.float64(dr), sum_xl)
        ok, this_scale, this_min = _solve(sum_w, sum_x, sum_l, sum_l2, sum_xl)
        if not ok or this_scale < 0:
            break
        score = _score(this_scale, this_min, sum_w, sum_x, sum_l, sum_l2, sum_xl)
        if score <= best:
            break
        best = score
        scale = np.float32(this_scale)
        mn = np.float32(this_min)
        L[best_j] += dr
        last_j = best_j
        last_dir = dr
    return scale, mn
