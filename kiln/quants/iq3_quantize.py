"""Quantization (float32 -> bytes) of IQ3_XXS and IQ3_S, with optional importance weights.

Both types store a super-block of 256 values as 8 sub-blocks of 32, each made of 8 groups
of 4. A group is one point of a lattice grid (iq3xxs_grid: 256 points, iq3s_grid: 512
points) whose 4 coordinates are odd levels 2l+1, l = 0..7, times the sub-block scale;
the signs are stored apart. The layouts are those of `iquants.py`:

- IQ3_XXS (98 bytes): f16 d; 64 grid indices; per sub-block a 32-bit word holding 4 x 7
  sign bits (the eighth sign of each group of 8 is implied: the number of negative values
  is even) and, in bits 28..31, the scale s, the sub-block scale being d*(0.5 + s)*0.5.
- IQ3_S (110 bytes): f16 d; 64 low index bytes; 8 bytes of 9th index bits; 32 sign bytes;
  4 scale bytes of two nibbles s, the sub-block scale being d*(1 + 2s).

The search (ik_llama.cpp's ggml-quants.c, quantize_row_iq3_xxs_impl and
quantize_row_iq3_s_impl; ik_llama.cpp did not change them) works on |x|, per sub-block:

- weights w = imatrix * sqrt(sigma2 + x^2), sigma2 = 2 * mean of x^2 over the
  super-block, or w = x^2 without an imatrix; the grid searches use sqrt(w).
- IQ3_XXS first makes the number of negative values in each group of 8 even, flipping
  the sign of the value with the smallest w*x^2 when it is odd.
- trial inverse scales id = (15 + 0.2*k)/max|x| for k = -15..15 (IQ3_XXS) or -9..9
  (IQ3_S): each group is rounded to levels l = round((id*|x| - 1)/2) clamped to 0..7;
  a group that is not a grid point is replaced by the weighted-nearest of its
  "neighbours" (the grid points at the 2 (256-grid) or 3 (512-grid) smallest distances
  from it, precomputed for all 4096 level patterns); the trial with the best
  least-squares fit (sum w*x*q)^2 / sum w*q^2 wins.
- if the winner had off-grid groups, they (IQ3_XXS) or all groups (IQ3_S) are rounded
  again at the winner's scale and the scale is refitted.
- d = max scale / 31 times a fudge factor (1.0125 for IQ3_XXS, 1.033 for IQ3_S) and
  s = round((scale/d - 1)/2) clamped to 0..15.

Arithmetic is float32 in the C code's order with fused multiply-adds where ik_llama.cpp's
x86 build (GCC, -O3 -march=native) fuses them (read off GCC 12's code), so the bytes are
ik_llama.cpp's. Two departures, both in degenerate sub-blocks:

- In IQ3_S a sub-block of all zeros made ggml skip advancing its index and sign
  pointers, so the following sub-blocks of that super-block were written one slot early
  (and read back wrong). Here every sub-block is written at its own place.
- In IQ3_XXS a sub-block whose weights are all zero keeps the levels of the previous
  sub-block of the row (ggml's buffer is reused); at the start of a row that buffer is
  uninitialized in ggml and holds zeros here.

The compiled kernels release the GIL, so callers may quantize row ranges in threads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from numba import njit

from ..errors import UnsupportedTypeError
from .iquants_tables import IQ3S_GRID, IQ3XXS_GRID
from .legacy_quantize import _FLT_MAX, _check, _f16_bytes
from .quantize_common import _fma, _nearest

QK_K = 256
KMAP_SIZE = 4096  # 4 levels of 3 bits
BLOCK_BYTES = {"IQ3_XXS": 98, "IQ3_S": 110}


# ---------------------------------------------------------------------------------------
# grid maps (ggml's iq3xs_init_impl)
# ---------------------------------------------------------------------------------------


@cache
def _grid_maps(grid_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quantizer's view of a grid, built from the dequantizer's table on first use:
    (values int8 [G, 4] of 2l+1, kmap int32 [4096], neighbours uint16 flat).

    kmap[u] for a pattern u = l0 | l1<<3 | l2<<6 | l3<<9 is the grid index of that point,
    or -(o + 1) where neighbours[o] is the count n of its neighbours and neighbours[o+1 :
    o+1+n] their grid indices, by increasing distance then index: every grid point whose
    squared distance is among the nwant smallest distinct ones (2 for the 256 grid, 3 for
    the 512 grid).
    """
    dequant_grid = IQ3XXS_GRID if grid_size == 256 else IQ3S_GRID
    values = np.unique(dequant_grid)
    if values.size != 8:
        raise RuntimeError(f"iq3 grid of {grid_size} points has {values.size} levels, expected 8")
    levels = np.searchsorted(values, dequant_grid).astype(np.int32)  # [G, 4] in 0..7
    shifts = 3 * np.arange(4, dtype=np.int32)
    kmap = np.full(KMAP_SIZE, -1, np.int32)
    kmap[(levels << shifts).sum(axis=1)] = np.arange(grid_size, dtype=np.int32)
    pos = 2 * levels + 1
    off = np.flatnonzero(kmap < 0)
    off_pos = 2 * ((off[:, None] >> shifts) & 7) + 1  # [n_off, 4]
    d2 = ((pos[None, :, :] - off_pos[:, None, :]) ** 2).sum(axis=2)  # [n_off, G]
    order = np.argsort(d2, axis=1, kind="stable")  # by distance, then grid index
    sorted_d2 = np.take_along_axis(d2, order, axis=1)
    rank = np.concatenate(
        [np.zeros((off.size, 1), np.int32), np.cumsum(sorted_d2[:, 1:] != sorted_d2[:, :-1], axis=1)], axis=1
    )
    keep = rank < (2 if grid_size == 256 else 3)
    counts = keep.sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(counts + 1)[:-1]])
    neighbours = np.empty(int((counts + 1).sum()), np.uint16)
    neighbours[starts] = counts
    slot = starts[:, None] + 1 + np.arange(grid_size)[None, :]
    neighbours[slot[keep]] = order[keep]
    kmap[off] = -(starts + 1)
    return pos.astype(np.int8), kmap, neighbours


