"""Rotary position embedding on the CPU in one pass (the reference takes seven torch ops).

x [n, h, d] float32 is rotated over its first 2 * cos.shape[1] values with the tables of
`reference.rope_cos_sin`; neox pairs x[i] with x[i + n_rot/2], otherwise (ggml's "norm"
mode) x[2i] with x[2i + 1]. The rest of each head is copied.
"""

from __future__ import annotations

from numba import njit, prange


@njit(inline="always")
def rope_head(xi, oi, c, s, neox):
    """One head xi rotated into oi (which may be xi itself) with one position's tables c, s
    (also used by the one-call generation step, block_step.py)."""
    half = c.size
    for i in range(half):
        if neox:
            a, b = xi[i], xi[i + half]
            oi[i] = a * c[i] - b * s[i]
            oi[i + half] = a * s[i] + b * c[i]
        else:
            a, b = xi[2 * i], xi[2 * i + 1]
            oi[2 * i] = a * c[i] - b * s[i]
            oi[2 * i + 1] = a * s[i] + b * c[i]
    for i in range(2 * half, xi.size):
        oi[i] = xi[i]


@njit(parallel=True, fastmath=True, error_model="numpy")
def rope_into(x, cos, sin, neox, out):
    n, n_head, _ = x.shape
    for task in prange(n * n_head):
        t, h = task // n_head, task % n_head
        rope_head(x[t, h], out[t, h], cos[t], sin[t], neox)
