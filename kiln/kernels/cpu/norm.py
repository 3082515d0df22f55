"""RMS norm of float32 rows on the CPU in one pass (torch's fused op costs tens of
microseconds per call on a single token, which adds up over every layer of generation)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(inline="always")
def rms_norm_row(xr, weight, has_weight, eps, o):
    """o = xr / sqrt(mean(xr^2) + eps) (* weight); o may be xr itself (also used by the
    one-call generation step, block_step.py)."""
    d = xr.size
    s = 0.0
    for i in range(d):
        s += np.float64(xr[i]) * np.float64(xr[i])
    inv = np.float32(1.0 / np.sqrt(s / d + eps))
    if has_weight:
        for i in range(d):
            o[i] = xr[i] * inv * weight[i]
    else:
        for i in range(d):
            o[i] = xr[i] * inv


@njit(parallel=True, fastmath=True, error_model="numpy")
def rms_norm_into(x, weight, has_weight, eps, out):
    """out[r] = x[r] / sqrt(mean(x[r]^2) + eps) (* weight) for every row r of x [n, d]."""
    for r in prange(x.shape[0]):
        rms_norm_row(x[r], weight, has_weight, eps, out[r])
