"""Mainline i-quants with lattice grids: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S.

All use super-blocks of 256 values in 8 sub-blocks of 32, each made of groups of 8 values
(IQ3 grids give 4 values per index, two indices per group). Block layouts, after
ik_llama.cpp's ggml-common.h (f16 `d` first unless said otherwise, integers little endian):

- IQ2_XXS (66 bytes): d; per sub-block 8 bytes: 4 grid indices (iq2xxs_grid) and a 32-bit
  word holding 4 x 7 sign bits (via ksigns) and, in bits 28..31, the scale s; the scale is
  d * (0.5 + s) * 0.25.
- IQ2_XS (74 bytes): d; 32 16-bit words (9-bit iq2xs_grid index, 7-bit ksigns index); 8
  scale bytes, one nibble per half sub-block: d * (0.5 + s) * 0.25.
- IQ2_S (82 bytes): d; 32 low index bytes; 32 sign bytes; 8 qh bytes (2 high index bits per
  group); 8 scale bytes as in IQ2_XS; grid iq2s_grid.
- IQ3_XXS (98 bytes): d; 64 iq3xxs_grid indices; per sub-block a 32-bit word as in IQ2_XXS,
  with scale d * (0.5 + s) * 0.5.
- IQ3_S (110 bytes): d; 64 low index bytes; 8 qh bytes (bit k of byte b: 9th bit of index k
  of sub-block b); 32 sign bytes; 4 scale bytes, one nibble per sub-block: d * (1 + 2s).
- IQ1_S (50 bytes): d; 32 low index bytes; per sub-block a 16-bit word: 3 high index bits
  per group, a 3-bit scale s (d * (2s + 1)) in bits 12..14 and the delta sign in bit 15.
- IQ1_M (56 bytes, no d field): 32 low index bytes; 16 qh bytes (per group 3 high index
  bits and a delta sign bit); 4 16-bit scale words holding two 3-bit scales per sub-block
  (one per half) and, in their top nibbles, the f16 bits of d.

IQ1 values are dl * (grid + delta), delta = +-0.125. Arithmetic is float32 in ik_llama.cpp's
order (dequantize_row_* in ggml-quants.c), so results are bit-identical to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import UnsupportedTypeError
from .iquants_tables import IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS

QK_K = 256
F32 = np.float32
_DELTA = F32(0.125)

# Tables as whole words so that one gather fetches a group: grids, and the +-1 factors of a
# sign byte (bit j set: value j negative). Grid values fit in int8 and so do their products.
_IQ2XXS = IQ2XXS_GRID.astype(np.int8).view("<u8")[:, 0]
_IQ2XS = IQ2XS_GRID.astype(np.int8).view("<u8")[:, 0]
_IQ2S = IQ2S_GRID.astype(np.int8).view("<u8")[:, 0]
_IQ3XXS = IQ3XXS_GRID.astype(np.int8).view("<u4")[:, 0]
_IQ3S = IQ3S_GRID.astype(np.int8).view("<u4")[:, 0]
_IQ1S = IQ1S_GRID.view("<u8")[:, 0]
_PM = np.where((np.arange(256)[:, None] >> np.arange(8)) & 1, -1, 1).astype(np.int8).view("<u8")[:, 0]
_KPM = _PM[KSIGNS]


def _gather(words: np.ndarray, idx: np.ndarray, width: int) -> np.ndarray:
    """words[idx] as int8 values: [..., k] indices of width-byte entries -> [..., k*width/8, 8]."""
    v = np.ascontiguousarray(words[idx]).view(np.int8)
    return v.reshape(*idx.shape[:-1], idx.shape[-1] * width // 8, 8)


def _blocks(rows: np.ndarray, n_per_row: int, block_bytes: int, name: str) -> np.ndarray:
    """Check the rows' geometry and view them as [n_blocks, block_bytes]."""
    a = np.asarray(rows)
    if a.dtype != np.uint8 or a.ndim != 2:
        raise UnsupportedTypeError(
            f"{name}: rows must be a 2-D uint8 array [n_rows, row_bytes], got {a.dtype} {a.shape}"
        )
    if n_per_row <= 0 or n_per_row % QK_K:
        raise UnsupportedTypeError(f"row size {n_per_row} not divisible by block size {QK_K} for {name}")
    want = n_per_row // QK_K * block_bytes
    if a.shape[1] != want:
        raise UnsupportedTypeError(f"{name}: rows of {n_per_row} values need {want} bytes, got {a.shape[1]}")
    return np.ascontiguousarray(a).reshape(-1, block_bytes)


