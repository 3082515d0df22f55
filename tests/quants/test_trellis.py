"""The trellis quants IQ1_KT..IQ4_KT: the value generator against its definition, hand-built
blocks for each layout, random rows, and bad input. (Bit-exactness against ik_llama.cpp is
tests/quants/test_golden.py's job.)"""

from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import UnsupportedTypeError
from kiln.quants import trellis
from kiln.quants.trellis import DEQUANTIZERS, IQ4K_VALUES, trellis_values


def reference(seed: int, n: int = 8, offset: int = 4096) -> list[int]:
    """The recurrence in plain Python integers: x <- x * 0xCBAC1FED mod 2**32, then the
    four bytes of x & 0x3f3f3f3f summed, minus 126."""
    x, out = seed + offset, []
    for _ in range(n):
        x = (x * 0xCBAC1FED) & 0xFFFFFFFF
        s = x & 0x3F3F3F3F
        out.append(sum((s >> (8 * i)) & 0xFF for i in range(4)) - 126)
    return out


# Seed 0, first value by hand: x = 4096 * 0xCBAC1FED mod 2**32 = 0xC1FED000;
# bytes & 0x3f: 0x00, 0x10, 0x3e, 0x01 -> 0 + 16 + 62 + 1 - 126 = -47.
HAND = {
    0: [-47, -36, -39, -86, -38, -38, -47, -35],
    1: [21, 1, 59, -23, 33, 8, 13, 43],
    4095: [-34, 15, 13, 18, -85, -58, 36, -23],
    65535: [26, -32, -16, -9, -25, -62, 17, 10],
}


@pytest.mark.parametrize("seed", list(HAND))
def test_generator_matches_hand_values(seed):
    assert reference(seed) == HAND[seed]
    np.testing.assert_array_equal(trellis_values(np.array([seed]), 8)[0], np.float32(HAND[seed]))


def test_generator_offset_and_group_size():
    seeds = np.array([0, 32767, 12345], dtype=np.uint32)
    got = trellis_values(seeds, 4, np.array([4096 + 32768, 4096 + 32768, 4096]))
    # seed 32767 with the IQ4_KT offset continues where seed 65535 with the plain offset does
    assert reference(32767, 4, 4096 + 32768) == HAND[65535][:4]
    for row, (s, off) in zip(got, [(0, 36864), (32767, 36864), (12345, 4096)], strict=True):
        np.testing.assert_array_equal(row, np.float32(reference(s, 4, off)))


def _row(name: str, block: bytes, d: float) -> np.ndarray:
    raw = np.frombuffer(np.float32(d).tobytes() + block, dtype=np.uint8)
    assert raw.size == 4 + trellis.BLOCK_BYTES[name]
    return raw.reshape(1, -1)


def _scaled(scale: float, seed: int, n: int = 8, offset: int = 4096) -> np.ndarray:
    return np.float32(scale) * np.float32(reference(seed, n, offset))


def test_iq1_kt_layout():
    b = np.zeros(56, dtype=np.uint8)
    b[0] = 0x18  # block 0: scale code 8 (table value 1), bit 12 for group 0
    b[4] = 0x0E  # block 4: scale code 14 (table value 89)
    b[8], b[8 + 16] = 0xFF, 0x05  # seed bits 0..7 of groups 0 and 16
    b[40] = 0x3F  # qh[0]: low nibble -> bits 8..11 of group 0 (seed 0x1FFF), high -> group 16 (seed 0x305)
    y = DEQUANTIZERS["IQ1_KT"](_row("IQ1_KT", b.tobytes(), 0.25), 256).reshape(-1)
    np.testing.assert_array_equal(y[:8], _scaled(0.25 * 1, 0x1FFF))
    np.testing.assert_array_equal(y[128:136], np.float32(np.float32(0.25) * IQ4K_VALUES[14]) * np.float32(reference(0x305)))
    np.testing.assert_array_equal(y[8:16], np.float32(0.25 * 1) * np.float32(reference(0)))


