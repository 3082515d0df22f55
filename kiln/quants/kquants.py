"""K-quants (Q2_K..Q6_K, Q8_K: 256-value super-blocks with 4..8-bit sub-block scales)
and the other scalar-grid types Q6_0, Q8_KV, MXFP4, IQ4_NL, IQ4_XS: dequantization.

Block layouts are those of ik_llama.cpp's ggml-common.h. Every value is computed
in float32 with the operations and their order of ik_llama.cpp's reference
dequantizers (ggml-quants.c, iqk/iqk_quantize.cpp), so results are bit-identical:
f16 scales convert exactly, integer parts (sub-block scales, quants with their
offsets) are formed as integers and converted exactly, and `a * b * c` is
`(a * b) * c`. Each type's kernel maps an array of blocks [n_blocks, block_bytes]
to [n_blocks, values] and runs over all blocks at once; large tensors go through
in slices of rows so that the integer temporaries stay small.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES_BY_NAME
from .kquants_tables import IQ4NL_VALUES, MXFP4_VALUES

_SLICE_VALUES = 1 << 22  # values dequantized per slice of rows
_SHIFT_2BIT = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
_SHIFT_NIBBLE = np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
_BITS_8 = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    """The f16 at byte offset `at` of each block, as float32 [n_blocks, 1] (exact)."""
    return np.ascontiguousarray(b[:, at : at + 2]).view("<f2").astype(np.float32)


def _f32(b: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(b[:, at : at + 4]).view("<f4")


def _k4_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and 8 six-bit mins packed in the 12 bytes of Q4_K/Q5_K, as float32."""
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo & 63, (hi & 15) | ((lo >> 6) << 4)], axis=1)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _q2_k(b: np.ndarray) -> np.ndarray:
    sc = b[:, 0:16]
    d, dmin = _f16(b, 80), _f16(b, 82)
    # value n*128 + j*32 + i takes bits 2j..2j+1 of qs[n*32 + i]; 16 sub-blocks of 16
    q = ((b[:, 16:80].reshape(-1, 2, 1, 32) >> _SHIFT_2BIT) & 3).reshape(-1, 16, 16)
    dl = d * (sc & 15).astype(np.float32)
    ml = dmin * (sc >> 4).astype(np.float32)
    return dl[:, :, None] * q.astype(np.float32) - ml[:, :, None]


def _q3_k(b: np.ndarray) -> np.ndarray:
    hm, s = b[:, 0:32], b[:, 96:108]
    d = _f16(b, 108)
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    low = np.concatenate([lo & 15, mid & 15, lo >> 4, mid >> 4], axis=1)
    high = np.concatenate([hi & 3, (hi >> 2) & 3, (hi >> 4) & 3, hi >> 6], axis=1)
    dl = d * ((low | (high << 4)).astype(np.int16) - 32).astype(np.float32)
    q = (b[:, 32:96].reshape(-1, 2, 1, 32) >> _SHIFT_2BIT) & 3
    # the high bit of value n*128 + j*32 + i is bit n*4 + j of hmask[i]; clear means minus 4
    hbit = (hm[:, None, :] >> _BITS_8) & 1
    qv = q.reshape(-1, 8, 32).astype(np.int8) - ((1 - hbit) << 2).astype(np.int8)
    return dl[:, :, None] * qv.reshape(-1, 16, 16).astype(np.float32)


def _q4_k(b: np.ndarray) -> np.ndarray:
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k4_scales(b[:, 4:16])
    # value g*64 + h*32 + i: nibble h of qs[g*32 + i]; 8 sub-blocks of 32
    q = ((b[:, 16:144].reshape(-1, 4, 1, 32) >> _SHIFT_NIBBLE) & 15).reshape(-1, 8, 32)
    d1, m1 = d * sc, dmin * mn
    return d1[:, :, None] * q.astype(np.float32) - m1[:, :, None]


def _q5_k(b: np.ndarray) -> np.ndarray:
    d, dmin = _f16(b, 0), _f16(b, 2)
    sc, mn = _k4_scales(b[:, 4:16])
    low = ((b[:, 48:176].reshape(-1, 4, 1, 32) >> _SHIFT_NIBBLE) & 15).reshape(-1, 8, 32)
    # bit k of qh[i] is the fifth bit of value i of sub-block k
    high = (b[:, 16:48][:, None, :] >> _BITS_8) & 1
    q = low | (high << 4)
    d1, m1 = d * sc, dmin * mn
    return d1[:, :, None] * q.astype(np.float32) - m1[:, :, None]


def _q6_k(b: np.ndarray) -> np.ndarray:
    d = _f16(b, 208)
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    # value n*128 + k*32 + i: nibble k//2 of ql[n*64 + (k%2)*32 + i], bits 2k..2k+1 of qh[n*32 + i]
    low = ((b[:, 0:128].reshape(-1, 2, 1, 64) >> _SHIFT_NIBBLE) & 15).reshape(-1, 2, 4, 32)
    high = (b[:, 128:192].reshape(-1, 2, 1, 32) >> _SHIFT_2BIT) & 3
    q = (low | (high << 4)).astype(np.int8) - np.int8(32)
    return (d * sc)[:, :, None] * q.reshape(-1, 16, 16).astype(np.float32)


def _q8_k(b: np.ndarray) -> np.ndarray:
    return _f32(b, 0) * b[:, 8:264].view(np.int8).astype(np.float32)


