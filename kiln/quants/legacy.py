"""The legacy 32-value block types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Block layouts (ggml-common.h): an f16 scale `d` (and for the _1 types an f16
minimum `m`), for the 5-bit types 32 high bits `qh`, then the low bits `qs`.
Values 0..15 of a block sit in the low nibbles of qs, values 16..31 in the
high nibbles. Arithmetic is float32, in the order ggml uses (q*d, then + m),
so results are bit-identical to ggml's dequantization.
"""

from __future__ import annotations

import numpy as np

QK = 32


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    return raw.reshape(-1, block_bytes)


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    return blocks[:, start : start + 2].copy().view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(nb, 16) bytes -> (nb, 32) values: low nibbles first, then high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _high_bits(qh_bytes: np.ndarray) -> np.ndarray:
    """(nb, 4) bytes of a little-endian uint32 -> (nb, 32) bits, bit j for value j."""
    qh = qh_bytes.copy().view("<u4")  # (nb, 1)
    return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def dequantize_q4_0(raw: np.ndarray, n: int) -> np.ndarray:
    b = _blocks(raw, 18)
    d = _f16(b, 0)
    q = _nibbles(b[:, 2:18]).astype(np.int8) - np.int8(8)
    return (q.astype(np.float32) * d).reshape(-1)


def dequantize_q4_1(raw: np.ndarray, n: int) -> np.ndarray:
    b = _blocks(raw, 20)
    d, m = _f16(b, 0), _f16(b, 2)
    q = _nibbles(b[:, 4:20])
    return (q.astype(np.float32) * d + m).reshape(-1)


def dequantize_q5_0(raw: np.ndarray, n: int) -> np.ndarray:
    b = _blocks(raw, 22)
    d = _f16(b, 0)
    q = (_nibbles(b[:, 6:22]) | (_high_bits(b[:, 2:6]) << 4)).astype(np.int8) - np.int8(16)
    return (q.astype(np.float32) * d).reshape(-1)


def dequantize_q5_1(raw: np.ndarray, n: int) -> np.ndarray:
    b = _blocks(raw, 24)
    d, m = _f16(b, 0), _f16(b, 2)
    q = _nibbles(b[:, 8:24]) | (_high_bits(b[:, 4:8]) << 4)
    return (q.astype(np.float32) * d + m).reshape(-1)


def dequantize_q8_0(raw: np.ndarray, n: int) -> np.ndarray:
    b = _blocks(raw, 34)
    d = _f16(b, 0)
    q = b[:, 2:34].view(np.int8)
    return (q.astype(np.float32) * d).reshape(-1)


DEQUANTIZERS = {
    "Q4_0": dequantize_q4_0,
    "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1,
    "Q8_0": dequantize_q8_0,
}
