"""Lookup tables of ik_llama.cpp's IQK quant types (facts of the format, as constants).

Source: ik_llama.cpp (commit 8337e4cd3), `ggml/src/ggml-common.h` (the non-linear value
grids) and `ggml/src/iqk/iqk_quantize.cpp` (the IQ6_K polynomial, the ternary multipliers
of IQ1_BN). Each grid is two halves: a sub-block's `extra` bit (or the low bit of its scale
byte) selects the second, slightly shifted half.

Derived here (not transcribed): `IQ2KL_PAIRS` (each 16-bit IQ2_KL entry read as two int8
values, low byte first, as the C code reads it through an int8 pointer) and the IQ6_K value
grid evaluated from the polynomial exactly as ik_llama.cpp's compiled dequantizer does.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

# iq2nl_values: IQ2_K, IQ2_KS (2-bit index; second half with the extra bit).
IQ2NL = (-31, -13, 1, 17, -26, -8, 6, 22)

# iq2kl_values: IQ2_KL, a 5-bit index to a pair of int8 values packed in a uint16.
IQ2KL = (
    0xE9C1, 0x0DC1, 0xC1D8, 0xF6D8, 0x0DD8, 0x2FD8, 0xD8E9, 0xE9E9,
    0x01E9, 0x0DE9, 0x1CE9, 0xC1F6, 0x01F6, 0x0DF6, 0x2FF6, 0xE901,
    0xF601, 0x0101, 0x0D01, 0x1C01, 0xD80D, 0xE90D, 0xF60D, 0x010D,
    0x0D0D, 0xC11C, 0xE91C, 0x011C, 0x1C1C, 0x2F1C, 0xE92F, 0x0D2F,
)  # fmt: skip

# iq3nl_values: IQ3_K, IQ3_KS.
IQ3NL = (
    -63, -40, -23, -10, 1, 13, 28, 47,
    -59, -36, -19, -6, 5, 17, 32, 51,
)  # fmt: skip

# iq4k_values: IQ4_K, IQ4_KS, IQ4_KSS.
IQ4K = (
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
    -123, -100, -79, -61, -45, -31, -18, -6, 5, 17, 29, 42, 57, 73, 93, 117,
)  # fmt: skip

# iq5nl_values: IQ5_K, IQ5_KS.
IQ5NL = (
    -126, -114, -103, -92, -83, -74, -65, -57, -50, -43, -36, -30, -24, -18, -12, -6,
    -1, 5, 11, 17, 23, 29, 36, 43, 51, 59, 68, 77, 87, 97, 109, 121,
    -124, -112, -101, -90, -81, -72, -63, -55, -48, -41, -34, -28, -22, -16, -10, -4,
    1, 7, 13, 19, 25, 31, 38, 45, 53, 61, 70, 79, 89, 99, 111, 123,
)  # fmt: skip

# iq6nl_values: the rounded IQ6_K grid (used when quantizing; dequantizing evaluates the
# polynomial below instead).
IQ6NL = (
    -127, -121, -115, -109, -104, -98, -93, -88, -84, -79, -74, -70, -66, -62, -58, -54,
    -51, -47, -44, -40, -37, -34, -31, -28, -25, -22, -19, -16, -13, -11, -8, -5,
    -2, 0, 3, 6, 9, 12, 14, 17, 20, 23, 27, 30, 33, 36, 40, 44,
    47, 51, 55, 59, 63, 68, 72, 77, 82, 87, 92, 98, 103, 109, 115, 121,
    -126, -120, -114, -108, -103, -97, -92, -87, -83, -78, -73, -69, -65, -61, -57, -53,
    -50, -46, -43, -39, -36, -33, -30, -27, -24, -21, -18, -15, -12, -10, -7, -4,
    -1, 1, 4, 7, 10, 13, 15, 18, 21, 24, 28, 31, 34, 37, 41, 45,
    48, 52, 56, 60, 64, 69, 73, 78, 83, 88, 93, 99, 104, 110, 116, 122,
)  # fmt: skip

# IQ6_K dequantizes a 6-bit q as A + q*(B + q*(-C + q*D)) (+ S with the extra bit), float32.
IQ6K_A = -127.0
IQ6K_B = 6.2568
IQ6K_C = 0.11218
IQ6K_D = 0.0011972
IQ6K_S = 1.0

# IQ1_BN: a byte holds 5 ternary digits; digit j is read by multiplying by K_MULT[j] mod 256.
IQ1BN_K_MULT = (81, 27, 9, 3, 1)


def _f32_table(values) -> np.ndarray:
    t = np.asarray(values, dtype=np.float32)
    t.setflags(write=False)
    return t


def _iq2kl_pairs() -> np.ndarray:
    raw = np.asarray(IQ2KL, dtype="<u2")
    return raw.view(np.int8).reshape(32, 2).astype(np.float32)


def _round_f32(x: Fraction) -> np.float32:
    """The float32 nearest to the exact rational x (ties to even), as an FMA rounds."""
    guess = np.float32(float(x))
    best = guess
    for cand in (np.nextafter(guess, np.float32(-np.inf)), np.nextafter(guess, np.float32(np.inf))):
        err, best_err = abs(Fraction(float(cand)) - x), abs(Fraction(float(best)) - x)
        if err < best_err or (err == best_err and int(cand.view(np.uint32)) % 2 == 0):
            best = cand
    return best


def _fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    return _round_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _iq6k_grid() -> np.ndarray:
    """The IQ6_K value of every (extra bit, 6-bit q) pair: [2, 64] float32.

    ik_llama.cpp's build contracts the polynomial's multiply-adds into fused multiply-adds
    (one rounding each); the shift S is a separate float32 addition.
    """
    f = np.float32
    a, b, c, d, s = f(IQ6K_A), f(IQ6K_B), f(IQ6K_C), f(IQ6K_D), f(IQ6K_S)
    grid = np.empty((2, 64), dtype=np.float32)
    for q in range(64):
        qf = f(q)
        t = _fma(qf, d, -c)
        t = _fma(qf, t, b)
        t = _fma(qf, t, a)
        grid[0, q] = t
        grid[1, q] = t + s
    return grid


def _iq1bn_digits() -> np.ndarray:
    """Ternary digit j (-1, 0, 1) of every IQ1_BN byte: [256, 5] int8."""
    q = np.arange(256, dtype=np.uint32)[:, None]
    v = (q * np.asarray(IQ1BN_K_MULT, dtype=np.uint32)) & 0xFF
    return (((v + (v >> 1)) >> 7).astype(np.int8) - 1).astype(np.int8)


IQ2NL_F32 = _f32_table(IQ2NL)
IQ2KL_PAIRS = _iq2kl_pairs()
IQ3NL_F32 = _f32_table(IQ3NL)
IQ4K_F32 = _f32_table(IQ4K)
IQ5NL_F32 = _f32_table(IQ5NL)
IQ6K_GRID = _iq6k_grid()
IQ1BN_DIGITS = _iq1bn_digits()
for _t in (IQ2KL_PAIRS, IQ6K_GRID, IQ1BN_DIGITS):
    _t.setflags(write=False)
