"""Interleaved layouts of the K-quants: Q2_K_R4, Q3_K_R4, Q4_K_R4, Q5_K_R4, Q6_K_R4.

Facts from ik_llama.cpp (iqk_quantize.cpp: repack_q*_k, dequantize_row_q*_k_r4). All are
lossless regroupings of 4 rows' 256-value super-blocks. With V the 256 quant values of a
row's super-block and "sub-block ib" its 32 values 32ib..32ib+31:

- super-block scales: the 4 rows' f16 d side by side (Q2_K, Q4_K, Q5_K: then the 4 dmin);
- 6-bit sub-scales (Q3_K's 16, Q4_K/Q5_K's 8 scales and 8 mins) get position 4s+k for
  sub-scale s of row k, and are stored as planes: low nibbles in scales_l (byte b: positions
  b and b+32), high 2 bits in scales_h (byte b: positions b, b+16, b+32, b+48); Q4_K/Q5_K put
  scale and min of position p in the two nibbles of scales_l[p] and their high bits in one
  nibble of scales_h. Q2_K's 4+4-bit and Q6_K's 8-bit scales are byte-interleaved (4s+k);
- 4-bit parts: byte 64ib+16l+4k+i holds values 32ib+A[l]+i and 32ib+A[l]+8+i of row k,
  A = 0, 16, 4, 20;
- 2-bit parts (Q2_K, Q3_K): byte 32ib+16h+4k+i holds values 32ib+16h+4b+i at bits 2b;
- high bits: Q3_K byte 16ib+4k+i bit b = value 32ib+4b+i; Q5_K the same byte holds
  values 32ib+O[b]+i, O = 0, 8, 4, 12, 16, 24, 20, 28; Q6_K's 2-bit highs: byte
  32ib+16h+4k+i holds values 32ib+16h+{0, 8, 4, 12}[f]+i at bits 2f.
"""

from __future__ import annotations

import numpy as np

from .interleaved_common import (
    IDX_1BIT_SEQ,
    IDX_2BIT,
    IDX_NIB_K,
    QUAD,
    U8,
    blockwise,
    cat,
    gather_pack,
    index_table,
    planes,
    ri,
    scatter_unpack,
    split,
    unplanes,
    unri,
)

_IDX_Q5_HIGH = index_table(np.arange(8) * 32, [0, 8, 4, 12, 16, 24, 20, 28], QUAD)  # [ib, b, i]
_IDX_Q6_HIGH = index_table(np.arange(8) * 32, [0, 16], [0, 8, 4, 12], QUAD)  # [ib, h, f, i]


def _rows_first(a: np.ndarray) -> np.ndarray:
    """[M, R, n] per-row scale values -> interleaved position order [M, n*R] (4s + k)."""
    return ri(a[..., None])


