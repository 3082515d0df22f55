"""kiln.quants.kquants: the mainline types agree bit for bit with the gguf package's
dequantize on random blocks; Q8_K, Q6_0 and Q8_KV (not in gguf) are checked on blocks
built by hand from their struct definitions. ik_llama.cpp's own values for all but Q8_K
are checked by test_golden.py."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from kiln.errors import UnsupportedTypeError
from kiln.gguf.types import GGML_TYPES_BY_NAME
from kiln.quants import dequantize, kquants
from kiln.quants.kquants import DEQUANTIZERS

# mainline types and the byte offsets of the f16 scales in their blocks
MAINLINE = {
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "IQ4_NL": (0,),
    "IQ4_XS": (0,),
    "MXFP4": (),  # E8M0 scale byte: every value is valid
}
SHAPES = [(1, 1), (3, 2), (2, 5), (5, 3), (4, 1)]  # (rows, blocks per row)


def random_rows(name: str, n_rows: int, blocks_per_row: int, seed: int) -> tuple[np.ndarray, int]:
    """Random rows of `name` blocks whose f16 scales are finite and of sane size."""
    t = GGML_TYPES_BY_NAME[name]
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_rows * blocks_per_row, t.type_size), dtype=np.uint8)
    for at in MAINLINE.get(name, ()):
        scale = rng.uniform(-1, 1, len(blocks)) * 10.0 ** rng.uniform(-4, 0, len(blocks))
        blocks[:, at : at + 2] = scale.astype("<f2").view(np.uint8).reshape(-1, 2)
    n = blocks_per_row * t.block_size
    return blocks.reshape(n_rows, -1), n


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    b = np.ascontiguousarray(b, dtype=np.float32).reshape(-1)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", list(MAINLINE))
def test_mainline_types_match_gguf_package(name, shape):
    rows, n = random_rows(name, *shape, seed=list(MAINLINE).index(name) * 100 + SHAPES.index(shape))
    ours = DEQUANTIZERS[name](rows, n)
    with np.errstate(over="ignore"):  # MXFP4's largest block scales overflow to inf
        theirs = gguf.quants.dequantize(rows, gguf.GGMLQuantizationType[name])
    assert same_bits(ours, theirs)


@pytest.mark.parametrize("name", ["Q4_K", "IQ4_NL"])
def test_large_tensors_go_through_in_slices_of_rows(name, monkeypatch):
    monkeypatch.setattr(kquants, "_SLICE_VALUES", 600)  # slices of 2 rows of 256 values
    rows, n = random_rows(name, 5, 256 // GGML_TYPES_BY_NAME[name].block_size, seed=3)
    assert same_bits(
        DEQUANTIZERS[name](rows, n), gguf.quants.dequantize(rows, gguf.GGMLQuantizationType[name])
    )


@pytest.mark.parametrize("name", list(MAINLINE))
def test_registry_returns_ggml_shape_reversed(name):
    rows, n = random_rows(name, 3, 2, seed=7)
    values = dequantize(name, rows.reshape(-1), (n, 3))
    assert values.shape == (3, n)
    assert same_bits(values, gguf.quants.dequantize(rows, gguf.GGMLQuantizationType[name]))


def test_q8_k_is_scale_times_int8():
    # block_q8_K of ik_llama.cpp: float d, float sum, int8 qs[256], int16 bsums[16]
    rng = np.random.default_rng(1)
    d = np.float32([0.0123, -3.5e-3, 7.0])
    q = rng.integers(-128, 128, size=(3, 256)).astype(np.int8)
    blocks = np.zeros((3, 296), dtype=np.uint8)
    blocks[:, 0:4] = d.astype("<f4").view(np.uint8).reshape(3, 4)
    blocks[:, 4:8] = rng.integers(0, 256, (3, 4), dtype=np.uint8)
    blocks[:, 8:264] = q.view(np.uint8)
    blocks[:, 264:296] = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    rows = blocks.reshape(1, -1)
    expected = d[:, None] * q.astype(np.float32)
    assert same_bits(DEQUANTIZERS["Q8_K"](rows, 768), expected)


def test_q6_0_packs_low_nibbles_and_two_high_bits():
    # block_q6_0: f16 d, qh[8] (bits 4-5 of value j in bits 2*(j//8).. of qh[j%8] for j<16,
    # bits 4+2*((j-16)//8).. for j>=16), qs[16] (low nibbles: j<16 low, j>=16 high)
    rng = np.random.default_rng(2)
    nb = 6
    u = rng.integers(0, 64, size=(nb, 32)).astype(np.uint8)
    d = rng.uniform(-1, 1, nb).astype(np.float16)
    lo, hi = u[:, :16], u[:, 16:]
    qs = (lo & 15) | ((hi & 15) << 4)
    h = np.zeros((nb, 8), dtype=np.uint8)
    for j in range(16):  # spelled out per value, the opposite of the vectorized kernel
        h[:, j % 8] |= (lo[:, j] >> 4) << (4 * (j // 8))
        h[:, j % 8] |= (hi[:, j] >> 4) << (4 * (j // 8) + 2)
    blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2), h, qs], axis=1)
    expected = (u.astype(np.int32) - 32).astype(np.float32) * d.astype(np.float32)[:, None]
    assert same_bits(DEQUANTIZERS["Q6_0"](blocks.reshape(2, -1), 96), expected)


def test_q8_kv_rows_have_a_float_scale_before_the_int8_values():
    rng = np.random.default_rng(3)
    d = np.float32([0.25, -1.5e-2])
    q = rng.integers(-128, 128, size=(2, 64)).astype(np.int8)
    meta = np.concatenate([d[:, None].view(np.uint8), rng.integers(0, 256, (2, 4), dtype=np.uint8)], axis=1)
    rows = np.concatenate([meta, q.view(np.uint8)], axis=1)
    assert same_bits(DEQUANTIZERS["Q8_KV"](rows, 64), d[:, None] * q.astype(np.float32))


@pytest.mark.parametrize("name", ["Q6_0", "Q8_KV"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (5, 2)])
def test_ik_only_types_give_finite_values_of_the_right_shape(name, shape):
    t = GGML_TYPES_BY_NAME[name]
    rows, n = random_rows(name, *shape, seed=11)
    rng = np.random.default_rng(5)
    if name == "Q8_KV":
        rows = np.concatenate([np.zeros((shape[0], 8), dtype=np.uint8), rows], axis=1)
        rows[:, 0:4] = rng.uniform(0.01, 1, shape[0]).astype("<f4").view(np.uint8).reshape(-1, 4)
    else:
        b = rows.reshape(-1, t.type_size)
        b[:, 0:2] = rng.uniform(-1, 1, len(b)).astype("<f2").view(np.uint8).reshape(-1, 2)
    values = np.asarray(DEQUANTIZERS[name](rows, n))
    assert values.size == shape[0] * n and values.dtype == np.float32
    assert np.isfinite(values).all()


@pytest.mark.parametrize("name", list(DEQUANTIZERS))
def test_wrong_row_length_raises(name):
    t = GGML_TYPES_BY_NAME[name]
    n = 2 * t.block_size
    good = np.zeros((2, t.row_bytes(n)), dtype=np.uint8)
    with pytest.raises(UnsupportedTypeError, match=name):
        DEQUANTIZERS[name](good[:, :-1], n)
    with pytest.raises(UnsupportedTypeError, match="block size"):
        DEQUANTIZERS[name](good, n + 1)
    with pytest.raises(UnsupportedTypeError, match=name):
        DEQUANTIZERS[name](good.view(np.int8), n)
