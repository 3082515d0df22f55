"""CPU block decoders of the 256-value K-quants (Q2_K..Q6_K) and IQ4_XS.

Layouts as in `kiln/quants/kquants.py`: value n*128 + j*32 + i of Q2_K/Q3_K takes bits
2j of qs[32n + i]; Q4_K/Q5_K value g*64 + h*32 + i takes nibble h of qs[32g + i]; Q6_K
value n*128 + k*32 + i takes nibble k//2 of ql[64n + 32(k%2) + i] and bits 2k of qh[32n + i].
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .decode_common import MINS, PER32, ZERO, U, f16, scale16, scale32, u16
from .decode_legacy import IQ4NL_I8
from .simd import add32, fields32, nibbles16_lookup, nibbles32, or_fields32


@njit
def decode_q2_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(84) * sb, U(256) * sb
        d, dmin = f16(row, at + U(80)), f16(row, at + U(82))
        for n in range(U(2)):
            for j in range(U(4)):
                fields32(row, at + U(16) + U(32) * n, U(2) * j, 3, q, base + U(128) * n + U(32) * j)
        for s in range(U(16)):
            sc = U(row[at + s])
            scale16(sw, mw, U(16) * sb + s, d * np.float32(sc & U(15)), -(dmin * np.float32(sc >> U(4))))
    return MINS


@njit
def decode_q3_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(110) * sb, U(256) * sb
        d = f16(row, at + U(108))
        for n in range(U(2)):
            for j in range(U(4)):
                o = base + U(128) * n + U(32) * j
                fields32(row, at + U(32) + U(32) * n, U(2) * j, 3, q, o)
                or_fields32(row, at, U(4) * n + j, 1, 2, q, o)  # value - 4 unless the high bit is set
                add32(q, o, -4)
        for s in range(U(16)):
            k, which = s % U(4), s // U(4)
            lo = (U(row[at + U(96) + U(4) * (which % U(2)) + k]) >> (U(4) * (which // U(2)))) & U(15)
            hi = (U(row[at + U(104) + k]) >> (U(2) * which)) & U(3)
            scale16(sw, mw, U(16) * sb + s, d * np.float32(np.int64(lo | (hi << U(4))) - 32), ZERO)
    return 0


@njit(inline="always")
def _k4_scale(row, at, j):
    """Scale and minimum j (0..7) of the 12 packed bytes at `at` (Q4_K, Q5_K)."""
    if j < U(4):
        return U(row[at + j]) & U(63), U(row[at + U(4) + j]) & U(63)
    lo, mid, hi = U(row[at + j - U(4)]), U(row[at + j]), U(row[at + U(4) + j])
    return (hi & U(15)) | ((lo >> U(6)) << U(4)), (hi >> U(4)) | ((mid >> U(6)) << U(4))


@njit(inline="always")
def _k4_scales(row, at, d, dmin, sw, mw, sb):
    for j in range(U(8)):
        sc, mn = _k4_scale(row, at, j)
        scale32(sw, mw, U(8) * sb + j, d * np.float32(sc), -(dmin * np.float32(mn)))


@njit
def decode_q4_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(144) * sb, U(256) * sb
        for g in range(U(4)):
            nibbles32(row, at + U(16) + U(32) * g, q, base + U(64) * g, base + U(64) * g + U(32), 0)
        _k4_scales(row, at + U(4), f16(row, at), f16(row, at + U(2)), sw, mw, sb)
    return PER32 | MINS


@njit
def decode_q5_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(176) * sb, U(256) * sb
        for g in range(U(4)):
            o = base + U(64) * g
            nibbles32(row, at + U(48) + U(32) * g, q, o, o + U(32), 0)
            or_fields32(row, at + U(16), U(2) * g, 1, 4, q, o)
            or_fields32(row, at + U(16), U(2) * g + U(1), 1, 4, q, o + U(32))
        _k4_scales(row, at + U(4), f16(row, at), f16(row, at + U(2)), sw, mw, sb)
    return PER32 | MINS


@njit
def decode_q6_k(row, K, q, sw, mw):
    scales = row.view(np.int8)
    for sb in range(U(K) // U(256)):
        at, base = U(210) * sb, U(256) * sb
        d = f16(row, at + U(208))
        for n in range(U(2)):
            for m in range(U(2)):
                o = base + U(128) * n + U(32) * m
                nibbles32(row, at + U(64) * n + U(32) * m, q, o, o + U(64), 0)
            for k in range(U(4)):
                o = base + U(128) * n + U(32) * k
                or_fields32(row, at + U(128) + U(32) * n, U(2) * k, 3, 4, q, o)
                add32(q, o, -32)
        for s in range(U(16)):
            scale16(sw, mw, U(16) * sb + s, d * np.float32(scales[at + U(192) + s]), ZERO)
    return 0


@njit
def decode_iq4_xs(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(136) * sb, U(256) * sb
        d = f16(row, at)
        sh = u16(row, at + U(2))
        for j in range(U(8)):
            o = base + U(32) * j
            nibbles16_lookup(row, at + U(8) + U(16) * j, q, o, IQ4NL_I8, 0)
            lo = (U(row[at + U(4) + j // U(2)]) >> (U(4) * (j % U(2)))) & U(15)
            ls = np.int64(lo | (((sh >> (U(2) * j)) & U(3)) << U(4))) - 32
            scale32(sw, mw, U(8) * sb + j, d * np.float32(ls), ZERO)
    return PER32


DECODERS = {
    "Q2_K": decode_q2_k,
    "Q3_K": decode_q3_k,
    "Q4_K": decode_q4_k,
    "Q5_K": decode_q5_k,
    "Q6_K": decode_q6_k,
    "IQ4_XS": decode_iq4_xs,
}
