"""Interleaved layouts of ik_llama.cpp's own types: IQ2_K_R4, IQ3_K_R4, IQ4_K_R4, IQ5_K_R4,
IQ4_KS_R4, IQ5_KS_R4, IQ2_BN_R4.

Facts from ik_llama.cpp (iqk_quantize.cpp: repack_iq*_k, repack_iq*_ks, repack_iq2_bn and
the matching dequantize_row_*_r4), all lossless regroupings of 4 rows. For row k, 32-value
sub-block ib and 16-value sub-block s of a 256-value super-block:

- f16 scales d of the 4 rows side by side; the _KS types and IQ2_BN have one f32 row scale
  instead, and the group starts with the 4 rows' f32 scales;
- `extra` (one bit per 16 values: which half of the non-linear table): byte k holds the bits
  of the even sub-blocks 2ib at bit ib, byte 4+k those of the odd ones;
- sub-scales get position 4s+k (IQ2_K: 4-bit, IQ3_K: 4-bit + sign bit, IQ4_K/IQ5_K: 6-bit)
  and are stored as planes: nibbles in a 32-byte table (byte b: positions b, b+32), IQ3_K's
  signs as bits (byte b bit j: position b+8j), the 6-bit types' high 2 bits in 16 bytes
  (byte b: positions b, b+16, b+32, b+48). The _KS types' scale bytes go to 4ib+k as they are;
- 4-bit parts: byte 64ib+16l+4k+i holds values 32ib+A[l]+i and 32ib+A[l]+8+i, A = 0, 16, 4, 20;
  IQ5_K/IQ5_KS's fifth bits: byte 16ib+4k+i, bit b = value 32ib+O[b]+i, O = 0, 8, 16, 24, 4,
  12, 20, 28; IQ2_K/IQ3_K's 2-bit parts and IQ3_K's third bits as in Q2_K_R4/Q3_K_R4;
- IQ2_BN_R4: per 64 values, byte 16l+4k+i holds values 16l+4m+i at bits 2m.

IQ2_BN_R4 dequantizes directly as d*(q-1) (ik_llama.cpp's R4 formula, which applies the row
scale; the golden sums of IQ2_BN and IQ2_BN_R4 differ).
"""

from __future__ import annotations

from dataclasses import replace

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
    pack_le,
    planes,
    ri,
    scatter_unpack,
    split,
    unpack_le,
    unplanes,
    unri,
)

_IDX_5TH = index_table(np.arange(8) * 32, [0, 8, 16, 24, 4, 12, 20, 28], QUAD)  # [ib, b, i]
_IDX_BN = index_table(np.arange(4) * 16, QUAD * 4, QUAD)  # [l, m, i]


