"""IQ2_K, IQ3_K, IQ4_K, IQ5_K, IQ6_K: 256-value blocks with an f16 scale `d`, a 16-bit
`extra` (bit s: the 16 values of sub-block s use the second half of the value grid, for
IQ6_K: get +1) and one small integer scale per 16 values.

Facts from ik_llama.cpp (ggml-common.h: block_iq*_k; iqk_quantize.cpp: dequantize_row_iq*_k).
Value p of a block sits in sub-block s = p // 16; within a 32-value group g = p // 32 or a
64-value group G = p // 64, t is p's offset there.

- IQ2_K (d, extra, scales[8], qs[64]): scale nibble s%2 of scales[s//2], minus 8; index:
  bits 2(g%4) of qs[32(g//4) + t], grid iq2nl.
- IQ3_K (d, extra, scales_h u16, scales_l[8], qs[64], qh[32]): scale (2*nibble + 1), negated
  where bit s of scales_h is set; index: as IQ2_K plus bit g of qh[t] as bit 2, grid iq3nl.
- IQ4_K (d, extra, scales_h[4], scales_l[8], qs[128]): 6-bit scale, nibble s%2 of
  scales_l[s//2] and bits 2(s%4) of scales_h[s//4] on top, minus 32; index: nibble (t//16)
  of qs[16g + t%16], grid iq4k.
- IQ5_K (..., qs[128], qh[32]): scales as IQ4_K; index: nibble h of qs[32G + t%32]
  (h = t//32), bit 2G+h of qh[t%32] as bit 4, grid iq5nl.
- IQ6_K (d, extra, int8 scales[16], qs[128], qh[64]): 4 low bits as IQ5_K, 2 high bits
  from qh[32(G//2) + t%32] at bit 4(G%2) + 2h; value from the IQ6_K polynomial.

Every value is (d * scale) * grid value in float32, as ik_llama.cpp computes it.
"""

from __future__ import annotations

import numpy as np

from . import iqk_tables as T
from .iqk_common import bits16, f16, fields, five_bits, scaled, split_rows, u16


def _scales_6bit(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """IQ4_K/IQ5_K sub-block scales from scales_l [n, 8] and scales_h [n, 4]: [n, 16]."""
    lo = fields(low, 4, inner=True).reshape(len(low), 16)
    hi = fields(high, 2, inner=True).reshape(len(high), 16)
    return (lo | (hi << 4)).astype(np.int16) - 32


def dequantize_iq2_k(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    _, b = split_rows(rows, n_per_row, "IQ2_K")
    n = len(b)
    extra = bits16(u16(b, 2))
    ls = fields(b[:, 4:12], 4, inner=True).reshape(n, 16).astype(np.int16) - 8
    q = fields(b[:, 12:76].reshape(n, 2, 32), 2, inner=False).reshape(n, 16, 16)
    return scaled(f16(b, 0), ls, T.IQ2NL_F32[q + 4 * extra[:, :, None]])


def dequantize_iq3_k(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    _, b = split_rows(rows, n_per_row, "IQ3_K")
    n = len(b)
    extra = bits16(u16(b, 2))
    sign = bits16(u16(b, 4))
    mag = 2 * fields(b[:, 6:14], 4, inner=True).reshape(n, 16).astype(np.int16) + 1
    ls = np.where(sign == 1, -mag, mag)
    low = fields(b[:, 14:78].reshape(n, 2, 32), 2, inner=False).reshape(n, 8, 32)
    high = fields(b[:, 78:110], 1, inner=False)
    q = (low | (high << 2)).reshape(n, 16, 16)
    return scaled(f16(b, 0), ls, T.IQ3NL_F32[q + 8 * extra[:, :, None]])


def dequantize_iq4_k(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    _, b = split_rows(rows, n_per_row, "IQ4_K")
    n = len(b)
    extra = bits16(u16(b, 2))
    ls = _scales_6bit(b[:, 8:16], b[:, 4:8])
    q = fields(b[:, 16:144].reshape(n, 8, 16), 4, inner=False).reshape(n, 16, 16)
    return scaled(f16(b, 0), ls, T.IQ4K_F32[q + 16 * extra[:, :, None]])


def dequantize_iq5_k(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    _, b = split_rows(rows, n_per_row, "IQ5_K")
    n = len(b)
    extra = bits16(u16(b, 2))
    ls = _scales_6bit(b[:, 8:16], b[:, 4:8])
    q = five_bits(b[:, 16:144], b[:, 144:176]).reshape(n, 16, 16)
    return scaled(f16(b, 0), ls, T.IQ5NL_F32[q + 32 * extra[:, :, None]])


def dequantize_iq6_k(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    _, b = split_rows(rows, n_per_row, "IQ6_K")
    n = len(b)
    extra = bits16(u16(b, 2))
    ls = b[:, 4:20].view(np.int8)
    low = fields(b[:, 20:148].reshape(n, 4, 32), 4, inner=False).reshape(n, 8, 32)
    high = fields(b[:, 148:212].reshape(n, 2, 32), 2, inner=False).reshape(n, 8, 32)
    q = (low | (high << 4)).reshape(n, 16, 16)
    return scaled(f16(b, 0), ls, T.IQ6K_GRID[extra[:, :, None], q])


DEQUANTIZERS = {
    "IQ2_K": dequantize_iq2_k,
    "IQ3_K": dequantize_iq3_k,
    "IQ4_K": dequantize_iq4_k,
    "IQ5_K": dequantize_iq5_k,
    "IQ6_K": dequantize_iq6_k,
}