# ---------------------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _level(iscale, v):
    """nearest_int(0.5f*(iscale*v - 1)) clamped to 0..7, the inner product-add fused."""
    return max(0, min(7, _nearest(np.float32(0.5), _fma(iscale, v, np.float32(-1.0)))))


@njit(cache=True, inline="always")
def _best_neighbour(neighbours, start, grid, xval, waux, o, scale, L):
    """ggml's iq3_find_best_neighbour for the group at xval[o : o+4]: the neighbour with the
    smallest sum waux*(scale*q - x)^2 (first one on ties); its levels go to L[o : o+4]."""
    best_d2 = np.float32(_FLT_MAX)
    best = np.int32(neighbours[start + 1])
    for j in range(1, np.int32(neighbours[start]) + 1):
        g = np.int32(neighbours[start + j])
        d2 = np.float32(0.0)
        for i in range(4):
            diff = _fma(scale, np.float32(grid[g, i]), -xval[o + i])
            d2 = _fma(waux[o + i] * diff, diff, d2)
        if d2 < best_d2:
            best_d2 = d2
            best = g
    for i in range(4):
        L[o + i] = (grid[best, i] - 1) // 2
    return best


@njit(cache=True, inline="always")
def _group_on_grid(iscale, scale, xval, waux, o, grid, kmap, neighbours, L):
    """Round the group at o to levels at 1/iscale; off the grid take the best neighbour at
    scale. Returns (on the grid, grid index); L[o : o+4] gets the levels."""
    u = 0
    for i in range(4):
        lv = _level(iscale, xval[o + i])
        L[o + i] = lv
        u |= lv << (3 * i)
    g = kmap[u]
    if g >= 0:
        return True, g
    return False, _best_neighbour(neighbours, -g - 1, grid, xval, waux, o, scale, L)


@njit(cache=True, inline="always")
def _fit(weight, xval, L):
    """sum w*x*q and sum w*q^2 over a sub-block, q = 2l + 1, both running sums fused."""
    sumqx = np.float32(0.0)
    sumq2 = np.float32(0.0)
    for i in range(32):
        w = weight[i]
        q = np.float32(2 * np.int32(L[i]) + 1)
        sumqx = _fma(w * xval[i], q, sumqx)
        sumq2 = _fma(w * q, q, sumq2)
    return sumqx, sumq2


