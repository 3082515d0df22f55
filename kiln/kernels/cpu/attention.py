"""Attention of a few query tokens over an f16 or bf16 KV cache on the CPU (generation).

Flash-style: per query token and head, one pass over the visible keys with a running
maximum and sum (online softmax), so no score matrix is made; K and V stay in the
cache's type and are converted 8 values at a time (`simd.dot_f32_f16`, `scale_add_f16`
and their bf16 twins).
Heads and tokens are shared among threads. Visibility is the reference's: key j is seen
by query i when k_pos[j] <= q_pos[i] and, with a window, q_pos[i] - k_pos[j] < window.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .simd import dot_f32_bf16, dot_f32_f16, scale_add_bf16, scale_add_f16


def _make_attend(dot, scale_add):
    @njit(parallel=True, fastmath=True)
    def attend(q, k_bits, v_bits, q_pos, k_pos, scale, window, softcap, out):
        """q [n_q, H, d] float32; k_bits [n_k, H_kv * d], v_bits [n_k, H_kv * dv] (16-bit float
        bits as int16); out [n_q, H, dv] float32."""
        n_q, n_head, d = q.shape
        n_k = k_bits.shape[0]
        dv = out.shape[2]
        n_kv = k_bits.shape[1] // d
        group = n_head // n_kv
        for task in prange(n_q * n_head):
            i, h = task // n_head, task % n_head
            g = h // group
            qi = q[i, h]
            acc = out[i, h]
            acc[:] = 0
            best = -np.inf
            total = np.float32(0)
            for j in range(n_k):
                if k_pos[j] > q_pos[i] or (window > 0 and q_pos[i] - k_pos[j] >= window):
                    continue
                s = dot(qi, 0, k_bits[j], g * d, d) * scale
                if softcap > 0:
                    s = softcap * math.tanh(s / softcap)
                if s > best:
                    keep = np.float32(math.exp(best - s)) if best > -np.inf else np.float32(0)
                    best = s
                    total = total * keep + 1
                    scale_add(acc, 0, keep, v_bits[j], g * dv, np.float32(1), dv)
                else:
                    p = np.float32(math.exp(s - best))
                    total += p
                    scale_add(acc, 0, np.float32(1), v_bits[j], g * dv, p, dv)
            if total > 0:
                inv = np.float32(1) / total
                for c in range(dv):
                    acc[c] *= inv

    return attend


attend_f16 = _make_attend(dot_f32_f16, scale_add_f16)
attend_bf16 = _make_attend(dot_f32_bf16, scale_add_bf16)
