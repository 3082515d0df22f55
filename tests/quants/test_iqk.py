"""IQK family (kiln/quants/iqk*.py): shapes, input checks, hand-built blocks with closed-form
values, and the ternary types against ik_llama.cpp's golden figures (see iqk_bn's docstring
for why IQ1_BN/IQ2_BN are compared with a reproduction of ik's CPU quirk and with IQ2_BN_R4)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from kiln.errors import UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.gguf.types import GGML_TYPES_BY_NAME
from kiln.quants import iqk
from kiln.quants import iqk_tables as T
from kiln.quants.iqk_bn import dequantize_like_ik_cpu
from tests.conftest import GOLDEN

TYPES = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ5_K", "IQ6_K", "IQ2_KS", "IQ2_KL", "IQ3_KS", "IQ4_KS", "IQ4_KSS",
         "IQ5_KS", "IQ1_BN", "IQ2_BN"]  # fmt: skip
BLOCK_F16_D = {"IQ2_K", "IQ3_K", "IQ4_K", "IQ5_K", "IQ6_K"}  # f16 d at the start of each block


def _row_bytes(name: str, n: int) -> int:
    return GGML_TYPES_BY_NAME[name].row_bytes(n)


def _rows(name: str, n_rows: int, n: int, meta: bytes = b"", block: bytes | None = None, seed: int = 0):
    """Rows of a type: `meta` as the row metadata, `block` repeated (random bytes if None)."""
    g = GGML_TYPES_BY_NAME[name]
    nb = n // g.block_size
    if block is None:
        blocks = np.random.default_rng(seed).integers(0, 256, (n_rows, nb, g.type_size), dtype=np.uint8)
        if name in BLOCK_F16_D:
            blocks[:, :, :2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    else:
        blocks = np.tile(np.frombuffer(block, np.uint8), (n_rows, nb, 1))
    m = np.tile(np.frombuffer(meta, np.uint8), (n_rows, 1))
    return np.concatenate([m, blocks.reshape(n_rows, -1)], axis=1)


def _meta(name: str, d: float) -> bytes:
    size = GGML_TYPES_BY_NAME[name].row_meta_size
    return {0: b"", 2: np.float16(d).tobytes(), 4: np.float32(d).tobytes()}[size]


def test_every_type_is_registered():
    assert sorted(iqk.DEQUANTIZERS) == sorted(TYPES)


@pytest.mark.parametrize("name", TYPES)
def test_random_rows_give_finite_values_of_the_right_shape(name):
    n = 2 * GGML_TYPES_BY_NAME[name].block_size * (4 if name.endswith("_BN") else 1)
    rows = _rows(name, 3, n, _meta(name, 0.5), seed=len(name))
    out = iqk.DEQUANTIZERS[name](rows, n)
    assert out.dtype == np.float32 and out.size == 3 * n
    assert np.isfinite(out).all()
    assert np.array_equal(iqk.DEQUANTIZERS[name](rows[1:2], n), out.reshape(3, n)[1])


@pytest.mark.parametrize("name", TYPES)
def test_bad_input_raises(name):
    g = GGML_TYPES_BY_NAME[name]
    fn = iqk.DEQUANTIZERS[name]
    rows = _rows(name, 2, g.block_size, _meta(name, 1.0))
    with pytest.raises(UnsupportedTypeError, match="not divisible"):
        fn(rows, g.block_size + 32)
    with pytest.raises(UnsupportedTypeError, match="bytes"):
        fn(rows[:, :-1], g.block_size)
    with pytest.raises(UnsupportedTypeError, match="uint8"):
        fn(rows.astype(np.int16), g.block_size)


def _check(name: str, meta: bytes, block: bytes, expected) -> None:
    bs = GGML_TYPES_BY_NAME[name].block_size
    rows = _rows(name, 2, 2 * bs, meta, block)
    out = iqk.DEQUANTIZERS[name](rows, 2 * bs).reshape(2, 2, bs)
    assert np.array_equal(out, np.broadcast_to(np.float32(expected), out.shape))


H = np.float16(0.25).tobytes()  # an f16 block scale d


def test_iq2_k_scales_one_indices_zero():
    # scale nibble 9 -> 1; extra bit set for sub-block 1 -> its values use the second half.
    extra = (2).to_bytes(2, "little")
    expected = np.full(256, 0.25 * T.IQ2NL[0], np.float32)
    expected[16:32] = 0.25 * T.IQ2NL[4]
    _check("IQ2_K", b"", H + extra + b"\x99" * 8 + bytes(64), expected)


def test_iq3_k_negative_scales():
    # scale nibble 0 -> 2*0+1 = 1, negated by the sign bits: -d * first value.
    _check("IQ3_K", b"", H + bytes(2) + b"\xff\xff" + bytes(8 + 64 + 32), -0.25 * T.IQ3NL[0])


def test_iq4_k_positions():
    # 6-bit scale 33 -> 1 (low nibble 1, high bits 0b10); byte 16*ib + j of qs: values
    # 32*ib + j (low nibble) and 32*ib + 16 + j (high nibble).
    qs = np.zeros(128, np.uint8)
    qs[16 * 3 + 5] = 0x2F
    expected = np.full(256, 0.25 * T.IQ4K[0], np.float32)
    expected[32 * 3 + 5] = 0.25 * T.IQ4K[15]
    expected[32 * 3 + 16 + 5] = 0.25 * T.IQ4K[2]
    _check("IQ4_K", b"", H + bytes(2) + b"\xaa" * 4 + b"\x11" * 8 + qs.tobytes(), expected)


def test_iq5_k_high_bit():
    # qh bit 0 of every byte: the values 0..31 get index 16.
    expected = np.full(256, 0.25 * T.IQ5NL[0], np.float32)
    expected[:32] = 0.25 * T.IQ5NL[16]
    _check("IQ5_K", b"", H + bytes(2) + b"\xaa" * 4 + b"\x11" * 8 + bytes(128) + b"\x01" * 32, expected)


def test_iq6_k_polynomial():
    # int8 scale 1, q 0 -> A = -127 (-126 in sub-block 0, which has the extra bit); value 0
    # has q 63 -> grid[1, 63].
    qs = np.zeros(128, np.uint8)
    qs[0] = 0x0F
    qh = np.zeros(64, np.uint8)
    qh[0] = 0x03
    expected = np.full(256, 0.25 * -127.0, np.float32)
    expected[:16] = 0.25 * -126.0
    expected[0] = np.float32(0.25) * T.IQ6K_GRID[1, 63]
    _check("IQ6_K", b"", H + b"\x01\x00" + b"\x01" * 16 + qs.tobytes() + qh.tobytes(), expected)


def test_iq6_k_grid_rounds_to_the_published_table():
    assert np.array_equal(np.round(T.IQ6K_GRID.reshape(-1)), np.float32(T.IQ6NL))


def test_ks_types_scale_one_indices_zero():
    d = 0.5
    # 5-bit scale 17 - 16 = 1: low nibbles 1, bit 4 from extra bits 8..15 (IQ2_KS) / 0..7 (IQ3_KS).
    _check("IQ2_KS", _meta("IQ2_KS", d), b"\x00\xff" + b"\x11" * 4 + bytes(64), d * T.IQ2NL[0])
    _check("IQ3_KS", _meta("IQ3_KS", d), b"\xff\x00" + b"\x11" * 4 + bytes(96), d * T.IQ3NL[0])
    # IQ2_KL: 6-bit scale 33 - 32 = 1 (bits 0b10 in scales_h); index 0 is the pair (-63, -23).
    pair = np.tile(np.float32([d * -63, d * -23]), 128)
    _check("IQ2_KL", _meta("IQ2_KL", d), b"\xaa\xaa" + b"\x11" * 4 + bytes(80), pair)
    # Scale byte 128: (128 & 254) - 127 = 1, first half; 129: second half.
    _check("IQ4_KS", _meta("IQ4_KS", d), b"\x80" * 8 + bytes(128), d * T.IQ4K[0])
    _check("IQ4_KS", _meta("IQ4_KS", d), b"\x81" * 8 + bytes(128), d * T.IQ4K[16])
    _check("IQ5_KS", _meta("IQ5_KS", d), b"\x81" * 8 + bytes(160), d * T.IQ5NL[32])


def test_iq4_kss_scale_bits_and_xor_code():
    # Scale bit k sits in bit 0 of word k: word 7 = 1 gives the scale byte 128 (scale 1).
    # A word w (bit 0 clear) decodes to w ^ (w >> 1): 0x0002 -> 0x0003, nibble 3 for value 0.
    words = np.zeros(8, "<u2")
    words[7] = 1
    words[0] = 2
    expected = np.full(32, 0.5 * T.IQ4K[0], np.float32)
    expected[0] = 0.5 * T.IQ4K[3]
    _check("IQ4_KSS", _meta("IQ4_KSS", 0.5), words.tobytes() * 8, np.tile(expected, 8))


def _encode_iq1_bn(t: np.ndarray) -> bytes:
    """A 64-value IQ1_BN block from ternary digits in -1..1 (ik_llama.cpp's encoder)."""
    q = (t + 1).reshape(4, 16)
    pow3 = 3 ** np.arange(6)
    ql = [(256 * int(q[i, 5 * k : 5 * k + 5] @ pow3[:5]) + 242) // 243 for i in range(4) for k in range(3)]
    extra = (256 * int(q[:, 15] @ pow3[:4]) + 242) // 243
    return bytes(ql + [extra])


def test_iq1_bn_round_trips_the_encoder():
    t = np.random.default_rng(1).integers(-1, 2, 64)
    _check("IQ1_BN", _meta("IQ1_BN", 0.75), _encode_iq1_bn(t), 0.75 * t)


def test_iq2_bn_digits():
    # value 16*l + j is bits 2l of qs[j], minus one: 0b10_01_00_10 -> 1, -1, 0, 1.
    _check("IQ2_BN", _meta("IQ2_BN", 0.75), b"\x92" * 16, np.repeat(np.float32([1, -1, 0, 1]) * 0.75, 16))


MANIFEST = json.loads((GOLDEN / "manifest.json").read_text()) if (GOLDEN / "manifest.json").exists() else None


def _golden_tensors(type_name: str, want_type: str):
    with GGUFFile(GOLDEN / MANIFEST["types"][type_name]["file"]) as f:
        for name, info in f.tensors.items():
            if info.type_name == want_type:
                n = info.shape[0]
                rows = np.asarray(f.tensor_bytes(name)).reshape(-1, _row_bytes(want_type, n))
                yield name, rows, n


def _sha(v: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(v, "<f4").tobytes()).hexdigest()


@pytest.mark.parametrize("name", ["IQ1_BN", "IQ2_BN"])
def test_bn_bit_layout_reproduces_ik_cpu_to_float(golden, name):
    expected = MANIFEST["types"][name]["tensors"]
    for tensor, rows, n in _golden_tensors(name, name):
        assert _sha(dequantize_like_ik_cpu(name, rows, n)) == expected[tensor]["sha256_f32"], tensor


def test_iq2_bn_matches_ik_iq2_bn_r4(golden):
    # IQ2_BN_R4 holds the same rows repacked; ik_llama.cpp's R4 dequantizer applies the scale.
    expected = MANIFEST["types"]["IQ2_BN_R4"]["tensors"]
    checked = 0
    for tensor, rows, n in _golden_tensors("IQ2_BN", "IQ2_BN"):
        if expected[tensor]["type"] == "IQ2_BN_R4":
            assert _sha(iqk.DEQUANTIZERS["IQ2_BN"](rows, n)) == expected[tensor]["sha256_f32"], tensor
            checked += 1
    assert checked


def test_iq1_bn_matches_iq2_bn_with_f16_scale(golden):
    # Both quantizers pick the same digits; IQ1_BN stores the row maximum as f16.
    iq2 = {t: iqk.DEQUANTIZERS["IQ2_BN"](r, n) for t, r, n in _golden_tensors("IQ2_BN", "IQ2_BN")}
    for tensor, rows, n in _golden_tensors("IQ1_BN", "IQ1_BN"):
        got = iqk.DEQUANTIZERS["IQ1_BN"](rows, n)
        assert np.array_equal(got, iq2[tensor].astype(np.float16).astype(np.float32)), tensor
