"""Building blocks of the row-interleaved layouts (_R4/_R8): bit-field packing, row
interleaving and the `Layout` record each family module fills in.

Every function here is vectorized over a leading axis of block groups; none loops over
blocks or rows. Conventions used throughout the interleaved_* modules:

- a *group* is R consecutive rows (R = 4 or 8); `P` is a group's plain bytes, shape
  [G, R, plain_row_bytes], `Y` its interleaved bytes, shape [G, R * interleaved_row_bytes];
- inside a block, `X` is [M, R, block_bytes]: block `ib` of each of the R rows, side by side
  (M = groups x blocks per row), and `V` the decoded quant values of such blocks, uint8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

U8 = np.uint8


def mask(width: int) -> np.uint8:
    return U8((1 << width) - 1)


# --- bit fields ----------------------------------------------------------------------------


def planes(v: np.ndarray, width: int) -> np.ndarray:
    """[..., n] values of `width` bits -> [..., n*width/8] bytes; byte b holds v[b + j*m] in
    bits width*j (m = the byte count). The "plane" packing of ggml: Q4_0's nibbles, Q2_K's
    2-bit fields, Q3_K's hmask, ..."""
    per = 8 // width
    m = v.shape[-1] // per
    f = (v.reshape(*v.shape[:-1], per, m) & mask(width)).astype(U8)
    shifts = (np.arange(per, dtype=U8) * U8(width))[:, None]
    return np.bitwise_or.reduce(f << shifts, axis=-2)


