"""Quantization (float32 -> bytes) of ik_llama.cpp's trellis types IQ1_KT, IQ2_KT, IQ3_KT
and IQ4_KT, with optional importance weights; the layouts are those `trellis.py` reads.

A trellis value group (8 values; 4 for IQ4_KT) is the output of the generator of
`trellis.py` for one seed, so quantizing a group means finding the codebook entry
(one per seed: 8192 for IQ1_KT, 65536 for IQ2_KT/IQ3_KT, 2 x 32768 for IQ4_KT) nearest
to it in the weighted squared distance. The search is ik_llama.cpp's
(iqk_quantize.cpp, class QuantizerIQKT), pruned exactly as there:

- The codebook is split into clusters by the sign pattern of its entries: 256 bins
  (bit k set when value k lies above the middle of its range; for IQ3_KT, whose
  values are |v|, above its median) for groups of 8, and 625 bins (5 levels per value,
  bounds -48/-16/16/48) for IQ4_KT's groups of 4. Each entry then joins its `nn`
  nearest bin centroids (nn = 32 for IQ1_KT, 8 for IQ2_KT/IQ3_KT, 6 for IQ4_KT), and
  every list is padded to a multiple of 8 with the nearest entries not yet in it.
- For a group x and a trial scale d the bin of x/d is computed and only its list is
  searched (the whole codebook when the list is empty) for the minimum of
  sum_k w_k*(q_k - x_k/d)^2, summed in the order of ik's AVX2 horizontal sum; ties go
  to the lowest SIMD lane, then to the earlier entry, as there.

Per 32-value block a few trial scales are tried (both signs, except for IQ3_KT which
codes |x| plus sign bits), each followed by a least-squares block scale; then the row
scale is searched (19 trials) over the block scales coded as IQ4_K non-linear 4-bit
values (IQ1_KT, IQ2_KT), plain 4-bit values (IQ3_KT) or 7-bit values minus 64 with
a second codebook offset by 32768 per block (IQ4_KT); a final pass re-searches every
group at its coded scale and refits the row scale (times 1.07 for IQ1_KT).

Weights: per 256-value super-block sigma2 = 2*mean(x^2); w = imatrix*sqrt(sigma2 + x^2),
or 0.25*sigma2 + x^2 without an imatrix; (near-)zero blocks get w = 1e-4.

All arithmetic is float32 in ik_llama.cpp's order, with fused multiply-adds where GCC 12
(-O3 -march=native) fused them and plain in-order sums where it vectorized a loop (the
row-scale trials of IQ3_KT), so the bytes are ik_llama.cpp's own: on the golden set, and
on random inputs with and without imatrix against ik's functions built that way. One
detail differs between builds: the golden set's binary computed the imatrix weights'
sigma2 + x^2 unfused for IQ1_KT, IQ2_KT and IQ4_KT and fused for IQ3_KT
(`_FUSED_WEIGHTS`, read off its outputs), where a plain build fuses all four.

The codebooks and cluster lists are built on first use (a fraction of a second each)
and kept for the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from numba import njit

from ..errors import UnsupportedTypeError
from .legacy_quantize import _check
from .quantize_common import _fma, _nearest, nl_best_index
from .trellis import BLOCK_BYTES, IQ4K_VALUES, QK_K, SEED_OFFSET, trellis_values

F32 = np.float32
_INF = np.float32(np.inf)
_BLOCK = 32  # values per block scale

# sigma2 + x*x fused (True) or not, per type: how ik_llama.cpp's build computed the weights.
_FUSED_WEIGHTS = {"IQ1_KT": False, "IQ2_KT": False, "IQ3_KT": True, "IQ4_KT": False}


# ---------------------------------------------------------------------------------------
# the codebooks and their clusters
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _insert(best, ibest, count, dist2, i):
    """Insert (dist2, i) into the ascending list best[:count] if it is among its count smallest
    (strict <: an equal distance stays behind the earlier entry)."""
    if not dist2 < best[count - 1]:
        return
    for j in range(count):
        if dist2 < best[j]:
            for jj in range(count - 1, j, -1):
                best[jj] = best[jj - 1]
                ibest[jj] = ibest[jj - 1]
            best[j] = dist2
            ibest[j] = i
            return


@njit(cache=True)
def _dist2(vals, ip, centroids, ic):
    d2 = np.float32(0.0)
    for k in range(vals.shape[1]):
        dv = vals[ip, k] - centroids[ic, k]
        d2 = _fma(dv, dv, d2)
    return d2


@njit(cache=True)
def _finalize_clusters(vals, centroids, nn):
    """ik's finalize_clusters: each entry joins its nn nearest centroids; lists padded to 8.

    Returns (offsets [ncl + 1], members): cluster c holds members[offsets[c]:offsets[c+1]],
    its own entries in increasing order, then the padding by increasing (distance, entry).
    """
    n, g = vals.shape
    ncl = centroids.shape[0]
    ct = np.ascontiguousarray(centroids.T)
    which = np.empty((n, nn), np.int32)
    best = np.empty(nn, np.float32)
    counts = np.zeros(ncl, np.int64)
    dist = np.empty(ncl, np.float32)
    for ip in range(n):
        dist[:] = 0
        for k in range(g):  # all centroids at once (vectorizes); same sums as _dist2
            v = vals[ip, k]
            ck = ct[k]
            for ic in range(ncl):
                dv = v - ck[ic]
                dist[ic] = _fma(dv, dv, dist[ic])
        best[:] = _INF
        nearest = which[ip]
        for ic in range(ncl):
            _insert(best, nearest, nn, dist[ic], ic)
        for j in range(nn):
            counts[nearest[j]] += 1
    offsets = np.zeros(ncl + 1, np.int64)
    offsets[1:] = np.cumsum((counts + 7) // 8 * 8)
    members = np.empty(offsets[ncl], np.int32)
    fill = offsets[:ncl].copy()
    for ip in range(n):
        for j in range(nn):
            ic = which[ip, j]
            members[fill[ic]] = ip
            fill[ic] += 1
    top_d = np.empty(8, np.float32)
    top_i = np.empty(8, np.int32)
    inside = np.zeros(n, np.bool_)
    for ic in range(ncl):
        nadd = offsets[ic + 1] - fill[ic]
        if nadd == 0:
            continue
        inside[members[offsets[ic] : fill[ic]]] = True
        top_d[:] = _INF
        for ip in range(n):
            if not inside[ip]:
                _insert(top_d, top_i, nadd, _dist2(vals, ip, centroids, ic), ip)
        inside[members[offsets[ic] : fill[ic]]] = False
        members[fill[ic] : offsets[ic + 1]] = top_i[:nadd]
    return offsets, members


def _bins8(vals: np.ndarray, is_abs: bool) -> tuple[np.ndarray, np.ndarray]:
    """ik's cluster_points for 256 clusters of 8-value groups: thresholds and bin centroids."""
    if is_abs:
        p = np.sort(vals.astype(np.int32), axis=0)
        n = vals.shape[0]
        mid = (p[n // 2] + p[n // 2 - 1]).astype(F32) * F32(0.5)
    else:
        mid = F32(0.5) * (vals.min(axis=0) + vals.max(axis=0))
    u = ((vals > mid) << np.arange(8)).sum(axis=1)
    return mid, _centroids(vals, u, 256)


def _bins4(vals: np.ndarray) -> np.ndarray:
    """ik's cluster_points for 625 clusters of 4-value groups (an empty bin keeps centroid 0)."""
    b = np.searchsorted(np.array([-48, -16, 16, 48], F32), vals, side="right")
    u = (b * 5 ** np.arange(4)).sum(axis=1)
    return _centroids(vals, u, 625)


def _centroids(vals: np.ndarray, u: np.ndarray, ncl: int) -> np.ndarray:
    counts = np.bincount(u, minlength=ncl)
    sums = np.zeros((ncl, vals.shape[1]), np.float64)  # sums of small integers: exact
    np.add.at(sums, u, vals)
    out = np.zeros((ncl, vals.shape[1]), F32)
    nz = counts > 0
    out[nz] = sums[nz].astype(F32) / counts[nz, None].astype(F32)
    return out


class _Codebook:
    """One QuantizerIQKT: its entries and, for the search, its cluster lists.

    `args` is the tuple the kernels take: vals [n, group] (the entries), cv [group, m]
    (the members' values, cluster after cluster, one row per position in the group),
    offsets [ncl + 2] (cluster c is columns offsets[c]:offsets[c+1]; the last cluster is
    the whole codebook in order, searched when a bin's list is empty), members [m] (the
    entry of each column) and mid [group] (the bin thresholds of 8-value groups).
    """

    def __init__(self, bits: int, group: int, is_abs: bool, nn: int, offset: int):
        vals = trellis_values(np.arange(1 << bits, dtype=np.uint32), group, offset)
        if is_abs:
            vals = np.abs(vals)
        if group == 8:
            mid, centroids = _bins8(vals, is_abs)
        else:
            mid, centroids = np.zeros(4, F32), _bins4(vals)
        offsets, members = _finalize_clusters(vals, centroids, nn)
        n = vals.shape[0]
        offsets = np.append(offsets, offsets[-1] + n)
        members = np.concatenate([members, np.arange(n, dtype=np.int32)])
        self.args = (vals, np.ascontiguousarray(vals[members].T), offsets, members, mid)
        self.buf_len = int(np.diff(offsets).max())


_SPECS = {  # num_bits, group size, |values|, neighbours, seed offset (iqk_quantize.cpp)
    "IQ1_KT": (13, 8, False, 32, SEED_OFFSET),
    "IQ2_KT": (16, 8, False, 8, SEED_OFFSET),
    "IQ3_KT": (16, 8, True, 8, SEED_OFFSET),
    "IQ4_KT": (15, 4, False, 6, SEED_OFFSET),
    "IQ4_KT+": (15, 4, False, 6, SEED_OFFSET + 32768),
}
_CODEBOOKS: dict[str, _Codebook] = {}
_CODEBOOK_LOCK = threading.Lock()


def _codebook(key: str) -> _Codebook:
    with _CODEBOOK_LOCK:
        cb = _CODEBOOKS.get(key)
        if cb is None:
            cb = _CODEBOOKS[key] = _Codebook(*_SPECS[key])
        return cb


# ---------------------------------------------------------------------------------------
# the search of one block (QuantizerIQKT::find_best_match / find_best_scale)
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _min2(a, b):
    return a if a < b else b


@njit(cache=True, inline="always")
def _argmin(buf, npt, group, first):
    """Position of the minimum of buf[:npt] (npt a multiple of 8) as ik's AVX2 loop finds it.

    There, lane l of a register takes positions 8c + l and keeps its first minimum (strict
    <), then the lanes are compared in register order with strict <: so the winner is the
    first position of the minimum in the first lane (in register order) holding it. A
    register holds the 8 entries of a chunk in order for groups of 8, entries
    0,2,4,6,1,3,5,7 for groups of 4. Here a chunk is looked at only when its minimum
    reaches the best so far; `first` [8] gets each lane's first position of that best.
    """
    best = _INF
    first[:] = -1
    for ci in range(npt // 8):
        c = np.uint64(8 * ci)  # unsigned: no negative-index wraparound code in the loop
        m01, m23 = _min2(buf[c], buf[c + 1]), _min2(buf[c + 2], buf[c + 3])
        m45, m67 = _min2(buf[c + 4], buf[c + 5]), _min2(buf[c + 6], buf[c + 7])
        m8 = _min2(_min2(m01, m23), _min2(m45, m67))
        if m8 <= best:
            if m8 < best:
                best = m8
                first[:] = -1
            for lane in range(8):
                if buf[c + np.uint64(lane)] == best and first[lane] < 0:
                    first[lane] = np.int64(c) + lane
    for k in range(8):
        lane = k if group == 8 else (2 * k if k < 4 else 2 * k - 7)
        if first[lane] >= 0:
            return first[lane]
    return 0  # no finite score: ik_llama.cpp aborts


@njit(cache=True, inline="always")
def _cluster(offsets, u):
    """Columns of bin u's list, or of the whole codebook when it is empty (ik_llama.cpp
    does that for groups of 8; for groups of 4 it asserts, which its codebooks never hit)."""
    start, end = offsets[u], offsets[u + 1]
    if start == end:
        start, end = offsets[-2], offsets[-1]
    return start, end


@njit(cache=True, nogil=True)
def _match8(d, xb, wb, cb, buf, out):
    """find_best_match for the 4 groups of 8 of a block at scale d: out[0..3] = entries."""
    if d == 0:
        out[:4] = 0
        return
    _, cv, offsets, members, mid = cb
    idd = np.float32(1.0) / d
    first = np.empty(8, np.int64)
    for g in range(4):
        x, w = xb[8 * g : 8 * g + 8], wb[8 * g : 8 * g + 8]
        s0, s1, s2, s3 = idd * x[0], idd * x[1], idd * x[2], idd * x[3]
        s4, s5, s6, s7 = idd * x[4], idd * x[5], idd * x[6], idd * x[7]
        u = 0
        for k in range(8):
            if idd * x[k] > mid[k]:
                u |= 1 << k
        start, end = _cluster(offsets, u)
        c0, c1, c2, c3 = cv[0, start:end], cv[1, start:end], cv[2, start:end], cv[3, start:end]
        c4, c5, c6, c7 = cv[4, start:end], cv[5, start:end], cv[6, start:end], cv[7, start:end]
        w0, w1, w2, w3, w4, w5, w6, w7 = w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]
        for m in range(end - start):  # unit-stride loads from 0: this loop vectorizes
            t0, t1, t2, t3 = c0[m] - s0, c1[m] - s1, c2[m] - s2, c3[m] - s3
            t4, t5, t6, t7 = c4[m] - s4, c5[m] - s5, c6[m] - s6, c7[m] - s7
            e0, e1, e2, e3 = w0 * (t0 * t0), w1 * (t1 * t1), w2 * (t2 * t2), w3 * (t3 * t3)
            e4, e5, e6, e7 = w4 * (t4 * t4), w5 * (t5 * t5), w6 * (t6 * t6), w7 * (t7 * t7)
            buf[m] = ((e0 + e4) + (e2 + e6)) + ((e1 + e5) + (e3 + e7))
        out[g] = members[start + _argmin(buf, end - start, 8, first)]


@njit(cache=True, inline="always")
def _bin5(v):
    return 0 if v < -48 else 1 if v < -16 else 2 if v < 16 else 3 if v < 48 else 4


@njit(cache=True, nogil=True)
def _match4(d, xb, wb, cb, buf, out):
    """find_best_match for the 8 groups of 4 of a block at scale d: out[0..7] = entries."""
    if d == 0:
        out[:8] = 0
        return
    _, cv, offsets, members, _ = cb
    idd = np.float32(1.0) / d
    first = np.empty(8, np.int64)
    for g in range(8):
        x, w = xb[4 * g : 4 * g + 4], wb[4 * g : 4 * g + 4]
        s0, s1, s2, s3 = idd * x[0], idd * x[1], idd * x[2], idd * x[3]
        start, end = _cluster(offsets, _bin5(s0) + 5 * _bin5(s1) + 25 * _bin5(s2) + 125 * _bin5(s3))
        c0, c1, c2, c3 = cv[0, start:end], cv[1, start:end], cv[2, start:end], cv[3, start:end]
        w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
        for m in range(end - start):
            t0, t1, t2, t3 = c0[m] - s0, c1[m] - s1, c2[m] - s2, c3[m] - s3
            buf[m] = (w0 * (t0 * t0) + w2 * (t2 * t2)) + (w1 * (t1 * t1) + w3 * (t3 * t3))
        out[g] = members[start + _argmin(buf, end - start, 4, first)]


@njit(cache=True, inline="always")
def _hsum8(a):
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))


