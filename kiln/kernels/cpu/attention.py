"""Attention of a few query tokens over an f16 or bf16 KV cache on the CPU (generation).

Flash-style: per query token and head, one pass over the visible keys with a running
maximum and sum (online softmax), so no score matrix is made; K and V stay in the
cache's type and are converted 8 values at a time (`simd.dot_f32_f16`, `scale_add_f16`
and their bf16 twins).
Heads and tokens are shared among threads. Visibility is the reference's: key j is seen
by query i when k_pos[j] <= q_pos[i] and, with a window, q_pos[i] - k_pos[j] < window.
`head_f16` / `head_bf16` are the one-head pass, also used by the per-block generation
step (`block_step.py`), which also reads q8_0 caches (`head_q8`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .decode_common import U
from .simd import dot_f32_bf16, dot_f32_f16, f16_value, scale_add_bf16, scale_add_f16


@njit(inline="always")
def _visible(k_pos, j, q_pos, window):
    return k_pos[j] <= q_pos and (window <= 0 or q_pos - k_pos[j] < window)


@njit(inline="always")
def _softmax_step(s, best, total, softcap):
    """Online softmax with the next key's score s: returns (keep, p, best, total): the
    factor for the values summed so far, this key's weight, and the new maximum and sum."""
    if softcap > 0:
        s = softcap * math.tanh(s / softcap)
    if s > best:
        keep = np.float32(math.exp(best - s)) if best > -np.inf else np.float32(0)
        return keep, np.float32(1), s, total * keep + 1
    p = np.float32(math.exp(s - best))
    return np.float32(1), p, best, total + p


@njit(inline="always")
def _normalize(acc, acc_off, dv, total):
    if total > 0:
        inv = np.float32(1) / total
        for c in range(dv):
            acc[acc_off + c] *= inv


def _make_head(dot, scale_add):
    @njit(inline="always")
    def head(q, q_off, d, k_bits, k_off, v_bits, v_off, dv, n_k, k_pos, q_pos, window, scale, softcap, acc, acc_off):
        """acc[acc_off : acc_off + dv] = one query head (q[q_off : q_off + d]) attending to the
        visible ones of keys 0..n_k-1 (rows of k_bits and v_bits from columns k_off, v_off)."""
        for c in range(dv):
            acc[acc_off + c] = 0
        best = -np.inf
        total = np.float32(0)
        for j in range(n_k):
            if _visible(k_pos, j, q_pos, window):
                s = dot(q, q_off, k_bits[j], k_off, d) * scale
                keep, p, best, total = _softmax_step(s, best, total, softcap)
                scale_add(acc, acc_off, keep, v_bits[j], v_off, p, dv)
        _normalize(acc, acc_off, dv, total)

    return head


head_f16 = _make_head(dot_f32_f16, scale_add_f16)
head_bf16 = _make_head(dot_f32_bf16, scale_add_bf16)


@njit(inline="always")
def head_q8(q, q_off, d, k_q, k_s, k_off, v_q, v_s, v_off, dv, n_k, k_pos, q_pos, window, scale, softcap, acc, acc_off):
    """As head_f16 over a q8_0 cache: k_q / v_q int8 rows, k_s / v_s their f16 scales (bits,
    one per 32 values); k_off, v_off, d and dv are multiples of 32."""
    for c in range(dv):
        acc[acc_off + c] = 0
    best = -np.inf
    total = np.float32(0)
    for j in range(n_k):
        if not _visible(k_pos, j, q_pos, window):
            continue
        kj, vj = k_q[j], v_q[j]
        s = np.float32(0)
        for b in range(U(d) // U(32)):
            t = np.float32(0)
            at = U(k_off) + U(32) * b
            for c in range(U(32)):
                t += q[U(q_off) + U(32) * b + c] * np.float32(kj[at + c])
            s += t * f16_value(k_s[j, at // U(32)])
        keep, p, best, total = _softmax_step(s * scale, best, total, softcap)
        for b in range(U(dv) // U(32)):
            at = U(v_off) + U(32) * b
            w = p * f16_value(v_s[j, at // U(32)])
            o = U(acc_off) + U(32) * b
            for c in range(U(32)):
                acc[o + c] = acc[o + c] * keep + w * np.float32(vj[at + c])
    _normalize(acc, acc_off, dv, total)


def _make_attend(head):
    @njit(parallel=True, fastmath=True, error_model="numpy")
    def attend(q, k_bits, v_bits, v_col, q_pos, k_pos, scale, window, softcap, out):
        """q [n_q, H, d] float32; k_bits [n_k, H_kv * d], v_bits [n_k, >= v_col + H_kv * dv]
        (16-bit float bits as int16; head g's values start at column v_col + g * dv, so V
        may be a column range of the K rows, as MLA's latent cache is); out [n_q, H, dv]."""
        n_q, n_head, d = q.shape
        n_k = k_bits.shape[0]
        dv = out.shape[2]
        n_kv = k_bits.shape[1] // d
        group = n_head // n_kv
        for task in prange(n_q * n_head):
            i, h = task // n_head, task % n_head
            g = h // group
            head(q[i, h], 0, d, k_bits, g * d, v_bits, v_col + g * dv, dv, n_k, k_pos, q_pos[i], window, scale, softcap,
                 out[i, h], 0)

    return attend


attend_f16 = _make_attend(head_f16)
attend_bf16 = _make_attend(head_bf16)
