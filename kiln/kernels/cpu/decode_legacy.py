"""CPU block decoders of the 32-value types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q6_0, IQ4_NL, MXFP4.

Layouts as in `kiln/quants/legacy.py` and `kquants.py`: values 0..15 of a block in the
low nibbles of qs, 16..31 in the high nibbles; the 5- and 6-bit types keep high bits apart.
MXFP4 (one E8M0 exponent byte, then 16 bytes of E2M1 codes) is twice its E2M1 value, an
integer of -12..12, times half the block's power of two: exact in this form.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...quants.kquants import e8m0_half
from ...quants.kquants_tables import IQ4NL_VALUES, MXFP4_VALUES
from .decode_common import MINS, PER32, ZERO, U, f16, padded_table, scale32, u32
from .simd import add32, fields32, nibbles16_joined, nibbles16_lookup, or_bits32, q6_0_high_bits

IQ4NL_I8 = padded_table(IQ4NL_VALUES.astype(np.int8))
MXFP4_I8 = padded_table(MXFP4_VALUES.astype(np.int8))
E8M0_HALF = e8m0_half(np.arange(256, dtype=np.uint8))


@njit
def decode_q4_0(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(18) * b, U(32) * b
        nibbles16_joined(row, at + U(2), q, o, 8)
        scale32(sw, mw, b, f16(row, at), ZERO)
    return PER32


@njit
def decode_q4_1(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(20) * b, U(32) * b
        nibbles16_joined(row, at + U(4), q, o, 0)
        scale32(sw, mw, b, f16(row, at), f16(row, at + U(2)))
    return PER32 | MINS


@njit
def decode_q5_0(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(22) * b, U(32) * b
        nibbles16_joined(row, at + U(6), q, o, 0)
        or_bits32(u32(row, at + U(2)), 16, q, o)
        add32(q, o, -16)
        scale32(sw, mw, b, f16(row, at), ZERO)
    return PER32


@njit
def decode_q5_1(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(24) * b, U(32) * b
        nibbles16_joined(row, at + U(8), q, o, 0)
        or_bits32(u32(row, at + U(4)), 16, q, o)
        scale32(sw, mw, b, f16(row, at), f16(row, at + U(2)))
    return PER32 | MINS


@njit
def decode_q8_0(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(34) * b, U(32) * b
        fields32(row, at + U(2), 0, 255, q, o)
        scale32(sw, mw, b, f16(row, at), ZERO)
    return PER32


@njit
def decode_q6_0(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(26) * b, U(32) * b
        nibbles16_joined(row, at + U(10), q, o, 0)
        q6_0_high_bits(row, at + U(2), q, o)
        scale32(sw, mw, b, f16(row, at), ZERO)
    return PER32


@njit
def decode_iq4_nl(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(18) * b, U(32) * b
        nibbles16_lookup(row, at + U(2), q, o, IQ4NL_I8, 0)
        scale32(sw, mw, b, f16(row, at), ZERO)
    return PER32


@njit
def decode_mxfp4(row, K, q, sw, mw):
    for b in range(U(K) // U(32)):
        at, o = U(17) * b, U(32) * b
        nibbles16_lookup(row, at + U(1), q, o, MXFP4_I8, 0)
        scale32(sw, mw, b, E8M0_HALF[row[at]], ZERO)
    return PER32


DECODERS = {
    "Q4_0": decode_q4_0,
    "Q4_1": decode_q4_1,
    "Q5_0": decode_q5_0,
    "Q5_1": decode_q5_1,
    "Q8_0": decode_q8_0,
    "Q6_0": decode_q6_0,
    "IQ4_NL": decode_iq4_nl,
    "MXFP4": decode_mxfp4,
}
