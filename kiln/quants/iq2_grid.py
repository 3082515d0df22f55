"""The lattice search machinery shared by the IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S and IQ1_M
quantizers (iq2_quantize.py): grid maps, neighbour lists, nearest-grid-point searches.

Facts from ik_llama.cpp (ggml-quants.c, iq2xs_init_impl, commit 8337e4cd3). Each of these
types codes a group of 8 values as one entry of a grid of 8-byte points (256, 512 or 1024
entries for the IQ2 types, 2048 for IQ1_S/IQ1_M) whose coordinates take 3 levels l = 0, 1,
2 (the searches model them as 2l+1 for IQ2, l-1 +- 1/8 for IQ1). 8 levels have the key
u = sum l_k << 2k. `kmap[u]` is the grid entry with those levels, or, when the point is
not on the grid, -(1 + offset) of its neighbour list in `neighbours`: the count, then the
grid entries whose squared distance to the point is one of the `nwant` smallest distances
(1 for IQ2_S, 2 for IQ2_XXS/IQ2_XS, 3 for IQ1), in order of (distance, entry). ggml also
lists points with a coordinate 3, which no quantizer looks up; they are left out here.

The grids are kiln's dequantization tables (iquants_tables.py), in ggml's entry order;
the maps are built from them on first use (a compiled pass, well under a second).

Also here: the small compiled helpers the IQ1/IQ2 kernels share (ggml's nearest_int with
its bit trick, the stable sort of ggml's qsort calls, in-order sums, loop stores).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .iquants_tables import IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID
from .legacy_quantize import _fma

KMAP_SIZE = 43692  # ggml's kmap_size: keys up to 0xAAAA (all levels 2) and a little more
FLT_MAX = np.float32(3.4028234663852886e38)
_MAGIC = np.float32(12582912.0)
ODD_VALUES = np.array([1.0, 3.0, 5.0], np.float32)  # IQ2 grid values 2l+1 (in units of d/8)


@intrinsic
def _f32_bits(typingctx, v):
    """The IEEE bits of a float32, as an int32."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(v), codegen


@njit(cache=True, inline="always", error_model="numpy")
def nearest_int(a, b):
    """ggml's nearest_int(a*b) as compiled (the product fused with the magic add), bit trick
    included, so NaN, Inf and huge values give the same (meaningless) integers as in C."""
    return (_f32_bits(_fma(a, b, _MAGIC)) & 0x007FFFFF) - 0x00400000


@njit(cache=True, inline="always", error_model="numpy")
def nearest_half(idd, v):
    """nearest_int(0.5f*(id*v - 1)): the level of v at inverse scale id on the odd grid."""
    return nearest_int(_fma(idd, v, np.float32(-1.0)), np.float32(0.5))


@njit(cache=True, error_model="numpy")
def _build(grid_l, nwant, kmap, neighbours, fill):
    """One pass over the off-grid keys (levels 0..2 only): count (fill False) or write the
    neighbour lists; returns the number of uint16 entries."""
    ngrid = grid_l.shape[0]
    d2 = np.empty(ngrid, np.int32)
    hist = np.zeros(73, np.int32)
    start = np.empty(73, np.int32)
    lv = np.empty(8, np.int32)
    pos = 0
    for u in range(KMAP_SIZE):
        if kmap[u] >= 0:
            continue
        ok = True
        for k in range(8):
            lv[k] = (u >> (2 * k)) & 3
            if lv[k] == 3:
                ok = False
        if not ok:
            continue
        for v in range(73):
            hist[v] = 0
        for j in range(ngrid):
            s = 0
            for k in range(8):
                t = np.int32(grid_l[j, k]) - lv[k]
                s += t * t
            d2[j] = s
            hist[s] += 1
        have = 0
        n = 0
        limit = -1
        for v in range(73):
            if hist[v]:
                have += 1
                n += hist[v]
                limit = v
                if have == nwant:
                    break
        if fill:
            kmap[u] = -(pos + 1)
            neighbours[pos] = n
            acc = pos + 1
            for v in range(limit + 1):
                start[v] = acc
                acc += hist[v]
            for j in range(ngrid):
                if d2[j] <= limit:
                    neighbours[start[d2[j]]] = j
                    start[d2[j]] += 1
        pos += n + 1
    return pos