def _f16(b: np.ndarray) -> np.ndarray:
    """[nb, 2] bytes -> [nb] float32 (exact)."""
    return np.ascontiguousarray(b).view("<f2")[:, 0].astype(F32)


def _u16(b: np.ndarray) -> np.ndarray:
    """[..., 2k] bytes -> [..., k] uint16."""
    return np.ascontiguousarray(b).view("<u2")


def _u32(b: np.ndarray) -> np.ndarray:
    """[..., 4k] bytes -> [..., k] uint32."""
    return np.ascontiguousarray(b).view("<u4")


def _half_scales(scales: np.ndarray, d: np.ndarray, factor: F32) -> np.ndarray:
    """IQ2_XS/IQ2_S: [nb, 8] scale bytes -> [nb, 8, 4] group scales d * (0.5 + s) * factor."""
    s = np.stack([scales & 15, scales >> 4], axis=-1).astype(F32)  # [nb, 8, 2]
    db = (d[:, None, None] * (F32(0.5) + s)) * factor
    return np.repeat(db, 2, axis=-1)


def _packed_signs_scale(words: np.ndarray, d: np.ndarray, factor: F32) -> tuple[np.ndarray, np.ndarray]:
    """IQ2_XXS/IQ3_XXS: [nb, 8] 32-bit words -> +-1 factors [nb, 8, 4, 8] and scales [nb, 8]."""
    fields = (words[..., None] >> (7 * np.arange(4, dtype=np.uint32))) & 127
    db = (d[:, None] * (F32(0.5) + (words >> 28).astype(F32))) * factor
    return _gather(_KPM, fields, 8), db


def _scaled(db: np.ndarray, signed_grid: np.ndarray) -> np.ndarray:
    """db * (grid * sign): the sign flip commutes with the rounding of ggml's db * grid * sign."""
    return db * signed_grid.astype(F32)


def dequantize_iq2_xxs(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 66, "IQ2_XXS")
    d = _f16(b[:, :2])
    q = b[:, 2:].reshape(-1, 8, 8)
    pm, db = _packed_signs_scale(_u32(q[..., 4:])[..., 0], d, F32(0.25))
    return _scaled(db[..., None, None], _gather(_IQ2XXS, q[..., :4], 8) * pm)


def dequantize_iq2_xs(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 74, "IQ2_XS")
    d = _f16(b[:, :2])
    qs = _u16(b[:, 2:66]).reshape(-1, 8, 4)
    db = _half_scales(b[:, 66:74], d, F32(0.25))
    return _scaled(db[..., None], _gather(_IQ2XS, qs & 511, 8) * _gather(_KPM, qs >> 9, 8))


def dequantize_iq2_s(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 82, "IQ2_S")
    d = _f16(b[:, :2])
    lo = b[:, 2:34].reshape(-1, 8, 4).astype(np.uint16)
    signs = b[:, 34:66].reshape(-1, 8, 4)
    qh = b[:, 66:74].astype(np.uint16)
    hi = (qh[..., None] >> (2 * np.arange(4, dtype=np.uint16))) & 3
    db = _half_scales(b[:, 74:82], d, F32(0.25))
    return _scaled(db[..., None], _gather(_IQ2S, lo | (hi << 8), 8) * _gather(_PM, signs, 8))