def unplanes(b: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `planes`: [..., m] bytes -> [..., m*8/width] values."""
    per = 8 // width
    shifts = (np.arange(per, dtype=U8) * U8(width))[:, None]
    f = (b[..., None, :] >> shifts) & mask(width)
    return f.reshape(*b.shape[:-1], per * b.shape[-1])


def pack_le(v: np.ndarray, width: int) -> np.ndarray:
    """[..., n] values of `width` bits -> bytes, little-endian bit order: value i sits in
    byte i*width//8 at bit (i*width)%8 (a little-endian integer's bit fields)."""
    per = 8 // width
    f = (v.reshape(*v.shape[:-1], v.shape[-1] // per, per) & mask(width)).astype(U8)
    shifts = np.arange(per, dtype=U8) * U8(width)
    return np.bitwise_or.reduce(f << shifts, axis=-1)


def unpack_le(b: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `pack_le`."""
    per = 8 // width
    shifts = np.arange(per, dtype=U8) * U8(width)
    f = (b[..., None] >> shifts) & mask(width)
    return f.reshape(*b.shape[:-1], b.shape[-1] * per)


def gather_pack(v: np.ndarray, idx: np.ndarray, width: int) -> np.ndarray:
    """Bytes made of fields of `v` picked by an index table.

    `idx` has shape [..., F, W]: output byte [..., w] holds v[idx[..., f, w]] (its low `width`
    bits) at bit width*f. v [..., n] -> [..., *idx.shape[:-2], W]."""
    lead = v.shape[:-1]
    g = np.take(v.reshape(-1, v.shape[-1]), idx.ravel(), axis=1).reshape(*lead, *idx.shape)
    shifts = (np.arange(idx.shape[-2], dtype=U8) * U8(width))[:, None]
    return np.bitwise_or.reduce((g & mask(width)) << shifts, axis=-2)


def scatter_unpack(b: np.ndarray, idx: np.ndarray, width: int, n: int) -> np.ndarray:
    """Inverse of `gather_pack` where `idx` covers 0..n-1 once: bytes -> v [..., n]."""
    lead = b.shape[: b.ndim - (idx.ndim - 1)]
    shifts = (np.arange(idx.shape[-2], dtype=U8) * U8(width))[:, None]
    vals = (b[..., None, :] >> shifts) & mask(width)
    v = np.empty((int(np.prod(lead)), n), dtype=U8)
    v[:, idx.ravel()] = vals.reshape(v.shape[0], -1)
    return v.reshape(*lead, n)


# --- row interleaving ----------------------------------------------------------------------


def ri(a: np.ndarray) -> np.ndarray:
    """[M, R, *rest, W] -> [M, prod(rest)*R*W]: chunks of W bytes of the R rows side by side,
    row index just outside the chunk (the `4*k + i` pattern of ik_llama.cpp's layouts)."""
    return np.moveaxis(a, 1, -2).reshape(a.shape[0], -1)


def unri(flat: np.ndarray, rows: int, rest: tuple[int, ...], w: int) -> np.ndarray:
    """Inverse of `ri`: [M, prod(rest)*R*W] -> [M, R, *rest, W]."""
    a = flat.reshape(flat.shape[0], *rest, rows, w)
    return np.moveaxis(a, -2, 1)


def split(a: np.ndarray, *sizes: int) -> list[np.ndarray]:
    """Cut the last axis into consecutive fields of the given byte sizes."""
    out, pos = [], 0
    for s in sizes:
        out.append(a[..., pos : pos + s])
        pos += s
    if pos != a.shape[-1]:
        raise ValueError(f"fields take {pos} bytes, block has {a.shape[-1]}")
    return out


def cat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.ascontiguousarray(p, dtype=U8) for p in parts], axis=-1)


def u16(b: np.ndarray) -> np.ndarray:
    """[..., 2n] bytes -> [..., n] little-endian uint16."""
    return np.ascontiguousarray(b).view("<u2")


def u32(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<u4")


def as_bytes(a: np.ndarray) -> np.ndarray:
    """[..., n] little-endian integers or floats -> [..., n*itemsize] bytes."""
    a = np.ascontiguousarray(a)
    return a.view(U8).reshape(*a.shape[:-1], a.shape[-1] * a.dtype.itemsize)


def index_table(*axes: np.ndarray) -> np.ndarray:
    """Sum of broadcast 1-D offset arrays, one per output axis: index tables for gather_pack."""
    nd = len(axes)
    total = np.zeros((1,) * nd, dtype=np.intp)
    for i, a in enumerate(axes):
        shape = [1] * nd
        shape[i] = len(a)
        total = total + np.asarray(a, dtype=np.intp).reshape(shape)
    return total


# Index tables shared by several layouts.
QUAD = np.arange(4)
# 4-bit quants of a 32-value sub-block, R4 style: byte group l holds values A[l]+i (low
# nibble) and A[l]+8+i (high nibble), i = 0..3.
NIB_R4_STARTS = np.array([0, 16, 4, 20])
# 2-bit quants: byte (h, i) of a 32-value sub-block holds values 16h + 4b + i at bits 2b.
IDX_2BIT = index_table(np.arange(8) * 32, [0, 16], QUAD * 4, QUAD)  # [ib, h, b, i]
# one high bit per value: byte i of a sub-block holds values 4b + i at bit b, b = 0..7.
IDX_1BIT_SEQ = index_table(np.arange(8) * 32, np.arange(8) * 4, QUAD)  # [ib, b, i]
# 4-bit R4 pairs for the 8 sub-blocks of a 256-value super-block: [ib, l, f, i].
IDX_NIB_K = index_table(np.arange(8) * 32, NIB_R4_STARTS, [0, 8], QUAD)


# --- the per-type record -------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """One interleaved type: how R rows of its plain type become one group and back.

    to_r(P [G, R, plain_row_bytes], n_per_row) -> [G, R*row_bytes]; from_r is the inverse.
    `direct`, when set, dequantizes groups without a plain type: (Y, n_per_row) -> floats
    [G, R, n_per_row]. `note` says where the conversion is not a plain byte shuffle."""

    name: str
    plain: str
    rows: int
    to_r: Callable[[np.ndarray, int], np.ndarray]
    from_r: Callable[[np.ndarray, int], np.ndarray]
    direct: Callable[[np.ndarray, int], np.ndarray] | None = None
    note: str = ""


def blockwise(name: str, plain: str, rows: int, block_size: int, plain_block_bytes: int,
              fwd: Callable[[np.ndarray], np.ndarray], inv: Callable[[np.ndarray], np.ndarray],
              meta: int = 0, note: str = "") -> Layout:
    """A layout that interleaves block by block.

    fwd: X [M, R, plain_block_bytes] -> [M, R*block_bytes]; inv the reverse. `meta` bytes of
    per-row metadata (a float row scale) lead each plain row; the interleaved group starts
    with the R rows' metadata side by side."""

    def to_r(p: np.ndarray, n: int) -> np.ndarray:
        g = p.shape[0]
        nb = n // block_size
        x = p[:, :, meta:].reshape(g, rows, nb, plain_block_bytes).transpose(0, 2, 1, 3)
        y = fwd(np.ascontiguousarray(x).reshape(g * nb, rows, plain_block_bytes)).reshape(g, -1)
        return cat(p[:, :, :meta].reshape(g, rows * meta), y) if meta else y

    def from_r(y: np.ndarray, n: int) -> np.ndarray:
        g = y.shape[0]
        nb = n // block_size
        x = inv(np.ascontiguousarray(y[:, rows * meta :]).reshape(g * nb, -1))
        x = x.reshape(g, nb, rows, plain_block_bytes).transpose(0, 2, 1, 3).reshape(g, rows, -1)
        return cat(y[:, : rows * meta].reshape(g, rows, meta), x) if meta else np.ascontiguousarray(x)

    return Layout(name, plain, rows, to_r, from_r, note=note)
