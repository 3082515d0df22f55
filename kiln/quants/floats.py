"""Float tensor types: F32, F16, BF16, F64 (stored as plain little-endian arrays), both ways."""

from __future__ import annotations

import numpy as np

from ..errors import QuantizeError


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


def _rows_of(values: np.ndarray, dtype: str) -> np.ndarray:
    v = np.ascontiguousarray(values, dtype=dtype)
    return v.view(np.uint8).reshape(v.shape[0], -1)


def quantize_f32(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    return _rows_of(x, "<f4")


def quantize_f16(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    x = np.asarray(x, np.float32)
    big = float(np.abs(x).max(initial=0.0))
    if big >= 65520.0:  # rounds to inf in f16
        raise QuantizeError(f"{name} holds {big:g}, beyond the range of F16 (65504); use BF16 or F32 for it")
    return _rows_of(x.astype("<f2"), "<f2")


def quantize_bf16(x: np.ndarray, imatrix: np.ndarray | None = None, *, name: str = "tensor") -> np.ndarray:
    """ggml's f32 -> bf16: round to nearest, ties to even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    rounded = ((u + (np.uint32(0x7FFF) + ((u >> 16) & 1))) >> 16).astype("<u2")
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    out = np.where(nan, ((u >> 16) | 64).astype("<u2"), rounded)
    return _rows_of(out, "<u2")


QUANTIZERS = {"F32": quantize_f32, "F16": quantize_f16, "BF16": quantize_bf16}
