"""IQ2_KS, IQ2_KL, IQ3_KS, IQ4_KS, IQ4_KSS, IQ5_KS: 256-value blocks without a block scale;
each row starts with one row scale `d` (f16 for IQ2_KS/IQ2_KL/IQ3_KS, f32 for the others)
and each 32 values have an integer scale.

Facts from ik_llama.cpp (ggml-common.h: block_iq*_ks, block_iq2_kl, block_iq4_kss;
iqk_quantize.cpp: the matching dequantize_row_*). Value p of a block sits in sub-block
s = p // 32 at offset t; G = p // 64.

- IQ2_KS (extra u16, scales[4], qs[64]): scale nibble s%2 of scales[s//2] with bit 8+s of
  extra as bit 4, minus 16; index bits 2(s%4) of qs[32(s//4) + t], grid iq2nl (second half
  where bit s of extra is set).
- IQ2_KL (scales_h u16, scales_l[4], qs[64], qh[16]): scale nibble s//4 of scales_l[s%4]
  with bits 2s of scales_h as bits 4-5, minus 32; values come in pairs: pair j = t//2 has
  the 5-bit index nibble s%2 of qs[16G + j] with bit s of qh[j] on top, into iq2kl.
- IQ3_KS (extra u16, scales[4], qs[64], qh[32]): scale nibble s//4 of scales[s%4] with bit s
  of extra as bit 4, minus 16; index bits 2(s%4) of qs[32(s//4) + t] with bit s of qh[t] as
  bit 2, grid iq3nl (second half where bit 8+s of extra is set).
- IQ4_KS (scales[8], qs[128]): scale (scales[s] & 254) - 127, grid iq4k (second half where
  scales[s] & 1); index nibble t//16 of qs[16s + t%16].
- IQ4_KSS (qs as 128 uint16, 8 per sub-block): bit 0 of the 8 words are the scale byte
  (word k at bit k), used like IQ4_KS's; the word with bit 0 cleared, xor itself shifted
  right by one, gives 4 index nibbles, read like IQ4_KS's qs.
- IQ5_KS (scales[8], qs[128], qh[32]): scales as IQ4_KS, 5-bit index as IQ5_K's, grid
  iq5nl.

Every value is (d * scale) * grid value in float32, as ik_llama.cpp computes it.
"""

from __future__ import annotations

import numpy as np

from . import iqk_tables as T
from .iqk_common import bits16, fields, five_bits, row_scale, scaled, split_rows, u16


def dequantize_iq2_ks(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ2_KS")
    n = len(b)
    extra = bits16(u16(b, 0))
    lo = fields(b[:, 2:6], 4, inner=True).reshape(n, 8)
    ls = (lo | (extra[:, 8:] << 4)).astype(np.int16) - 16
    q = fields(b[:, 6:70].reshape(n, 2, 32), 2, inner=False).reshape(n, 8, 32)
    return scaled(row_scale(meta, "<f2", n_per_row, 256), ls, T.IQ2NL_F32[q + 4 * extra[:, :8, None]])


def dequantize_iq2_kl(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ2_KL")
    n = len(b)
    lo = fields(b[:, 2:6], 4, inner=False).reshape(n, 8)
    hi = (u16(b, 0)[:, None] >> np.arange(0, 16, 2, dtype=np.uint16)) & 3
    ls = (lo | (hi << 4)).astype(np.int16) - 32
    nib = fields(b[:, 6:70].reshape(n, 4, 16), 4, inner=False).reshape(n, 8, 16)
    q = nib | (fields(b[:, 70:86], 1, inner=False) << 4)
    return scaled(row_scale(meta, "<f2", n_per_row, 256), ls, T.IQ2KL_PAIRS[q])


def dequantize_iq3_ks(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ3_KS")
    n = len(b)
    extra = bits16(u16(b, 0))
    lo = fields(b[:, 2:6], 4, inner=False).reshape(n, 8)
    ls = (lo | (extra[:, :8] << 4)).astype(np.int16) - 16
    low = fields(b[:, 6:70].reshape(n, 2, 32), 2, inner=False).reshape(n, 8, 32)
    q = low | (fields(b[:, 70:102], 1, inner=False) << 2)
    return scaled(row_scale(meta, "<f2", n_per_row, 256), ls, T.IQ3NL_F32[q + 8 * extra[:, 8:, None]])


def _byte_scales(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IQ4_KS-style scale bytes [n, 8] -> (integer scales, grid half 0/1)."""
    return (sc & 254).astype(np.int16) - 127, sc & 1


def _iq4_values(d: np.ndarray, sc: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """IQ4_KS/IQ4_KSS values from row scales d [n], scale bytes [n, 8], qs [n, 128]."""
    n = len(qs)
    ls, half = _byte_scales(sc)
    q = fields(qs.reshape(n, 8, 16), 4, inner=False).reshape(n, 8, 32)
    return scaled(d, ls, T.IQ4K_F32[q + 16 * half[:, :, None]])


def dequantize_iq4_ks(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ4_KS")
    return _iq4_values(row_scale(meta, "<f4", n_per_row, 256), b[:, :8], b[:, 8:136])


def dequantize_iq4_kss(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ4_KSS")
    n = len(b)
    words = b.view("<u2").reshape(n, 8, 8)
    sc = ((words & 1) << np.arange(8, dtype=np.uint16)).sum(axis=2, dtype=np.uint16).astype(np.uint8)
    w = words & 0xFFFE
    qs = (w ^ (w >> 1)).astype("<u2").view(np.uint8).reshape(n, 128)
    return _iq4_values(row_scale(meta, "<f4", n_per_row, 256), sc, qs)


def dequantize_iq5_ks(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    meta, b = split_rows(rows, n_per_row, "IQ5_KS")
    ls, half = _byte_scales(b[:, :8])
    q = five_bits(b[:, 8:136], b[:, 136:168])
    return scaled(row_scale(meta, "<f4", n_per_row, 256), ls, T.IQ5NL_F32[q + 32 * half[:, :, None]])


DEQUANTIZERS = {
    "IQ2_KS": dequantize_iq2_ks,
    "IQ2_KL": dequantize_iq2_kl,
    "IQ3_KS": dequantize_iq3_ks,
    "IQ4_KS": dequantize_iq4_ks,
    "IQ4_KSS": dequantize_iq4_kss,
    "IQ5_KS": dequantize_iq5_ks,
}