def _rows_back(a: np.ndarray, rows: int = 4) -> np.ndarray:
    return unri(a, rows, (a.shape[-1] // rows,), 1)[..., 0]


def _scales6(s6: np.ndarray) -> np.ndarray:
    """6-bit sub-scales [M, 4, n] -> scales_h + scales_l bytes."""
    pos = _rows_first(s6)
    return cat(planes(pos >> U8(4), 2), planes(pos, 4))


def _unscales6(b: np.ndarray) -> np.ndarray:
    h, lo = split(b, b.shape[-1] // 3, 2 * b.shape[-1] // 3)
    return _rows_back(unplanes(lo, 4) | (unplanes(h, 2) << U8(4)))


def _nib(v):  # values [M, 4, 256] -> 512 bytes of 4-bit parts
    return ri(gather_pack(v, IDX_NIB_K, 4))


def _unnib(b):
    return scatter_unpack(unri(b, 4, (8, 4), 4), IDX_NIB_K, 4, 256)


def _two(v):  # values [M, 4, 256] -> 256 bytes of 2-bit parts
    return ri(gather_pack(v, IDX_2BIT, 2))


def _untwo(b):
    return scatter_unpack(unri(b, 4, (8, 2), 4), IDX_2BIT, 2, 256)


# --- Q4_K / Q5_K 12-byte scale+min packing -------------------------------------------------


def _k4_scales(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes -> (8 scales, 8 mins), 6 bits each (ggml's get_scale_min_k4)."""
    a, b, c = q[..., 0:4], q[..., 4:8], q[..., 8:12]
    d = np.concatenate([a & U8(63), (c & U8(15)) | ((a >> U8(6)) << U8(4))], axis=-1)
    m = np.concatenate([b & U8(63), (c >> U8(4)) | ((b >> U8(6)) << U8(4))], axis=-1)
    return d, m


def _k4_pack(d: np.ndarray, m: np.ndarray) -> np.ndarray:
    a = d[..., :4] | ((d[..., 4:] >> U8(4)) << U8(6))
    b = m[..., :4] | ((m[..., 4:] >> U8(4)) << U8(6))
    c = (d[..., 4:] & U8(15)) | ((m[..., 4:] & U8(15)) << U8(4))
    return cat(a, b, c)


def _dm_scales(d6: np.ndarray, m6: np.ndarray) -> np.ndarray:
    """Q4_K_R4/Q5_K_R4 scales_h (16) + scales_l (32) from 6-bit scales and mins [M, 4, 8]."""
    pd, pm = _rows_first(d6), _rows_first(m6)
    low = (pd & U8(15)) | (pm << U8(4))
    high = (pd >> U8(4)) | ((pm >> U8(4)) << U8(2))
    return cat(planes(high, 4), low)


def _un_dm_scales(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, low = split(b, 16, 32)
    high = unplanes(h, 4)
    pd = (low & U8(15)) | ((high & U8(3)) << U8(4))
    pm = (low >> U8(4)) | ((high >> U8(2)) << U8(4))
    return _rows_back(pd), _rows_back(pm)


# --- the five types ------------------------------------------------------------------------


def _q2_values(qs: np.ndarray) -> np.ndarray:
    """Q2_K/Q3_K low 2-bit parts: 64 bytes -> 256 values (planes per 128)."""
    return unplanes(qs.reshape(*qs.shape[:-1], 2, 32), 2).reshape(*qs.shape[:-1], 256)


def _q2_bytes(v: np.ndarray) -> np.ndarray:
    return planes(v.reshape(*v.shape[:-1], 2, 128), 2).reshape(*v.shape[:-1], 64)


def _q2_k_fwd(x):
    scales, qs, d, dmin = split(x, 16, 64, 2, 2)
    return cat(ri(d), ri(dmin), ri(scales[..., None]), _two(_q2_values(qs)))


def _q2_k_inv(y):
    d, dmin, scales, qs = split(y, 8, 8, 64, 256)
    return cat(_rows_back(scales), _q2_bytes(_untwo(qs)), unri(d, 4, (), 2), unri(dmin, 4, (), 2))


def _q3_scales(q: np.ndarray) -> np.ndarray:
    """Q3_K's 12 scale bytes -> 16 6-bit values (low nibbles in bytes 0-7, 2-bit highs in 8-11)."""
    return unplanes(q[..., :8], 4) | (unplanes(q[..., 8:], 2) << U8(4))


def _q3_k_fwd(x):
    hmask, qs, scales, d = split(x, 32, 64, 12, 2)
    v = _q2_values(qs) | (unplanes(hmask, 1) << U8(2))
    qh = ri(gather_pack(v >> U8(2), IDX_1BIT_SEQ, 1))
    return cat(ri(d), _scales6(_q3_scales(scales)), qh, _two(v))


def _q3_k_inv(y):
    d, scales, qh, qs = split(y, 8, 48, 128, 256)
    v = _untwo(qs) | (scatter_unpack(unri(qh, 4, (8,), 4), IDX_1BIT_SEQ, 1, 256) << U8(2))
    s6 = _unscales6(scales)
    sc = cat(planes(s6, 4), planes(s6 >> U8(4), 2))
    return cat(planes(v >> U8(2), 1), _q2_bytes(v), sc, unri(d, 4, (), 2))


def _nibble_values(qs: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K 4-bit parts: 128 bytes -> 256 values (planes per 64)."""
    return unplanes(qs.reshape(*qs.shape[:-1], 4, 32), 4).reshape(*qs.shape[:-1], 256)


def _nibble_bytes(v: np.ndarray) -> np.ndarray:
    return planes(v.reshape(*v.shape[:-1], 4, 64), 4).reshape(*v.shape[:-1], 128)


def _q4_k_fwd(x):
    d, dmin, scales, qs = split(x, 2, 2, 12, 128)
    return cat(ri(d), ri(dmin), _dm_scales(*_k4_scales(scales)), _nib(_nibble_values(qs)))


def _q4_k_inv(y):
    d, dmin, scales, qs = split(y, 8, 8, 48, 512)
    return cat(unri(d, 4, (), 2), unri(dmin, 4, (), 2), _k4_pack(*_un_dm_scales(scales)), _nibble_bytes(_unnib(qs)))


def _q5_k_fwd(x):
    d, dmin, scales, qh, qs = split(x, 2, 2, 12, 32, 128)
    v = _nibble_values(qs) | (unplanes(qh, 1) << U8(4))
    high = ri(gather_pack(v >> U8(4), _IDX_Q5_HIGH, 1))
    return cat(ri(d), ri(dmin), _dm_scales(*_k4_scales(scales)), high, _nib(v))


def _q5_k_inv(y):
    d, dmin, scales, qh, qs = split(y, 8, 8, 48, 128, 512)
    v = _unnib(qs) | (scatter_unpack(unri(qh, 4, (8,), 4), _IDX_Q5_HIGH, 1, 256) << U8(4))
    return cat(unri(d, 4, (), 2), unri(dmin, 4, (), 2), _k4_pack(*_un_dm_scales(scales)),
               planes(v >> U8(4), 1), _nibble_bytes(v))


def _q6_k_fwd(x):
    ql, qh, scales, d = split(x, 128, 64, 16, 2)
    lead = x.shape[:-1]
    low = unplanes(ql.reshape(*lead, 2, 64), 4).reshape(*lead, 256)
    high = unplanes(qh.reshape(*lead, 2, 32), 2).reshape(*lead, 256)
    v = low | (high << U8(4))
    return cat(ri(d), ri(scales[..., None]), ri(gather_pack(high, _IDX_Q6_HIGH, 2)), _nib(v))


def _q6_k_inv(y):
    d, scales, qh, ql = split(y, 8, 64, 256, 512)
    lead = y.shape[:-1] + (4,)
    low = _unnib(ql)
    high = scatter_unpack(unri(qh, 4, (8, 2), 4), _IDX_Q6_HIGH, 2, 256)
    return cat(planes(low.reshape(*lead, 2, 128), 4).reshape(*lead, 128),
               planes(high.reshape(*lead, 2, 128), 2).reshape(*lead, 64),
               _rows_back(scales), unri(d, 4, (), 2))


LAYOUTS = [
    blockwise("Q2_K_R4", "Q2_K", 4, 256, 84, _q2_k_fwd, _q2_k_inv),
    blockwise("Q3_K_R4", "Q3_K", 4, 256, 110, _q3_k_fwd, _q3_k_inv),
    blockwise("Q4_K_R4", "Q4_K", 4, 256, 144, _q4_k_fwd, _q4_k_inv),
    blockwise("Q5_K_R4", "Q5_K", 4, 256, 176, _q5_k_fwd, _q5_k_inv),
    blockwise("Q6_K_R4", "Q6_K", 4, 256, 210, _q6_k_fwd, _q6_k_inv),
]