@njit(cache=True)
def _search(
    xval, weight, waux, mx, nsteps, regroup_all, grid, kmap, neighbours, L, Laux, on_grid, on_grid_aux
):
    """The scale of one sub-block (xval >= 0 but for IQ3_XXS's parity flip); L gets its levels.

    L and on_grid keep their contents when no trial fits (all weights zero), as in ggml.
    """
    best = np.float32(0.0)
    scale = mx / np.float32(15.0)
    for step in range(-nsteps, nsteps + 1):
        iscale = _fma(np.float32(step), np.float32(0.2), np.float32(15.0)) / mx
        this_scale = np.float32(1.0) / iscale
        for k in range(8):
            on_grid_aux[k] = _group_on_grid(
                iscale, this_scale, xval, waux, 4 * k, grid, kmap, neighbours, Laux
            )[0]
        sumqx, sumq2 = _fit(weight, xval, Laux)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = Laux
            on_grid[:] = on_grid_aux
    n_off = 0
    for k in range(8):
        if not on_grid[k]:
            n_off += 1
    if n_off > 0 and scale > 0:
        iscale = np.float32(1.0) / scale
        for k in range(8):
            if on_grid[k] and not regroup_all:
                continue
            _group_on_grid(iscale, scale, xval, waux, 4 * k, grid, kmap, neighbours, L)
        sumqx, sumq2 = _fit(weight, xval, L)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale


@njit(cache=True)
def _superblock_weights(xbl, qw, use_qw, weight):
    """weight[j] = qw[j]*sqrt(sigma2 + x_j^2), sigma2 = 2*mean of x^2 (the squares summed in
    order, unfused), or x_j^2 without importance weights."""
    if not use_qw:
        for j in range(QK_K):
            weight[j] = xbl[j] * xbl[j]
        return
    sumx2 = np.float32(0.0)
    for j in range(QK_K):
        sumx2 += xbl[j] * xbl[j]
    sigma2 = (sumx2 + sumx2) * np.float32(1.0 / QK_K)
    for j in range(QK_K):
        weight[j] = qw[j] * np.sqrt(_fma(xbl[j], xbl[j], sigma2))


@njit(cache=True, inline="always")
def _scale_nibble(iscale, scale):
    return max(0, min(15, _nearest(np.float32(0.5), _fma(iscale, scale, np.float32(-1.0)))))


@njit(cache=True, inline="always")
def _fold_signs(xb, wb, xval, k, even):
    """xval[8k : 8k+8] = |x| of the group of 8 at 8k; returns its sign bits (bit i: x_i < 0).

    With `even` (IQ3_XXS, which stores 7 signs and implies the eighth) an odd count of
    negatives is made even by flipping the value with the smallest w*x^2 (the first on ties)."""
    s = 0
    nflip = 0
    for i in range(8):
        v = xb[8 * k + i]
        if v >= 0:
            xval[8 * k + i] = v
        else:
            xval[8 * k + i] = -v
            nflip += 1
            s |= 1 << i
    if even and nflip % 2:
        imin = 0
        vmin = wb[8 * k] * xb[8 * k] * xb[8 * k]
        for i in range(1, 8):
            a = wb[8 * k + i] * xb[8 * k + i] * xb[8 * k + i]
            if a < vmin:
                vmin = a
                imin = i
        xval[8 * k + imin] = -xval[8 * k + imin]
        s ^= 1 << imin
    return s


