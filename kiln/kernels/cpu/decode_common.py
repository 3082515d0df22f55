"""What every CPU block decoder shares: the row form it writes and small helpers.

A decoder turns one stored row of K values into the form the integer dot products use:

    q  int8[K]        the integer value of every weight (|q| <= 128)
    sw float32[K/4]   scales, mw float32[K/16] additive constants, in one of two layouts:
      16-value sub-blocks: weight k = sw[k // 4] * q[k] + mw[k // 16] (the sub-block scale
        repeated for each group of 4 values, so the dot product loads 8 at once)
      32-value blocks (PER32): weight k = sw[k // 32] * q[k] + mw[k // 32]

and returns its layout flags: PER32 for the second layout, MINS when mw is used (types
without minimums skip that term).

Decoders index with unsigned integers (`U`): Numba checks signed indices for wraparound,
and that check alone keeps LLVM from vectorizing a loop. The bulk of the bytes goes
through the vector steps of `simd.py`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .simd import f16_at

U = np.uint64
ZERO = np.float32(0)
MINS = 1
PER32 = 2


def padded_table(values, pad: int = 48) -> np.ndarray:
    """An int8 value grid followed by zeros, so that 16-byte loads from any offset fit."""
    t = np.zeros(max(pad, len(values) + 16), dtype=np.int8)
    t[: len(values)] = values
    t.setflags(write=False)
    return t


@njit(inline="always")
def f16(row, at):
    """The little-endian f16 at byte `at` of `row`, as float32 (exact)."""
    return f16_at(row, U(at))


@njit(inline="always")
def u16(row, at):
    return U(row[U(at)]) | (U(row[U(at) + U(1)]) << U(8))


@njit(inline="always")
def u32(row, at):
    return u16(row, at) | (u16(row, U(at) + U(2)) << U(16))


@njit(inline="always")
def f32(row, at):
    return row[U(at) : U(at) + U(4)].view(np.float32)[0]


@njit(inline="always")
def scale32(sw, mw, block, scale, minimum):
    """Scale and minimum of the 32 values of block `block` (PER32 layout)."""
    sw[U(block)] = scale
    mw[U(block)] = minimum


@njit(inline="always")
def scale16(sw, mw, group, scale, minimum):
    """Scale and minimum of the 16 values of group `group`."""
    g = U(group)
    for i in range(U(4)):
        sw[U(4) * g + i] = scale
    mw[g] = minimum