@njit(cache=True, nogil=True)
def _trial(d, xb, wb, cb, buf, cand, acc):
    """find_best_match at scale d, then find_best_scale: (sumqx/sumq2, sumqx^2/sumq2) of the
    entries found (in cand), from eight fused lane sums and ik's horizontal sum."""
    vals = cb[0]
    group = vals.shape[1]
    if group == 8:
        _match8(d, xb, wb, cb, buf, cand)
    else:
        _match4(d, xb, wb, cb, buf, cand)
    acc[:] = 0
    for e in range(_BLOCK):
        q = vals[cand[e // group], e % group]
        qw = q * wb[e]
        k = e & 7
        acc[k] = _fma(qw, xb[e], acc[k])
        acc[8 + k] = _fma(qw, q, acc[8 + k])
    sumqx = _hsum8(acc[:8])
    sumq2 = _hsum8(acc[8:])
    if sumq2 > 0:
        return sumqx / sumq2, sumqx * sumqx / sumq2
    return np.float32(0.0), np.float32(0.0)


# ---------------------------------------------------------------------------------------
# shared pieces of the row quantizers
# ---------------------------------------------------------------------------------------


@njit(cache=True)
def _set_weights(x, qw, use_qw, fused, w):
    """QuantizerIQKT::set_weights with sigma2 scale 2 over each super-block of a row.

    `fused`: the imatrix loop as compiled scalar (x*x fused into its sums) or as
    vectorized (x*x rounded once, then added): see `_FUSED_WEIGHTS`.
    """
    eps = np.float32(1e-14)
    for s in range(0, x.shape[0], QK_K):
        xs, ws = x[s : s + QK_K], w[s : s + QK_K]
        sumx2 = np.float32(0.0)
        for j in range(QK_K):
            sumx2 += xs[j] * xs[j]
        if sumx2 < eps * np.float32(QK_K):
            ws[:] = np.float32(1e-4)
            continue
        sigma2 = (sumx2 + sumx2) * np.float32(1.0 / QK_K)
        if not use_qw:
            quarter = np.float32(0.25) * sigma2
            for j in range(QK_K):
                ws[j] = _fma(xs[j], xs[j], quarter)
            continue
        for b in range(0, QK_K, _BLOCK):
            sumwx = sumw2 = sumb = np.float32(0.0)
            for j in range(b, b + _BLOCK):
                x2 = xs[j] * xs[j]
                if fused:
                    wj = qw[s + j] * np.sqrt(_fma(xs[j], xs[j], sigma2))
                    sumwx = _fma(wj, abs(xs[j]), sumwx)
                    sumw2 = _fma(wj, wj, sumw2)
                    sumb = _fma(xs[j], xs[j], sumb)
                else:
                    wj = qw[s + j] * np.sqrt(sigma2 + x2)
                    sumwx += wj * abs(xs[j])
                    sumw2 += wj * wj
                    sumb += x2
                ws[j] = wj
            if sumb < eps or sumw2 < eps or sumwx < eps:
                ws[b : b + _BLOCK] = np.float32(1e-4)


@njit(cache=True)
def _amax(x):
    m = np.float32(0.0)
    for v in x:
        m = max(m, abs(v))
    return m


@njit(cache=True)
def _accumulate(xb, wb, vals, idx, ls, sums):
    """sums += (sum w*x*q, sum w*q*q) over a block, q = entry value * ls, fused in order."""
    group = vals.shape[1]
    for e in range(_BLOCK):
        q = vals[idx[e // group], e % group] * ls
        sums[0] = _fma(wb[e] * xb[e], q, sums[0])
        sums[1] = _fma(wb[e] * q, q, sums[1])


@njit(cache=True)
def _iq4k_row_scale(x, w, scales, idx_all, vals, max_scale):
    """The row scale of IQ1_KT/IQ2_KT: 19 trials of id around -127/max_scale, block scales
    coded as the nearest IQ4_K value, least-squares fit over the row."""
    d = max_scale / IQ4K_VALUES[0]
    best = np.float32(0.0)
    sums = np.zeros(2, np.float32)
    for itry in range(-9, 10):
        idd = np.float32(itry - 127) / max_scale
        sums[:] = 0
        for ib in range(scales.shape[0]):
            dl = IQ4K_VALUES[nl_best_index(4, 0, idd * scales[ib])]
            o = ib * _BLOCK
            _accumulate(x[o : o + _BLOCK], w[o : o + _BLOCK], vals, idx_all[4 * ib : 4 * ib + 4], dl, sums)
        sumqx, sumq2 = sums[0], sums[1]
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(cache=True)
def _keep_better(xb, wb, vals, dl, prev, new):
    """The final pass of IQ1_KT/IQ2_KT: keep the previous entries when their error is lower."""
    mse1 = mse2 = np.float32(0.0)
    for e in range(_BLOCK):
        d1 = _fma(-dl, vals[prev[e // 8], e % 8], xb[e])
        d2 = _fma(-dl, vals[new[e // 8], e % 8], xb[e])
        mse1 = _fma(wb[e] * d1, d1, mse1)
        mse2 = _fma(wb[e] * d2, d2, mse2)
    if mse1 < mse2:
        new[:4] = prev[:4]
    else:
        prev[:4] = new[:4]


# ---------------------------------------------------------------------------------------
# the row quantizers
# ---------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rows_iq12(x, qw, use_qw, fused, is_iq1, cb, buf_len, d_out, out):
    """quantize_row_iq1_kt_impl / quantize_row_iq2_kt_impl over all rows."""
    vals = cb[0]
    n_rows, n = x.shape
    nblk = n // _BLOCK
    w = np.empty(n, np.float32)
    scales = np.empty(nblk, np.float32)
    idx_all = np.empty(n // 8, np.int32)
    cand = np.empty(8, np.int32)
    buf = np.empty(buf_len, np.float32)
    acc = np.empty(16, np.float32)
    codes = np.empty(nblk, np.int32)
    sums = np.zeros(2, np.float32)
    for r in range(n_rows):
        xr, row = x[r], out[r]
        _set_weights(xr, qw, use_qw, fused, w)
        amax_row = _amax(xr)
        amax_scale = max_scale = np.float32(0.0)
        row[:] = 0
        d_out[r] = 0
        for ib in range(nblk):
            xb, wb = xr[ib * _BLOCK : ib * _BLOCK + _BLOCK], w[ib * _BLOCK : ib * _BLOCK + _BLOCK]
            idx = idx_all[ib * 4 : ib * 4 + 4]
            amax = _amax(xb)
            scales[ib] = 0
            idx[:] = 0
            if amax < np.float32(1e-16):
                continue
            scale_0 = max(np.float32(90.0), np.float32(124.0) * amax / amax_row)
            dp, score_p = _trial(amax / scale_0, xb, wb, cb, buf, cand[:4], acc)
            dm, score_m = _trial(-amax / scale_0, xb, wb, cb, buf, cand[4:], acc)
            if score_p > score_m:
                scales[ib], idx[:] = dp, cand[:4]
            else:
                scales[ib], idx[:], score_p = dm, cand[4:], score_m
            if is_iq1:  # a second pair of trials 8 steps further
                scale_0 -= np.float32(8.0)
                dp1, score_p1 = _trial(amax / scale_0, xb, wb, cb, buf, cand[:4], acc)
                dm1, score_m1 = _trial(-amax / scale_0, xb, wb, cb, buf, cand[4:], acc)
                if score_p1 > score_p or score_m1 > score_p:
                    if score_p1 > score_m1:
                        scales[ib], idx[:] = dp1, cand[:4]
                    else:
                        scales[ib], idx[:] = dm1, cand[4:]
            if abs(scales[ib]) > amax_scale:
                amax_scale, max_scale = abs(scales[ib]), scales[ib]
        if max_scale == 0:
            continue
        d = _iq4k_row_scale(xr, w, scales, idx_all, vals, max_scale)
        idd = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        for ib in range(nblk):
            codes[ib] = nl_best_index(4, 0, idd * scales[ib])
            blk, j = ib // 8, ib % 8
            if is_iq1:  # sh[j]: low nibble
                row[blk * 56 + j] = codes[ib]
            else:  # scales[j % 4]: low nibble blocks 0..3, high nibble 4..7
                row[blk * 68 + j % 4] |= codes[ib] << (4 * (j // 4))
        d_out[r] = d
        if d == 0:
            continue
        sums[:] = 0
        for ib in range(nblk):
            xb, wb = xr[ib * _BLOCK : ib * _BLOCK + _BLOCK], w[ib * _BLOCK : ib * _BLOCK + _BLOCK]
            ls = IQ4K_VALUES[codes[ib]]
            _match8(d * ls, xb, wb, cb, buf, cand)
            _keep_better(xb, wb, vals, d * ls, idx_all[ib * 4 : ib * 4 + 4], cand)
            _put_seeds12(row, ib, cand, is_iq1)
            _accumulate(xb, wb, vals, cand, ls, sums)
        if sums[1] > 0:
            d = sums[0] / sums[1]
            d_out[r] = d * np.float32(1.07) if is_iq1 else d


@njit(cache=True)
def _put_seeds12(row, ib, seeds, is_iq1):
    """The 4 seeds of block ib: IQ1_KT 13 bits in ql / qh nibbles / sh high bits, IQ2_KT uint16."""
    blk, j = ib // 8, ib % 8
    for g in range(4):
        s = seeds[g]
        if is_iq1:
            base = blk * 56
            row[base + 8 + 4 * j + g] = s & 0xFF
            row[base + 40 + 4 * (j % 4) + g] |= ((s >> 8) & 0xF) << (4 * (j // 4))
            row[base + j] |= (s >> 12) << (4 + g)
        else:
            base = blk * 68 + 4 + 8 * j
            row[base + 2 * g] = s & 0xFF
            row[base + 2 * g + 1] = s >> 8


@njit(cache=True, nogil=True)
def _rows_iq3(x, qw, use_qw, fused, cb, buf_len, d_out, out):
    """quantize_row_iq3_kt_impl over all rows: |x| against the |trellis| codebook, signs apart."""
    vals = cb[0]
    n_rows, n = x.shape
    nblk = n // _BLOCK
    w = np.empty(n, np.float32)
    xa = np.empty(n, np.float32)
    qtmp = np.empty(n, np.float32)
    scales = np.empty(nblk, np.float32)
    codes = np.empty(nblk, np.int32)
    cand = np.empty(4, np.int32)
    keep = np.empty(4, np.int32)
    buf = np.empty(buf_len, np.float32)
    acc = np.empty(16, np.float32)
    sums = np.zeros(2, np.float32)
    for r in range(n_rows):
        xr, row = x[r], out[r]
        row[:] = 0
        d_out[r] = 0
        amax_row = _amax(xr)
        if amax_row == 0:
            continue
        _set_weights(xr, qw, use_qw, fused, w)
        for j in range(n):
            xa[j] = abs(xr[j])
        amax_scale = max_scale = np.float32(0.0)
        for ib in range(nblk):
            o = ib * _BLOCK
            xb, wb = xa[o : o + _BLOCK], w[o : o + _BLOCK]
            amax = _amax(xb)
            scales[ib] = 0
            qtmp[o : o + _BLOCK] = 0
            if amax < np.float32(1e-16):
                continue
            scale_0 = max(np.float32(84.0), np.float32(123.0) * amax / amax_row)
            best = np.float32(0.0)
            found = False
            for itry in range(-3, 4):
                dd, score = _trial(amax / (scale_0 + np.float32(8 * itry)), xb, wb, cb, buf, cand, acc)
                if score > best:
                    best, found, scales[ib], keep[:] = score, True, dd, cand
            if not found:  # ik_llama.cpp aborts here
                continue
            for g in range(4):
                qtmp[o + 8 * g : o + 8 * g + 8] = vals[keep[g]]
            if abs(scales[ib]) > amax_scale:
                amax_scale, max_scale = abs(scales[ib]), scales[ib]
        d = max_scale / np.float32(15.0)  # 0 when every block is (almost) zero: only signs are written
        best = np.float32(0.0)
        for itry in range(-9 if max_scale > 0 else 10, 10):
            idd = _fma(np.float32(itry), np.float32(0.2), np.float32(15.0)) / max_scale
            sumqx = sumq2 = np.float32(0.0)
            for ib in range(nblk):
                dl = np.float32(max(0, min(15, _nearest(idd, scales[ib]))))
                for j in range(ib * _BLOCK, ib * _BLOCK + _BLOCK):  # GCC vectorized this: no fusing
                    q = dl * qtmp[j]
                    sumqx += w[j] * xa[j] * q
                    sumq2 += w[j] * q * q
            if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        idd = np.float32(1.0) / d if d != 0 else np.float32(0.0)
        for ib in range(nblk):
            codes[ib] = max(0, min(15, _nearest(idd, scales[ib])))
            row[ib // 8 * 100 + ib % 4] |= codes[ib] << (4 * (ib % 8 // 4))
        d_out[r] = d
        sums[:] = 0
        for ib in range(nblk):
            o = ib * _BLOCK
            blk, j = ib // 8, ib % 8
            for k in range(_BLOCK):  # qh: bit j of byte k is the sign of value k of block j
                if xr[o + k] < 0:
                    row[blk * 100 + 68 + k] |= 1 << j
            ls = np.float32(codes[ib])
            _match8(d * ls, xa[o : o + _BLOCK], w[o : o + _BLOCK], cb, buf, cand)
            for g in range(4):
                row[blk * 100 + 4 + 8 * j + 2 * g] = cand[g] & 0xFF
                row[blk * 100 + 5 + 8 * j + 2 * g] = cand[g] >> 8
            _accumulate(xa[o : o + _BLOCK], w[o : o + _BLOCK], vals, cand, ls, sums)
        if sums[1] > 0:
            d_out[r] = sums[0] / sums[1]


@njit(cache=True)
def _trials_iq4(cb, amax, scale_0, xb, wb, buf, cand, acc, best, scale):
    """IQ4_KT's 5 x 2 trial scales +-amax/(scale_0 + 8*itry) with one codebook: the best
    score and scale so far, and whether a trial beat them."""
    better = False
    for itry in range(-2, 3):
        trial = amax / (np.float32(8 * itry) + scale_0)
        for t in (trial, -trial):
            dd, score = _trial(t, xb, wb, cb, buf, cand, acc)
            if score > best:
                best, scale, better = score, dd, True
    return best, scale, better


@njit(cache=True, nogil=True)
def _rows_iq4(x, qw, use_qw, fused, cb1, cb2, buf_len, d_out, out):
    """quantize_row_iq4_kt_impl over all rows; cb2 is the codebook with seeds offset by 32768."""
    n_rows, n = x.shape
    nblk = n // _BLOCK
    w = np.empty(n, np.float32)
    scales = np.empty(nblk, np.float32)
    offset_flag = np.empty(nblk, np.int32)
    cand = np.empty(8, np.int32)
    buf = np.empty(buf_len, np.float32)
    acc = np.empty(16, np.float32)
    sums = np.zeros(2, np.float32)
    for r in range(n_rows):
        xr, row = x[r], out[r]
        row[:] = 0
        d_out[r] = 0
        _set_weights(xr, qw, use_qw, fused, w)
        amax_row = _amax(xr)
        if amax_row == 0:
            continue
        amax_scale = max_scale = np.float32(0.0)
        for ib in range(nblk):
            xb, wb = xr[ib * _BLOCK : ib * _BLOCK + _BLOCK], w[ib * _BLOCK : ib * _BLOCK + _BLOCK]
            offset_flag[ib] = 0
            scales[ib] = 0
            amax = _amax(xb)
            if amax < np.float32(1e-16):
                continue
            scale_0 = max(np.float32(90.0), np.float32(124.0) * amax / amax_row)
            best, scale, _ = _trials_iq4(
                cb1, amax, scale_0, xb, wb, buf, cand, acc, np.float32(0.0), scales[ib]
            )
            dd, score = _trial(scale, xb, wb, cb2, buf, cand, acc)
            if score > best:  # as in ik_llama.cpp, `best` is not raised here
                scale = dd
                offset_flag[ib] = 1
            _, scale, better = _trials_iq4(cb2, amax, scale_0, xb, wb, buf, cand, acc, best, scale)
            if better:
                offset_flag[ib] = 1
            scales[ib] = scale
            if abs(scale) > amax_scale:
                amax_scale, max_scale = abs(scale), scale
        d = -max_scale / np.float32(64.0)
        d_out[r] = d
        if d == 0:
            continue
        idd = np.float32(1.0) / d
        sums[:] = 0
        for ib in range(nblk):
            xb, wb = xr[ib * _BLOCK : ib * _BLOCK + _BLOCK], w[ib * _BLOCK : ib * _BLOCK + _BLOCK]
            ls = min(_nearest(idd, scales[ib]), 63)
            cb = cb2 if offset_flag[ib] else cb1
            _match4(d * np.float32(ls), xb, wb, cb, buf, cand)
            base, j = ib // 8 * 128, ib % 8
            word = np.uint32(((ls + 64) << 1) | offset_flag[ib])  # qs[j]: offset bit, scale, seed bits 12..14
            for g in range(8):
                s = cand[g]
                word |= np.uint32(s >> 12) << np.uint32(8 + 3 * g)
                gi = 8 * j + g
                row[base + 32 + gi] = s & 0xFF
                row[base + 96 + gi % 32] |= ((s >> 8) & 0xF) << (4 * (gi // 32))
            for b in range(4):
                row[base + 4 * j + b] = (word >> np.uint32(8 * b)) & np.uint32(0xFF)
            _accumulate(xb, wb, cb[0], cand, np.float32(ls), sums)
        if sums[1] > 0:
            d_out[r] = sums[0] / sums[1]


# ---------------------------------------------------------------------------------------
# the public functions
# ---------------------------------------------------------------------------------------


def _quantize(x: np.ndarray, imatrix: np.ndarray | None, type_name: str, name: str) -> np.ndarray:
    x, qw = _check(x, imatrix, type_name, name)
    n_rows, n = x.shape
    if n % QK_K:
        raise UnsupportedTypeError(
            f"{name}: row size {n} not divisible by the super-block size {QK_K} for {type_name}; "
            "keep this tensor in a type with smaller blocks (Q8_0, Q6_0, IQ4_NL) or in F16"
        )
    use_qw = qw is not None
    qw = qw if use_qw else np.empty(0, F32)
    fused = _FUSED_WEIGHTS[type_name]
    d = np.empty(n_rows, F32)
    blocks = np.empty((n_rows, n // QK_K * BLOCK_BYTES[type_name]), np.uint8)
    if type_name == "IQ4_KT":
        cb1, cb2 = _codebook("IQ4_KT"), _codebook("IQ4_KT+")
        buf_len = max(cb1.buf_len, cb2.buf_len)
        _rows_iq4(x, qw, use_qw, fused, cb1.args, cb2.args, buf_len, d, blocks)
    elif type_name == "IQ3_KT":
        cb = _codebook(type_name)
        _rows_iq3(x, qw, use_qw, fused, cb.args, cb.buf_len, d, blocks)
    else:
        cb = _codebook(type_name)
        _rows_iq12(x, qw, use_qw, fused, type_name == "IQ1_KT", cb.args, cb.buf_len, d, blocks)
    return np.concatenate([d.astype("<f4").view(np.uint8).reshape(-1, 4), blocks], axis=1)


def quantize_iq1_kt(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ1_KT: f32 row scale, per 256 values 8 IQ4_K-coded block scales and 32 13-bit seeds."""
    return _quantize(x, imatrix, "IQ1_KT", name)


def quantize_iq2_kt(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ2_KT: f32 row scale, per 256 values 8 IQ4_K-coded block scales and 32 16-bit seeds."""
    return _quantize(x, imatrix, "IQ2_KT", name)


def quantize_iq3_kt(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ3_KT: f32 row scale, per 256 values 8 4-bit block scales, 32 16-bit seeds of |x|, signs."""
    return _quantize(x, imatrix, "IQ3_KT", name)


def quantize_iq4_kt(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """IQ4_KT: f32 row scale, per 32 values a 7-bit scale and offset bit, 8 15-bit seeds."""
    return _quantize(x, imatrix, "IQ4_KT", name)


Quantizer = Callable[..., np.ndarray]

QUANTIZERS: dict[str, Quantizer] = {
    "IQ1_KT": quantize_iq1_kt,
    "IQ2_KT": quantize_iq2_kt,
    "IQ3_KT": quantize_iq3_kt,
    "IQ4_KT": quantize_iq4_kt,
}
