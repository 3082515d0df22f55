"""Shared steps of the IQK dequantizers: checking the input, cutting rows into blocks,
reading scales and bit fields, and applying sub-block scales in ggml's float32 order.

All helpers work on every block at once: a block array is uint8 [n_blocks, block_bytes].
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedTypeError
from ..gguf.types import GGML_TYPES_BY_NAME


def split_rows(rows: np.ndarray, n_per_row: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Check a type's rows and cut them into (row metadata [n_rows, meta], blocks [n, bytes]).

    The blocks come in row-major order, `n_per_row // block_size` per row.
    """
    g = GGML_TYPES_BY_NAME[name]
    rows = np.asarray(rows)
    if rows.dtype != np.uint8 or rows.ndim != 2:
        raise UnsupportedTypeError(
            f"{name}: expected the tensor bytes as uint8 rows [n_rows, row_bytes], got {rows.dtype} {rows.shape}"
        )
    if n_per_row <= 0 or n_per_row % g.block_size:
        raise UnsupportedTypeError(
            f"row size {n_per_row} not divisible by block size {g.block_size} for {name}"
        )
    need = g.row_bytes(n_per_row)
    if rows.shape[1] != need:
        raise UnsupportedTypeError(
            f"{name}: a row of {n_per_row} values takes {need} bytes, got rows of {rows.shape[1]} bytes"
        )
    meta = rows[:, : g.row_meta_size]
    blocks = np.ascontiguousarray(rows[:, g.row_meta_size :]).reshape(-1, g.type_size)
    return meta, blocks


def row_scale(meta: np.ndarray, fmt: str, n_per_row: int, block_size: int) -> np.ndarray:
    """The row scale at the start of each row (`fmt` "<f2" or "<f4") as float32, one per block."""
    d = np.ascontiguousarray(meta).view(fmt)[:, 0].astype(np.float32)
    return np.repeat(d, n_per_row // block_size)


def f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """An f16 field of every block, exactly as float32: [n]."""
    return np.ascontiguousarray(blocks[:, start : start + 2]).view("<f2")[:, 0].astype(np.float32)


def u16(blocks: np.ndarray, start: int) -> np.ndarray:
    """A little-endian uint16 field of every block: [n]."""
    return np.ascontiguousarray(blocks[:, start : start + 2]).view("<u2")[:, 0]


def bits16(x: np.ndarray) -> np.ndarray:
    """Bits 0..15 of each uint16: [n] -> [n, 16] uint8."""
    return ((x[:, None] >> np.arange(16, dtype=np.uint16)) & 1).astype(np.uint8)


def fields(b: np.ndarray, width: int, inner: bool) -> np.ndarray:
    """Split each byte into its 8/width bit fields, lowest first.

    inner=True puts the field axis after the byte axis ([..., k] -> [..., k, 8/width]);
    inner=False puts it before ([..., k] -> [..., 8/width, k]).
    """
    shifts = np.arange(0, 8, width, dtype=np.uint8)
    mask = np.uint8((1 << width) - 1)
    if inner:
        return (b[..., None] >> shifts) & mask
    return (b[..., None, :] >> shifts[:, None]) & mask


def scaled(d: np.ndarray, ls: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(d * ls) * value in float32, ggml's order: d [n], integer sub-block scales ls [n, s],
    values [n, s, ...] float32 -> [n * s * ...] float32."""
    n, s = ls.shape
    with np.errstate(over="ignore", invalid="ignore"):  # inf/nan scales in a file pass through
        dl = d[:, None] * ls.astype(np.float32)
        return (dl[:, :, None] * values.reshape(n, s, -1)).reshape(-1)


def five_bits(qs: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """IQ5_K/IQ5_KS 5-bit indices from qs [n, 128], qh [n, 32]: [n, 8, 32] per 32 values."""
    n = len(qs)
    low = fields(qs.reshape(n, 4, 32), 4, inner=False).reshape(n, 8, 32)
    return low | (fields(qh, 1, inner=False) << 4)