def test_iq2_kt_layout():
    b = np.zeros(68, dtype=np.uint8)
    b[0] = 0x98  # block 0 -> code 8 (1), block 4 -> code 9 (13)
    seeds = np.zeros(32, dtype="<u2")
    seeds[0], seeds[16] = 1, 4095
    b[4:] = seeds.view(np.uint8)
    y = DEQUANTIZERS["IQ2_KT"](_row("IQ2_KT", b.tobytes(), 0.5), 256).reshape(-1)
    np.testing.assert_array_equal(y[:8], _scaled(0.5, 1))
    np.testing.assert_array_equal(y[128:136], _scaled(0.5 * 13, 4095))
    np.testing.assert_array_equal(y[32:40], _scaled(0.5 * -127, 0))


def test_iq3_kt_layout_and_signs():
    b = np.zeros(100, dtype=np.uint8)
    b[0] = 0x32  # first half scale 2, second half 3
    seeds = np.zeros(32, dtype="<u2")
    seeds[0], seeds[16] = 1, 4095
    b[4:68] = seeds.view(np.uint8)
    b[68 + 0] = 0x01  # value 0 negated (bit 0 of qh[0])
    b[68 + 1] = 0x10  # value 129 negated (bit 4 of qh[1])
    y = DEQUANTIZERS["IQ3_KT"](_row("IQ3_KT", b.tobytes(), 0.5), 256).reshape(-1)
    lo, hi = np.abs(_scaled(1.0, 1)), np.abs(_scaled(1.5, 4095))
    np.testing.assert_array_equal(y[:8], np.concatenate([-lo[:1], lo[1:]]))
    np.testing.assert_array_equal(y[128:136], np.concatenate([hi[:1], -hi[1:2], hi[2:]]))


def test_iq4_kt_layout():
    b = np.zeros(128, dtype=np.uint8)
    words = np.zeros(8, dtype="<u4")
    words[0] = 1 | (70 << 1) | (5 << 8) | (2 << 11)  # offset +32768, scale 70-64, groups 0 and 1: top bits 5, 2
    words[1] = 60 << 1  # scale -4, plain offset
    b[:32] = words.view(np.uint8)
    b[32 + 0], b[96 + 0] = 0x34, 0x21  # group 0: 0x34 | 1 << 8, group 32: seed bits 8..11 = 2
    b[32 + 8] = 0x07  # group 8 (first of block 1): seed 7
    y = DEQUANTIZERS["IQ4_KT"](_row("IQ4_KT", b.tobytes(), 0.125), 256).reshape(-1)
    np.testing.assert_array_equal(y[:4], _scaled(0.125 * 6, 0x134 | 5 << 12, 4, 4096 + 32768))
    np.testing.assert_array_equal(y[4:8], _scaled(0.125 * 6, 2 << 12, 4, 4096 + 32768))
    np.testing.assert_array_equal(y[32:36], _scaled(0.125 * -4, 7, 4))


@pytest.mark.parametrize("name", list(DEQUANTIZERS))
def test_random_rows_are_finite(name):
    rng = np.random.default_rng(7)
    n_rows, n_per_row = 5, 512
    rows = rng.integers(0, 256, size=(n_rows, 4 + 2 * trellis.BLOCK_BYTES[name]), dtype=np.uint8)
    rows[:, :4] = np.full((n_rows, 1), 0.01, dtype="<f4").view(np.uint8)
    y = np.asarray(DEQUANTIZERS[name](rows, n_per_row)).reshape(n_rows, n_per_row)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    assert np.abs(y).max() <= 0.01 * 127 * 126 + 1e-3


@pytest.mark.parametrize("name", list(DEQUANTIZERS))
def test_bad_rows_raise(name):
    good = 4 + trellis.BLOCK_BYTES[name]
    with pytest.raises(UnsupportedTypeError, match=name):
        DEQUANTIZERS[name](np.zeros((2, good + 1), dtype=np.uint8), 256)
    with pytest.raises(UnsupportedTypeError, match="block size"):
        DEQUANTIZERS[name](np.zeros((2, good), dtype=np.uint8), 200)
    with pytest.raises(UnsupportedTypeError, match="uint8"):
        DEQUANTIZERS[name](np.zeros((2, good), dtype=np.float32), 256)
