"""Float tensor types: F32, F16, BF16, F64 (stored as plain little-endian arrays)."""

from __future__ import annotations

import numpy as np


def dequantize_f32(raw: np.ndarray, n: int) -> np.ndarray:
    return raw.view("<f4")[:n].copy()


def dequantize_f16(raw: np.ndarray, n: int) -> np.ndarray:
    return raw.view("<f2")[:n].astype(np.float32)


def dequantize_bf16(raw: np.ndarray, n: int) -> np.ndarray:
    # bf16 is the upper half of an f32
    return (raw.view("<u2")[:n].astype(np.uint32) << 16).view(np.float32)


def dequantize_f64(raw: np.ndarray, n: int) -> np.ndarray:
    return raw.view("<f8")[:n].astype(np.float32)
