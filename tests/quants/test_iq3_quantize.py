"""Quantizing to IQ3_XXS and IQ3_S (kiln.quants.iq3_quantize).

Oracles: ik_llama.cpp's llama-quantize output in ../shared/golden (src.gguf quantized with
imatrix.dat: the bytes must be equal), and, for the path without an imatrix, the sha256 of
what ik_llama.cpp's quantize_iq3_xxs / quantize_iq3_s (its ggml-quants.c built with GCC 12,
-O3 -march=native, as its CMake does) wrote for the inputs of `awkward_rows` below.
Everything else checks outcomes through kiln's bit-exact dequantizer.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kiln.errors import KilnError, QuantizeError, UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.quants import dequantize, quantize
from kiln.quants.imatrix import read_imatrix_dat
from kiln.quants.iq3_quantize import BLOCK_BYTES, QUANTIZERS, _grid_maps
from kiln.quants.iquants_tables import IQ3S_GRID, IQ3XXS_GRID

TYPES = ["IQ3_XXS", "IQ3_S"]

# sha256 of ik_llama.cpp's bytes for awkward_rows(n) without an imatrix
IK_SHA256 = {
    ("IQ3_XXS", 256): "a2e5d0beb7fb4dd988b48b77f12c12447022bc75baaf634968455ec11e41f84f",
    ("IQ3_XXS", 512): "19bf57144de3a8d390917f18f2b3426cce9f3a9950719a40939d9841f59f89a1",
    ("IQ3_XXS", 768): "61f06c58f642bb919010650a3ba1105a73b6be0305d043b1d541bd057f717960",
    ("IQ3_S", 256): "b7830d9106434c67f8d2f028ede809900543e463563b5be7bb691eda2c3e1158",
    ("IQ3_S", 512): "47e2cf46a4b990d1e1e94cdbfb6370fb3d6c827594802eecb2fcc65193ddec2c",
    ("IQ3_S", 768): "9ce0560298e81e3336351a87b9db3173edeb0f42d86e4ce71709a16a88207998",
}


def awkward_rows(n: int) -> np.ndarray:
    """Nine rows of n values: gaussian with outliers, and the rows that hit edge cases."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((9, n)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] *= 10
    x[1] = 0  # all zeros
    x[2, :256] *= np.float32(1e-20)  # tiny: the first super-block under IQ3_XXS's 1e-8
    x[3, 32:64] = 0.75  # constant sub-block
    x[4] = (rng.integers(-8, 8, n) * 0.125).astype(np.float32)  # ties
    x[5, :] = -np.abs(x[5])  # negative only
    x[6, :] *= np.float32(1e4)  # large
    x[7, ::3] = 0  # sparse
    x[8, 100] = 60.0  # one huge outlier
    return x


