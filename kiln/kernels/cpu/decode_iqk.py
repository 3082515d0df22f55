"""CPU block decoders of ik_llama.cpp's own types: IQ2_K..IQ5_K (per-block f16 scale,
16-value sub-blocks) and IQ2_KS, IQ2_KL, IQ3_KS, IQ4_KS, IQ4_KSS, IQ5_KS (one row scale,
32-value sub-blocks). Bit layouts as documented in `kiln/quants/iqk_k.py` and `iqk_ks.py`;
the non-linear grids are int8 tables, the scale of a sub-block is (d * integer scale).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ...quants import iqk_tables as T
from .decode_common import PER32, ZERO, U, f16, f32, padded_table, scale16, scale32, u16
from .simd import fields32, lookup32, lookup32_split, nibbles16_joined, nibbles16_lookup, or_fields32

IQ2NL = padded_table(T.IQ2NL)
IQ3NL = padded_table(T.IQ3NL)
IQ4K = padded_table(T.IQ4K)
IQ5NL = np.array(T.IQ5NL, dtype=np.int8)
IQ2KL = np.array(T.IQ2KL, dtype="<u2").view(np.int8).reshape(32, 2).copy()


@njit(inline="always")
def _five(row, qs_at, qh_at, p):
    """5-bit index of value p (IQ5_K, IQ5_KS): nibble h of qs[32G + t], bit p//32 of qh[t]."""
    G, h, t = p // 64, (p // 32) % 2, p % 32
    low = (np.int64(row[qs_at + 32 * G + t]) >> (4 * h)) & 15
    return low | (((np.int64(row[qh_at + t]) >> (p // 32)) & 1) << 4)


@njit
def decode_iq2_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(76) * sb, U(256) * sb
        d, extra = f16(row, at), u16(row, at + U(2))
        for g in range(U(8)):
            fields32(row, at + U(12) + U(32) * (g // U(4)), U(2) * (g % U(4)), 3, q, base + U(32) * g)
            lookup32_split(q, base + U(32) * g, IQ2NL, U(4) * ((extra >> (U(2) * g)) & U(1)),
                           U(4) * ((extra >> (U(2) * g + U(1))) & U(1)))
        for s in range(U(16)):
            ls = np.int64((U(row[at + U(4) + s // U(2)]) >> (U(4) * (s % U(2)))) & U(15)) - 8
            scale16(sw, mw, U(16) * sb + s, d * np.float32(ls), ZERO)
    return 0


@njit
def decode_iq3_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(110) * sb, U(256) * sb
        d, extra, signs = f16(row, at), u16(row, at + U(2)), u16(row, at + U(4))
        for g in range(U(8)):
            o = base + U(32) * g
            fields32(row, at + U(14) + U(32) * (g // U(4)), U(2) * (g % U(4)), 3, q, o)
            or_fields32(row, at + U(78), g, 1, 2, q, o)
            lookup32_split(q, o, IQ3NL, U(8) * ((extra >> (U(2) * g)) & U(1)), U(8) * ((extra >> (U(2) * g + U(1))) & U(1)))
        for s in range(U(16)):
            ls = 2 * np.int64((U(row[at + U(6) + s // U(2)]) >> (U(4) * (s % U(2)))) & U(15)) + 1
            if (signs >> s) & U(1):
                ls = -ls
            scale16(sw, mw, U(16) * sb + s, d * np.float32(ls), ZERO)
    return 0


@njit(inline="always")
def _scale6(row, low_at, high_at, s):
    lo = (np.int64(row[low_at + s // 2]) >> (4 * (s % 2))) & 15
    hi = (np.int64(row[high_at + s // 4]) >> (2 * (s % 4))) & 3
    return (lo | (hi << 4)) - 32


@njit
def decode_iq4_k(row, K, q, sw, mw):
    for sb in range(U(K) // U(256)):
        at, base = U(144) * sb, U(256) * sb
        d, extra = f16(row, at), u16(row, at + U(2))
        for g in range(U(8)):
            o = base + U(32) * g
            nibbles16_joined(row, at + U(16) + U(16) * g, q, o, 0)
            lookup32_split(q, o, IQ4K, U(16) * ((extra >> (U(2) * g)) & U(1)), U(16) * ((extra >> (U(2) * g + U(1))) & U(1)))
        for s in range(U(16)):
            scale16(sw, mw, U(16) * sb + s, d * np.float32(_scale6(row, at + U(8), at + U(4), s)), ZERO)
    return 0


@njit
def decode_iq5_k(row, K, q, sw, mw):
    for sb in range(K // 256):
        at = 176 * sb
        d, extra = f16(row, at), u16(row, at + 2)
        for s in range(16):
            shift = 32 * ((extra >> s) & 1)
            for i in range(16):
                p = 16 * s + i
                q[256 * sb + p] = IQ5NL[_five(row, at + 16, at + 144, p) + shift]
            scale16(sw, mw, 16 * sb + s, d * np.float32(_scale6(row, at + 8, at + 4, s)), ZERO)
    return 0


@njit
def decode_iq2_ks(row, K, q, sw, mw):
    d = f16(row, 0)
    for sb in range(U(K) // U(256)):
        at, base = U(2) + U(70) * sb, U(256) * sb
        extra = u16(row, at)
        for s in range(U(8)):
            o = base + U(32) * s
            fields32(row, at + U(6) + U(32) * (s // U(4)), U(2) * (s % U(4)), 3, q, o)
            lookup32(q, o, IQ2NL, U(4) * ((extra >> s) & U(1)))
            lo = (U(row[at + U(2) + s // U(2)]) >> (U(4) * (s % U(2)))) & U(15)
            ls = np.int64(lo | (((extra >> (U(8) + s)) & U(1)) << U(4))) - 16
            scale32(sw, mw, U(8) * sb + s, d * np.float32(ls), ZERO)
    return PER32


@njit
def decode_iq3_ks(row, K, q, sw, mw):
    d = f16(row, 0)
    for sb in range(U(K) // U(256)):
        at, base = U(2) + U(102) * sb, U(256) * sb
        extra = u16(row, at)
        for s in range(U(8)):
            o = base + U(32) * s
            fields32(row, at + U(6) + U(32) * (s // U(4)), U(2) * (s % U(4)), 3, q, o)
            or_fields32(row, at + U(70), s, 1, 2, q, o)
            lookup32(q, o, IQ3NL, U(8) * ((extra >> (U(8) + s)) & U(1)))
            lo = (U(row[at + U(2) + s % U(4)]) >> (U(4) * (s // U(4)))) & U(15)
            ls = np.int64(lo | (((extra >> s) & U(1)) << U(4))) - 16
            scale32(sw, mw, U(8) * sb + s, d * np.float32(ls), ZERO)
    return PER32


@njit(inline="always")
def _iq4_ks_block(row, sc_at, qs_at, d, q, sw, mw, sb):
    for s in range(U(8)):
        o = U(256) * sb + U(32) * s
        sc = U(row[sc_at + s])
        nibbles16_lookup(row, qs_at + U(16) * s, q, o, IQ4K, U(16) * (sc & U(1)))
        scale32(sw, mw, U(8) * sb + s, d * np.float32(np.int64(sc & U(254)) - 127), ZERO)


@njit
def decode_iq4_ks(row, K, q, sw, mw):
    d = f32(row, 0)
    for sb in range(K // 256):
        at = U(4) + U(136) * U(sb)
        _iq4_ks_block(row, at, at + U(8), d, q, sw, mw, U(sb))
    return PER32


@njit
def decode_iq4_kss(row, K, q, sw, mw):
    d = f32(row, 0)
    unpacked = np.empty(136, dtype=np.uint8)  # 8 scale bytes, then 128 bytes of nibbles
    for sb in range(K // 256):
        at = 4 + 128 * sb
        for s in range(8):
            sc = 0
            for k in range(8):
                w = u16(row, at + 16 * s + 2 * k)
                sc |= (w & 1) << k
                w &= 0xFFFE
                w ^= w >> 1
                unpacked[8 + 16 * s + 2 * k] = w & 255
                unpacked[8 + 16 * s + 2 * k + 1] = w >> 8
            unpacked[s] = sc
        _iq4_ks_block(unpacked, U(0), U(8), d, q, sw, mw, U(sb))
    return PER32


@njit
def decode_iq5_ks(row, K, q, sw, mw):
    d = f32(row, 0)
    for sb in range(K // 256):
        at = 4 + 168 * sb
        for s in range(8):
            sc = np.int64(row[at + s])
            shift = 32 * (sc & 1)
            for t in range(32):
                p = 32 * s + t
                q[256 * sb + p] = IQ5NL[_five(row, at + 8, at + 136, p) + shift]
            scale32(sw, mw, 8 * sb + s, d * np.float32((sc & 254) - 127), ZERO)
    return PER32


@njit
def decode_iq2_kl(row, K, q, sw, mw):
    d = f16(row, 0)
    for sb in range(K // 256):
        at = 2 + 86 * sb
        sh = u16(row, at)
        for s in range(8):
            lo = (np.int64(row[at + 2 + s % 4]) >> (4 * (s // 4))) & 15
            ls = (lo | (((sh >> (2 * s)) & 3) << 4)) - 32
            G, h = s // 2, s % 2
            for j in range(16):
                idx = (np.int64(row[at + 6 + 16 * G + j]) >> (4 * h)) & 15
                idx |= ((np.int64(row[at + 70 + j]) >> s) & 1) << 4
                q[256 * sb + 32 * s + 2 * j] = IQ2KL[idx, 0]
                q[256 * sb + 32 * s + 2 * j + 1] = IQ2KL[idx, 1]
            scale32(sw, mw, 8 * sb + s, d * np.float32(ls), ZERO)
    return PER32


DECODERS = {
    "IQ2_K": decode_iq2_k,
    "IQ3_K": decode_iq3_k,
    "IQ4_K": decode_iq4_k,
    "IQ5_K": decode_iq5_k,
    "IQ2_KS": decode_iq2_ks,
    "IQ2_KL": decode_iq2_kl,
    "IQ3_KS": decode_iq3_ks,
    "IQ4_KS": decode_iq4_ks,
    "IQ4_KSS": decode_iq4_kss,
    "IQ5_KS": decode_iq5_ks,
}