def dequantize_iq3_xxs(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 98, "IQ3_XXS")
    d = _f16(b[:, :2])
    idx = b[:, 2:66].reshape(-1, 8, 8)
    pm, db = _packed_signs_scale(_u32(b[:, 66:98]), d, F32(0.5))
    return _scaled(db[..., None, None], _gather(_IQ3XXS, idx, 4) * pm)


def dequantize_iq3_s(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 110, "IQ3_S")
    d = _f16(b[:, :2])
    lo = b[:, 2:66].reshape(-1, 8, 8).astype(np.uint16)
    qh = b[:, 66:74].astype(np.uint16)
    hi = (qh[..., None] >> np.arange(8, dtype=np.uint16)) & 1
    signs = b[:, 74:106].reshape(-1, 8, 4)
    sc = b[:, 106:110]
    s = np.stack([sc & 15, sc >> 4], axis=-1).reshape(-1, 8).astype(np.int32)
    db = d[:, None] * (1 + 2 * s).astype(F32)  # [nb, 8]
    return _scaled(db[..., None, None], _gather(_IQ3S, lo | (hi << 8), 4) * _gather(_PM, signs, 8))


def dequantize_iq1_s(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 50, "IQ1_S")
    d = _f16(b[:, :2])
    lo = b[:, 2:34].reshape(-1, 8, 4).astype(np.uint16)
    qh = _u16(b[:, 34:50])  # [nb, 8]
    hi = (qh[..., None] >> (3 * np.arange(4, dtype=np.uint16))) & 7
    dl = d[:, None] * (2 * ((qh >> 12) & 7).astype(np.int32) + 1).astype(F32)
    delta = np.where(qh & 0x8000, -_DELTA, _DELTA)
    v = _gather(_IQ1S, lo | (hi << 8), 8).astype(F32) + delta[..., None, None]
    return dl[..., None, None] * v


def dequantize_iq1_m(rows: np.ndarray, n_per_row: int) -> np.ndarray:
    b = _blocks(rows, n_per_row, 56, "IQ1_M")
    lo = b[:, :32].reshape(-1, 8, 4).astype(np.uint16)
    qh = b[:, 32:48].reshape(-1, 8, 2)
    sc = _u16(b[:, 48:56]).astype(np.uint32)  # [nb, 4]
    d_bits = (sc[:, 0] >> 12) | ((sc[:, 1] >> 8) & 0xF0) | ((sc[:, 2] >> 4) & 0xF00) | (sc[:, 3] & 0xF000)
    d = d_bits.astype(np.uint16).view("<f2").astype(F32)
    nib = np.stack([qh & 15, qh >> 4], axis=-1).reshape(-1, 8, 4)  # per group: 3 index bits, delta sign
    idx = lo | ((nib & 7).astype(np.uint16) << 8)
    delta = np.where(nib & 8, -_DELTA, _DELTA)
    shifts = np.array([[0, 3], [6, 9]], dtype=np.uint32)  # [sub-block parity, half]
    s = (np.repeat(sc, 2, axis=1).reshape(-1, 4, 2, 1) >> shifts).reshape(-1, 8, 2) & 7
    dl = d[:, None, None] * (2 * s.astype(np.int32) + 1).astype(F32)  # [nb, 8, 2]
    v = _gather(_IQ1S, idx, 8).astype(F32) + delta[..., None]  # [nb, 8, 4, 8]
    return np.repeat(dl, 2, axis=-1)[..., None] * v


DEQUANTIZERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "IQ2_XXS": dequantize_iq2_xxs,
    "IQ2_XS": dequantize_iq2_xs,
    "IQ2_S": dequantize_iq2_s,
    "IQ3_XXS": dequantize_iq3_xxs,
    "IQ3_S": dequantize_iq3_s,
    "IQ1_S": dequantize_iq1_s,
    "IQ1_M": dequantize_iq1_m,
}
