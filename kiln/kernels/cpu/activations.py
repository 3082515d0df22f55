"""Activations in the 16-bit block form the CPU dot products read (`simd.py` says why 16).

Each row of x (float32 [n, K]) becomes int16 values qx, one float32 scale dx per 32 values
(amax / 32767, values rounded to nearest), and the sums of the quantized values times dx
per 16 (sx) and per 32 (sx32): the terms that multiply a weight block's minimum. Taking
the quantized sums makes the product exactly W . xq (xq the quantized activations), so a
weight block's offset does not magnify the rounding of x. Quantized once per row, read by
every weight row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .simd import not_finite

QMAX = 32767


@njit(inline="always")
def quantize_row(x, qx, dx, sx, sx32, r):
    """Row r of x into row r of the buffers."""
    xr, qr = x[r], qx[r]
    for b in range(x.shape[1] // 32):
        amax = np.float32(0)
        bad = False
        for j in range(32):
            amax = max(amax, abs(xr[32 * b + j]))
            bad |= not_finite(xr[32 * b + j])
        # a NaN or Inf must reach the products (the model's NaN check reports its layer):
        # the block's scale becomes NaN
        d = amax / np.float32(QMAX) if not bad else np.float32(np.nan)
        inv = np.float32(1) / d if d > 0 and not bad else np.float32(0)
        dx[r, b] = d
        for j in range(32):
            qr[32 * b + j] = np.int16(np.rint(xr[32 * b + j] * inv))
        for g in range(2):
            s = 0
            for j in range(16):
                s += np.int32(qr[32 * b + 16 * g + j])
            sx[r, 2 * b + g] = d * np.float32(s)
        sx32[r, b] = sx[r, 2 * b] + sx[r, 2 * b + 1]


@njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
def quantize_rows(x, qx, dx, sx, sx32):
    for r in prange(x.shape[0]):
        quantize_row(x, qx, dx, sx, sx32, r)


class ActivationBlocks:
    """Preallocated buffers for up to `capacity` rows of length K, reused call after call."""

    def __init__(self, K: int, capacity: int = 1):
        self.K = K
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        self.capacity = capacity
        self.qx = np.empty((capacity, self.K), dtype=np.int16)
        self.dx = np.empty((capacity, self.K // 32), dtype=np.float32)
        self.sx = np.empty((capacity, self.K // 16), dtype=np.float32)
        self.sx32 = np.empty((capacity, self.K // 32), dtype=np.float32)

    def buffers(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The buffers for n rows (the kernels write them)."""
        if n > self.capacity:
            self._grow(max(n, 2 * self.capacity))
        return self.qx[:n], self.dx[:n], self.sx[:n], self.sx32[:n]

    def quantize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        qx, dx, sx, sx32 = self.buffers(x.shape[0])
        quantize_rows(x, qx, dx, sx, sx32)
        return qx, dx, sx, sx32