def _q6_0(b: np.ndarray) -> np.ndarray:
    d = _f16(b, 0)
    qh, qs = b[:, 2:10], b[:, 10:26]
    h = np.concatenate([qh, qh >> 4], axis=1)  # high bits of values j and j + 16
    x0 = (qs & 15) | ((h << 4) & 0x30)
    x1 = (qs >> 4) | ((h << 2) & 0x30)
    q = np.concatenate([x0, x1], axis=1).astype(np.int8) - np.int8(32)
    return q.astype(np.float32) * d


def _iq4_nl(b: np.ndarray) -> np.ndarray:
    qs = b[:, 2:18]
    return _f16(b, 0) * IQ4NL_VALUES[np.concatenate([qs & 15, qs >> 4], axis=1)]


def _iq4_xs(b: np.ndarray) -> np.ndarray:
    d = _f16(b, 0)
    sh = np.ascontiguousarray(b[:, 2:4]).view("<u2")  # [n, 1]
    sl = b[:, 4:8]
    low = np.stack([sl & 15, sl >> 4], axis=2).reshape(-1, 8).astype(np.int16)
    high = ((sh >> (2 * np.arange(8, dtype=np.uint16))) & 3).astype(np.int16)
    dl = d * ((low | (high << 4)) - 32).astype(np.float32)
    qs = b[:, 8:136].reshape(-1, 8, 16)
    v = IQ4NL_VALUES[np.concatenate([qs & 15, qs >> 4], axis=2)]
    return dl[:, :, None] * v


def e8m0_half(e: np.ndarray) -> np.ndarray:
    """Half of 2**(e - 127) as float32 (E8M0 block scale of MXFP4, halved), exact."""
    e = e.astype(np.uint32)
    bits = np.where(e >= 2, (e - 1) << 23, np.where(e == 1, np.uint32(0x00400000), np.uint32(0x00200000)))
    return bits.astype(np.uint32).view(np.float32)


def _mxfp4(b: np.ndarray) -> np.ndarray:
    d = e8m0_half(b[:, 0:1])
    qs = b[:, 1:17]
    with np.errstate(over="ignore"):  # the largest scales overflow to inf, as in ggml
        return d * MXFP4_VALUES[np.concatenate([qs & 15, qs >> 4], axis=1)]


def _rows(rows: np.ndarray, n_per_row: int, name: str) -> np.ndarray:
    """Checked uint8 rows [n_rows, row_bytes] of a tensor of type `name`."""
    t = GGML_TYPES_BY_NAME[name]
    rows = np.asarray(rows)
    if rows.dtype != np.uint8:
        raise UnsupportedTypeError(f"{name}: raw tensor bytes must be uint8, got {rows.dtype}")
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2:
        raise UnsupportedTypeError(
            f"{name}: raw rows must be 2-D [n_rows, row_bytes], got shape {rows.shape}"
        )
    if n_per_row <= 0 or n_per_row % t.block_size:
        raise UnsupportedTypeError(
            f"row size {n_per_row} not divisible by block size {t.block_size} for {name}"
        )
    if rows.shape[1] != t.row_bytes(n_per_row):
        raise UnsupportedTypeError(
            f"{name}: rows of {rows.shape[1]} bytes given, {n_per_row} values per row need {t.row_bytes(n_per_row)}"
        )
    return np.ascontiguousarray(rows)


def _block_dequantizer(name: str, kernel: Callable[[np.ndarray], np.ndarray]) -> Callable:
    t = GGML_TYPES_BY_NAME[name]

    def dequantize(rows: np.ndarray, n_per_row: int) -> np.ndarray:
        rows = _rows(rows, n_per_row, name)
        n_rows = rows.shape[0]
        out = np.empty((n_rows, n_per_row), dtype=np.float32)
        step = max(1, _SLICE_VALUES // n_per_row)
        for r in range(0, n_rows, step):
            blocks = rows[r : r + step].reshape(-1, t.type_size)
            out[r : r + step] = kernel(blocks).reshape(-1, n_per_row)
        return out

    dequantize.__name__ = f"dequantize_{name.lower()}"
    dequantize.__doc__ = f"Dequantize rows of {name} blocks to float32 [n_rows, n_per_row]."
    return dequantize


def dequantize_q8_kv(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    """Dequantize Q8_KV rows: a float32 row scale, 4 more metadata bytes, then int8 values."""
    rows = _rows(rows, n_per_row, "Q8_KV")
    return _f32(rows, 0) * rows[:, 8:].view(np.int8).astype(np.float32)


DEQUANTIZERS = {
    "Q2_K": _block_dequantizer("Q2_K", _q2_k),
    "Q3_K": _block_dequantizer("Q3_K", _q3_k),
    "Q4_K": _block_dequantizer("Q4_K", _q4_k),
    "Q5_K": _block_dequantizer("Q5_K", _q5_k),
    "Q6_K": _block_dequantizer("Q6_K", _q6_k),
    "Q8_K": _block_dequantizer("Q8_K", _q8_k),
    "Q6_0": _block_dequantizer("Q6_0", _q6_0),
    "Q8_KV": dequantize_q8_kv,
    "MXFP4": _block_dequantizer("MXFP4", _mxfp4),
    "IQ4_NL": _block_dequantizer("IQ4_NL", _iq4_nl),
    "IQ4_XS": _block_dequantizer("IQ4_XS", _iq4_xs),
}