@njit(cache=True, nogil=True)
def _rows_iq3(x, qw, use_qw, xxs, grid, kmap, neighbours, d_out, q_out):
    """IQ3_XXS (xxs) or IQ3_S rows: d_out [n_rows, nbl] gets the f32 value of d, q_out
    [n_rows, nbl, 96 | 108] the rest of each block (IQ3_XXS: 64 indices and 8 scale-and-sign
    words; IQ3_S: 64 low index bytes, 8 qh bytes, 32 sign bytes and 4 scale bytes)."""
    n_rows, n = x.shape
    nbl = n // QK_K
    weight = np.empty(QK_K, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    L = np.zeros(32, np.int8)
    Laux = np.zeros(32, np.int8)
    on_grid = np.zeros(8, np.bool_)
    on_grid_aux = np.zeros(8, np.bool_)
    signs = np.zeros(4, np.int32)
    scales = np.zeros(8, np.float32)
    sign_mask = 127 if xxs else 255
    for r in range(n_rows):
        L[:] = 0
        on_grid[:] = False
        for ibl in range(nbl):
            xbl = x[r, ibl * QK_K : (ibl + 1) * QK_K]
            q = q_out[r, ibl]
            q[:] = 0
            _superblock_weights(xbl, qw[ibl * QK_K : (ibl + 1) * QK_K] if use_qw else qw, use_qw, weight)
            max_scale = np.float32(0.0)
            for ib in range(8):
                xb = xbl[32 * ib : 32 * ib + 32]
                wb = weight[32 * ib : 32 * ib + 32]
                for i in range(32):
                    waux[i] = np.sqrt(wb[i])
                for k in range(4):
                    signs[k] = _fold_signs(xb, wb, xval, k, xxs) & sign_mask
                mx = xval[0]
                for i in range(1, 32):
                    if xval[i] > mx:
                        mx = xval[i]
                if mx < np.float32(1e-8) if xxs else mx == 0:
                    scales[ib] = 0
                    L[:] = 0
                    continue
                if not xxs:
                    on_grid[:] = False
                scale = _search(
                    xval,
                    wb,
                    waux,
                    mx,
                    15 if xxs else 9,
                    not xxs,
                    grid,
                    kmap,
                    neighbours,
                    L,
                    Laux,
                    on_grid,
                    on_grid_aux,
                )
                if scale < 0:  # "should never happen" (ggml): flip the signs instead
                    scale = -scale
                    for k in range(4):
                        signs[k] = ~signs[k] & sign_mask
                for k in range(8):
                    u = 0
                    for i in range(4):
                        u |= np.int32(L[4 * k + i]) << (3 * i)
                    g = kmap[u]
                    q[8 * ib + k] = g & 255
                    if not xxs:
                        q[64 + ib] |= (g >> 8) << k
                if xxs:
                    word = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (signs[3] << 21)
                    for b in range(4):
                        q[64 + 4 * ib + b] = (word >> (8 * b)) & 255
                else:
                    for k in range(4):
                        q[72 + 4 * ib + k] = signs[k]
                scales[ib] = scale
                max_scale = max(max_scale, scale)
            if max_scale == 0:
                if xxs:
                    q[:] = 0
                d_out[r, ibl] = 0
                continue
            d = max_scale / np.float32(31.0)
            d_out[r, ibl] = d * (np.float32(1.0125) if xxs else np.float32(1.033))
            iscale = np.float32(1.0) / d
            for ib in range(8):
                nibble = _scale_nibble(iscale, scales[ib])
                if xxs:
                    q[67 + 4 * ib] |= nibble << 4
                else:
                    q[104 + ib // 2] |= nibble << (4 * (ib % 2))


# ---------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------


def _quantize(x, imatrix, type_name, name):
    x, qw = _check(x, imatrix, type_name, name)
    n_rows, n = x.shape
    if n % QK_K:
        raise UnsupportedTypeError(
            f"{name}: row size {n} not divisible by block size {QK_K} for {type_name}; "
            "keep this tensor in a type with smaller blocks (Q8_0, Q6_0, IQ4_NL, Q5_0, Q4_0 use 32) or in F16"
        )
    xxs = type_name == "IQ3_XXS"
    grid, kmap, neighbours = _grid_maps(256 if xxs else 512)
    d = np.zeros((n_rows, n // QK_K), np.float32)
    q = np.zeros((n_rows, n // QK_K, BLOCK_BYTES[type_name] - 2), np.uint8)
    use_qw = qw is not None
    _rows_iq3(x, qw if use_qw else np.empty(0, np.float32), use_qw, xxs, grid, kmap, neighbours, d, q)
    return np.concatenate([_f16_bytes(d), q], axis=-1).reshape(n_rows, -1)


def quantize_iq3_xxs(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ3_XXS (3.06 bits per weight): 256-point grid, 4-bit sub-block scales, 7 signs per 8."""
    return _quantize(x, imatrix, "IQ3_XXS", name)


def quantize_iq3_s(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ3_S (3.44 bits per weight): 512-point grid, 4-bit sub-block scales, all signs."""
    return _quantize(x, imatrix, "IQ3_S", name)


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "IQ3_XXS": quantize_iq3_xxs,
    "IQ3_S": quantize_iq3_s,
}