def _rows_back(a: np.ndarray) -> np.ndarray:
    return unri(a, 4, (a.shape[-1] // 4,), 1)[..., 0]


def _pos(a: np.ndarray) -> np.ndarray:
    """Per-row sub-scales [M, 4, n] -> position order 4s+k, [M, 4n]."""
    return ri(a[..., None])


def _extra(e: np.ndarray) -> np.ndarray:
    """Plain 16-bit extra (2 bytes per row) -> the group's 8 extra bytes."""
    bits = unpack_le(e, 1)  # [M, 4, 16], bit 2ib+h
    per_half = bits.reshape(*bits.shape[:-1], 8, 2).swapaxes(-1, -2)  # [M, 4, h, ib]
    return ri(pack_le(per_half, 1))  # [M, 4, h, 1] -> byte 4h+k


def _unextra(b: np.ndarray) -> np.ndarray:
    per_half = unpack_le(unri(b, 4, (2,), 1)[..., 0], 1).reshape(b.shape[0], 4, 2, 8)
    return pack_le(per_half.swapaxes(-1, -2).reshape(b.shape[0], 4, 16), 1)


def _scales6(sl: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """IQ4_K/IQ5_K plain scales_l (8) + scales_h (4) -> R4 scales_h (16) + scales_l (32)."""
    pos = _pos(unpack_le(sl, 4) | (unpack_le(sh, 2) << U8(4)))
    return cat(planes(pos >> U8(4), 2), planes(pos, 4))


def _unscales6(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, lo = split(b, 16, 32)
    s6 = _rows_back(unplanes(lo, 4) | (unplanes(h, 2) << U8(4)))
    return pack_le(s6, 4), pack_le(s6 >> U8(4), 2)


def _nib(v):
    return ri(gather_pack(v, IDX_NIB_K, 4))


def _unnib(b):
    return scatter_unpack(unri(b, 4, (8, 4), 4), IDX_NIB_K, 4, 256)


def _two(v):
    return ri(gather_pack(v, IDX_2BIT, 2))


def _untwo(b):
    return scatter_unpack(unri(b, 4, (8, 2), 4), IDX_2BIT, 2, 256)


def _values_2bit(qs: np.ndarray) -> np.ndarray:
    """IQ2_K/IQ3_K low parts: 64 bytes -> 256 values (2-bit planes per 128 values)."""
    return unplanes(qs.reshape(*qs.shape[:-1], 2, 32), 2).reshape(*qs.shape[:-1], 256)


def _bytes_2bit(v: np.ndarray) -> np.ndarray:
    return planes(v.reshape(*v.shape[:-1], 2, 128), 2).reshape(*v.shape[:-1], 64)


def _values_4bit(qs: np.ndarray) -> np.ndarray:
    """IQ4_K/IQ4_KS low parts: 128 bytes -> 256 values (nibble planes per 32 values)."""
    return unplanes(qs.reshape(*qs.shape[:-1], 8, 16), 4).reshape(*qs.shape[:-1], 256)


def _bytes_4bit(v: np.ndarray) -> np.ndarray:
    return planes(v.reshape(*v.shape[:-1], 8, 32), 4).reshape(*v.shape[:-1], 128)


def _values_5bit(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """IQ5_K/IQ5_KS: 128 low bytes (nibble planes per 64) + 32 high bytes (bit s of byte t =
    value 32s+t) -> 256 values."""
    low = unplanes(qs.reshape(*qs.shape[:-1], 4, 32), 4).reshape(*qs.shape[:-1], 256)
    return low | (unplanes(qh, 1) << U8(4))


def _bytes_5bit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = planes(v.reshape(*v.shape[:-1], 4, 64), 4).reshape(*v.shape[:-1], 128)
    return low, planes(v >> U8(4), 1)


def _fifth(v):
    return ri(gather_pack(v >> U8(4), _IDX_5TH, 1))


def _unfifth(b):
    return scatter_unpack(unri(b, 4, (8,), 4), _IDX_5TH, 1, 256) << U8(4)


# --- the K types ---------------------------------------------------------------------------


def _iq2_k_fwd(x):
    d, extra, scales, qs = split(x, 2, 2, 8, 64)
    return cat(ri(d), _extra(extra), planes(_pos(unpack_le(scales, 4)), 4), _two(_values_2bit(qs)))


def _iq2_k_inv(y):
    d, extra, scales, qs = split(y, 8, 8, 32, 256)
    sc = pack_le(_rows_back(unplanes(scales, 4)), 4)
    return cat(unri(d, 4, (), 2), _unextra(extra), sc, _bytes_2bit(_untwo(qs)))


def _iq3_k_fwd(x):
    d, extra, sh, sl, qs, qh = split(x, 2, 2, 2, 8, 64, 32)
    v = _values_2bit(qs) | (unplanes(qh, 1) << U8(2))
    third = ri(gather_pack(v >> U8(2), IDX_1BIT_SEQ, 1))
    return cat(ri(d), _extra(extra), planes(_pos(unpack_le(sh, 1)), 1), planes(_pos(unpack_le(sl, 4)), 4),
               _two(v), third)


def _iq3_k_inv(y):
    d, extra, sh, sl, qs, qh = split(y, 8, 8, 8, 32, 256, 128)
    v = _untwo(qs) | (scatter_unpack(unri(qh, 4, (8,), 4), IDX_1BIT_SEQ, 1, 256) << U8(2))
    signs = pack_le(_rows_back(unplanes(sh, 1)), 1)
    mags = pack_le(_rows_back(unplanes(sl, 4)), 4)
    return cat(unri(d, 4, (), 2), _unextra(extra), signs, mags, _bytes_2bit(v), planes(v >> U8(2), 1))


def _iq4_k_fwd(x):
    d, extra, sh, sl, qs = split(x, 2, 2, 4, 8, 128)
    return cat(ri(d), _extra(extra), _scales6(sl, sh), _nib(_values_4bit(qs)))


def _iq4_k_inv(y):
    d, extra, scales, qs = split(y, 8, 8, 48, 512)
    sl, sh = _unscales6(scales)
    return cat(unri(d, 4, (), 2), _unextra(extra), sh, sl, _bytes_4bit(_unnib(qs)))


def _iq5_k_fwd(x):
    d, extra, sh, sl, qs, qh = split(x, 2, 2, 4, 8, 128, 32)
    v = _values_5bit(qs, qh)
    return cat(ri(d), _extra(extra), _scales6(sl, sh), _nib(v), _fifth(v))


def _iq5_k_inv(y):
    d, extra, scales, qs, qh = split(y, 8, 8, 48, 512, 128)
    sl, sh = _unscales6(scales)
    v = _unnib(qs) | _unfifth(qh)
    return cat(unri(d, 4, (), 2), _unextra(extra), sh, sl, *_bytes_5bit(v))


# --- the KS types (f32 row scale up front) -------------------------------------------------


def _iq4_ks_fwd(x):
    scales, qs = split(x, 8, 128)
    return cat(ri(scales[..., None]), _nib(_values_4bit(qs)))


def _iq4_ks_inv(y):
    scales, qs = split(y, 32, 512)
    return cat(_rows_back(scales), _bytes_4bit(_unnib(qs)))


def _iq5_ks_fwd(x):
    scales, qs, qh = split(x, 8, 128, 32)
    v = _values_5bit(qs, qh)
    return cat(ri(scales[..., None]), _nib(v), _fifth(v))


def _iq5_ks_inv(y):
    scales, qs, qh = split(y, 32, 512, 128)
    return cat(_rows_back(scales), *_bytes_5bit(_unnib(qs) | _unfifth(qh)))


# --- IQ2_BN --------------------------------------------------------------------------------


def _iq2_bn_fwd(x):
    return ri(gather_pack(unplanes(x, 2), _IDX_BN, 2))


def _iq2_bn_inv(y):
    return planes(scatter_unpack(unri(y, 4, (4,), 4), _IDX_BN, 2, 64), 2)


def _iq2_bn_values(y: np.ndarray, n: int) -> np.ndarray:
    g, nb = y.shape[0], n // 64
    d = np.ascontiguousarray(y[:, :16]).view("<f4")  # [G, 4]
    q = scatter_unpack(unri(y[:, 16:].reshape(g * nb, 64), 4, (4,), 4), _IDX_BN, 2, 64)  # [M, 4, 64]
    q = (q.astype(np.int8) - np.int8(1)).astype(np.float32).reshape(g, nb, 4, 64).transpose(0, 2, 1, 3)
    return d[:, :, None, None] * q


LAYOUTS = [
    blockwise("IQ2_K_R4", "IQ2_K", 4, 256, 76, _iq2_k_fwd, _iq2_k_inv),
    blockwise("IQ3_K_R4", "IQ3_K", 4, 256, 110, _iq3_k_fwd, _iq3_k_inv),
    blockwise("IQ4_K_R4", "IQ4_K", 4, 256, 144, _iq4_k_fwd, _iq4_k_inv),
    blockwise("IQ5_K_R4", "IQ5_K", 4, 256, 176, _iq5_k_fwd, _iq5_k_inv),
    blockwise("IQ4_KS_R4", "IQ4_KS", 4, 256, 136, _iq4_ks_fwd, _iq4_ks_inv, meta=4),
    blockwise("IQ5_KS_R4", "IQ5_KS", 4, 256, 168, _iq5_ks_fwd, _iq5_ks_inv, meta=4),
    replace(blockwise("IQ2_BN_R4", "IQ2_BN", 4, 64, 16, _iq2_bn_fwd, _iq2_bn_inv, meta=4), direct=_iq2_bn_values),
]
