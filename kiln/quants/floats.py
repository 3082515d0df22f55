"""Float tensor types: F32, F16, BF16, F64 (stored as plain little-endian arrays)."""

from __future__ import annotations

import numpy as np


def _flat(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw).reshape(-1)


def dequantize_f32(raw: np.ndarray, n: int) -> np.ndarray:
    return _flat(raw).view("<f4").copy()


def dequantize_f16(raw: np.ndarray, n: int) -> np.ndarray:
    return _flat(raw).view("<f2").astype(np.float32)


def dequantize_bf16(raw: np.ndarray, n: int) -> np.ndarray:
    # bf16 is the upper half of an f32
    return (_flat(raw).view("<u2").astype(np.uint32) << 16).view(np.float32)


def dequantize_f64(raw: np.ndarray, n: int) -> np.ndarray:
    return _flat(raw).view("<f8").astype(np.float32)


DEQUANTIZERS = {"F32": dequantize_f32, "F16": dequantize_f16, "BF16": dequantize_bf16, "F64": dequantize_f64}