def _levels(grid: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(grid.shape, np.uint8)
    for i, v in enumerate(values):
        out[grid == v] = i
    return out


@cache
def grid_tables(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(levels uint8 [ngrid, 8], kmap int32 [KMAP_SIZE], neighbours uint16) for kind
    "IQ2_XXS", "IQ2_XS", "IQ2_S" or "IQ1" (IQ1_S and IQ1_M share one grid and map)."""
    if kind == "IQ1":
        grid_l, nwant = _levels(IQ1S_GRID, (-1, 0, 1)), 3
    else:
        grid = {"IQ2_XXS": IQ2XXS_GRID, "IQ2_XS": IQ2XS_GRID, "IQ2_S": IQ2S_GRID}[kind]
        grid_l, nwant = _levels(grid, (8, 25, 43)), 1 if kind == "IQ2_S" else 2
    keys = (grid_l.astype(np.int64) << (2 * np.arange(8))).sum(axis=1)
    kmap = np.full(KMAP_SIZE, -1, np.int32)
    kmap[keys] = np.arange(grid_l.shape[0], dtype=np.int32)
    size = _build(grid_l, nwant, kmap, np.empty(0, np.uint16), False)
    neighbours = np.empty(size, np.uint16)
    _build(grid_l, nwant, kmap, neighbours, True)
    for a in (grid_l, kmap, neighbours):
        a.flags.writeable = False
    return grid_l, kmap, neighbours


# ---------------------------------------------------------------------------------------
# searches (compiled, used inside the quantizer kernels)
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always", error_model="numpy")
def group_key(L, base):
    u = 0
    for i in range(8):
        u |= np.int32(L[base + i]) << (2 * i)
    return u


@njit(cache=True, error_model="numpy")
def best_neighbour(neighbours, off, grid_l, xval, w, base, scale, values, L):
    """ggml's iq2_find_best_neighbour / iq1_find_best_neighbour2: of the entries listed at
    neighbours[off], the one closest to xval[base:base+8] (weights w) at this scale, the
    value of level l being values[l]; writes its levels to L[base:base+8]."""
    n = np.int32(neighbours[off])
    best = FLT_MAX
    gi = -1
    for j in range(1, n + 1):
        g = np.int32(neighbours[off + j])
        d2 = np.float32(0.0)
        for i in range(8):
            diff = _fma(scale, values[grid_l[g, i]], -xval[base + i])
            d2 = _fma(w[base + i] * diff, diff, d2)
        if d2 < best:
            best = d2
            gi = g
    if gi < 0:  # only with non-finite values, where ggml asserts (IQ1: after a full scan)
        gi = np.int32(neighbours[off + 1])
    for i in range(8):
        L[base + i] = grid_l[gi, i]
    return gi


@njit(cache=True, inline="always", error_model="numpy")
def lookup(kmap, neighbours, grid_l, L, base, xval, w, scale):
    """The grid entry of the levels L[base:base+8], or the best neighbour (IQ2 values)."""
    gi = kmap[group_key(L, base)]
    if gi < 0:
        gi = best_neighbour(neighbours, -gi - 1, grid_l, xval, w, base, scale, ODD_VALUES, L)
    return gi


@njit(cache=True, error_model="numpy")
def sort_order(v, n, idx):
    """idx[:n] = the order of v[:n] ascending, ties in index order (glibc's qsort with
    ggml's iq1_sort_helper is a stable merge sort for arrays this small)."""
    for j in range(n):
        idx[j] = j
    for j in range(1, n):
        t = idx[j]
        key = v[t]
        i = j - 1
        while i >= 0 and v[idx[i]] > key:
            idx[i + 1] = idx[i]
            i -= 1
        idx[i + 1] = t


@njit(cache=True, inline="always", error_model="numpy")
def fmax(a, b):
    """C's MAX(a, b) macro: a > b ? a : b."""
    return a if a > b else b


@njit(cache=True, error_model="numpy")
def sum_squares(x, start, n):
    """sum of x^2 in order, products rounded (GCC vectorized these sums with in-order adds)."""
    s = np.float32(0.0)
    for i in range(start, start + n):
        s += x[i] * x[i]
    return s


@njit(cache=True, inline="always", error_model="numpy")
def row_weights(qw, r):
    """The importance weights of row r: qw holds one row for all rows, or one per row."""
    return qw[r if qw.shape[0] > 1 else 0]


@njit(cache=True, inline="always", error_model="numpy")
def put16(out, o, v):
    """Little-endian 16-bit store into a byte array."""
    out[o] = v & 255
    out[o + 1] = (v >> 8) & 255


@njit(cache=True, error_model="numpy")
def fill(a, start, stop, v):
    """a[start:stop] = v, as a plain loop (cheaper to compile than numba's slice stores)."""
    for i in range(start, stop):
        a[i] = v


@njit(cache=True, error_model="numpy")
def copy(dst, src):
    """dst[:n] = src, n = len(src), as a plain loop."""
    for i in range(src.shape[0]):
        dst[i] = src[i]