def _dq(type_name: str, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    return dequantize(type_name, raw, tuple(reversed(x.shape)))


def _rel_err(v: np.ndarray, x: np.ndarray, w: np.ndarray | None = None) -> float:
    w = np.ones(x.shape[-1], np.float32) if w is None else w
    return float(np.sqrt(np.sum(w * (v - x) ** 2) / np.sum(w * x**2)))


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("n", [256, 512, 768])
def test_matches_ik_llama_cpp_without_imatrix(type_name, n):
    raw = QUANTIZERS[type_name](awkward_rows(n), None)
    assert raw.dtype == np.uint8 and raw.shape == (9, n // 256 * BLOCK_BYTES[type_name])
    assert hashlib.sha256(raw.tobytes()).hexdigest() == IK_SHA256[type_name, n]


@pytest.mark.parametrize("type_name", TYPES)
def test_matches_ik_llama_cpp_golden_bytes(golden, type_name):
    imatrix = read_imatrix_dat(golden / "imatrix.dat")
    with GGUFFile(golden / "src.gguf") as src, GGUFFile(golden / "quant" / f"{type_name}.gguf") as ref:
        for name in ("blk.0.attn_k.weight", "blk.0.ffn_down.weight", "output.weight"):
            info = src.tensors[name]
            x = dequantize(info.type_id, src.tensor_bytes(name), info.shape, name)
            raw = quantize(type_name, x, imatrix.weights(name), name, n_threads=2)
            assert np.array_equal(raw, np.asarray(ref.tensor_bytes(name)).reshape(-1)), name


def test_grid_maps_follow_the_grids():
    """Every grid point maps to itself; every other level pattern lists only grid points, at
    least as close as any grid point outside the list, nearest first."""
    xxs_values = np.array([4, 12, 20, 28, 36, 44, 52, 62])  # iq3xxs_grid's values of levels 0..7
    for size, dequant_grid, values in [(256, IQ3XXS_GRID, xxs_values), (512, IQ3S_GRID, np.arange(1, 16, 2))]:
        grid, kmap, neighbours = _grid_maps(size)
        assert grid.shape == (size, 4)
        assert np.array_equal(values[(grid - 1) // 2], dequant_grid)
        levels = (grid.astype(np.int32) - 1) // 2
        codes = (levels << np.array([0, 3, 6, 9])).sum(axis=1)
        assert np.array_equal(kmap[codes], np.arange(size))
        assert (kmap < 0).sum() == 4096 - size
        for u in np.flatnonzero(kmap < 0)[::97]:
            o = -kmap[u] - 1
            ids = neighbours[o + 1 : o + 1 + neighbours[o]]
            pos = 2 * ((u >> np.array([0, 3, 6, 9])) & 7) + 1
            d2 = ((grid.astype(np.int32) - pos) ** 2).sum(axis=1)
            assert len(ids) > 0 and np.all(np.diff(d2[ids]) >= 0)
            assert len(np.unique(d2[ids])) == (2 if size == 256 else 3)
            assert np.all(np.delete(d2, ids) >= d2[ids].max())


@pytest.mark.parametrize("n", [256, 512, 768])
def test_error_small_and_falling_with_bits(n):
    x = awkward_rows(n)[[0, 3, 5, 7, 8]]
    errs = {
        t: _rel_err(_dq(t, quantize(t, x, None, n_threads=1), x), x) for t in ["IQ3_XXS", "IQ3_S", "Q4_0"]
    }
    assert errs["IQ3_XXS"] < 0.4, errs
    assert errs["Q4_0"] < errs["IQ3_S"] < errs["IQ3_XXS"], errs


@pytest.mark.parametrize("type_name", TYPES)
def test_imatrix_lowers_weighted_error(type_name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    w = (rng.chisquare(1, 512) * np.where(rng.random(512) < 0.1, 30, 1) + 1e-3).astype(np.float32)
    with_w = _rel_err(_dq(type_name, quantize(type_name, x, w, n_threads=1), x), x, w)
    without = _rel_err(_dq(type_name, quantize(type_name, x, None, n_threads=1), x), x, w)
    assert with_w < 0.85 * without, (with_w, without)


@pytest.mark.parametrize("type_name", TYPES)
def test_layout_round_trips(type_name):
    """Signs, scales and (IQ3_S) 9th index bits land where the dequantizer reads them."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 512)).astype(np.float32)
    x *= np.repeat(np.float32(2.0) ** rng.integers(-1, 2, (6, 16)), 32, axis=1)  # one magnitude per sub-block
    x[:, 64:96] = 0  # a zero sub-block (ggml shifted IQ3_S's later sub-blocks here)
    raw = QUANTIZERS[type_name](x, None)
    v = _dq(type_name, raw, x)
    sub_x = x.reshape(6, 16, 32)
    sub_v = v.reshape(6, 16, 32)
    live = np.abs(sub_x).max(axis=2) > 0
    norm2 = np.maximum((sub_x**2).sum(axis=2), 1e-30)
    rel = np.sqrt(((sub_v - sub_x) ** 2).sum(axis=2) / norm2)[live]
    ratio = np.sqrt((sub_v**2).sum(axis=2) / norm2)[live]
    assert rel.max() < 0.45 and 0.7 < ratio.min() and ratio.max() < 1.4, (rel, ratio)
    groups = x.reshape(6, -1, 8)
    flipped = np.sign(v.reshape(groups.shape)) != np.sign(groups)
    flipped &= groups != 0
    if type_name == "IQ3_S":
        assert not flipped.any()
    else:  # an odd count of negatives in a group of 8 flips exactly one sign
        odd = (groups < 0).sum(axis=2) % 2 == 1
        assert np.array_equal(flipped.sum(axis=2), odd.astype(int))


@pytest.mark.parametrize("type_name", TYPES)
def test_zero_rows_and_registry_paths(type_name):
    x = awkward_rows(512)[:8]
    one = quantize(type_name, x, None, n_threads=1)
    assert np.array_equal(one, quantize(type_name, x, None, n_threads=2))  # rows are independent
    rows = one.reshape(8, -1)
    assert not rows[1].any()  # an all-zero row is all zero bytes (d = 0)
    assert np.array_equal(_dq(type_name, rows[1], x[1:2]), np.zeros((1, 512), np.float32))
    r4 = quantize(f"{type_name}_R4", x, None, n_threads=2)
    back = dequantize(f"{type_name}_R4", r4, (512, 8))
    assert np.array_equal(back, _dq(type_name, one, x))


@pytest.mark.parametrize("type_name", TYPES)
def test_bad_input_raises(type_name):
    x = np.ones((4, 512), np.float32)
    with pytest.raises(UnsupportedTypeError):
        quantize(type_name, np.ones((4, 320), np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS[type_name](np.ones((4, 320), np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS[type_name](np.ones(512, np.float32))
    bad = x.copy()
    bad[2, 7] = np.nan
    with pytest.raises(QuantizeError):
        quantize(type_name, bad)
    with pytest.raises(QuantizeError):
        quantize(type_name, x, np.ones(256, np.float32))
    with pytest.raises(QuantizeError):
        quantize(f"{type_name}_R4", np.ones((6, 512), np.float32))
