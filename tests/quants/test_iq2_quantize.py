"""Quantizing to IQ2_XXS, IQ2_XS, IQ2_S, IQ1_S, IQ1_M and the _R4 forms IQ2_XXS_R4,
IQ2_XS_R4, IQ1_S_R4, IQ1_M_R4 (kiln.quants.iq2_quantize, iq1_quantize, iq2_grid).

Oracle: ik_llama.cpp. test_quantize_golden.py checks every golden tensor byte for byte;
here a fixed input (integer arithmetic, so the same floats everywhere) has digests taken
from ik_llama.cpp's own quantize_iq2_xxs ... quantize_iq1_m_r4 (commit 8337e4cd3, GCC 12
-O3 -march=native), so byte-exactness is checked without the golden set too. The rest
checks what holds for any input: small error, decreasing with bits, lowered by the
imatrix where it weighs, zero rows staying zero, refusals and bad input raising KilnError.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kiln.errors import KilnError, QuantizeError, UnsupportedTypeError
from kiln.quants import dequantize, quantize, repack
from kiln.quants.iq2_grid import grid_tables
from kiln.quants.iq2_quantize import QUANTIZERS

PLAIN = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S"]  # in order of bits per weight
R4 = ["IQ1_S_R4", "IQ1_M_R4", "IQ2_XXS_R4", "IQ2_XS_R4"]
NEED_IMATRIX = {"IQ2_XXS", "IQ2_XS", "IQ1_S"}
# per-row bound on sqrt(sum w (v-x)^2 / sum w x^2) for the awkward inputs below
# (heavy-tailed rows of 256: up to 0.8 at 2 bpw; gaussian rows of 512 average 0.25-0.5)
MAX_REL_ERROR = {"IQ1_S": 0.8, "IQ1_S_R4": 0.8, "IQ1_M": 0.65, "IQ1_M_R4": 0.65,
                 "IQ2_XXS": 0.85, "IQ2_XXS_R4": 0.85, "IQ2_XS": 0.7, "IQ2_XS_R4": 0.7, "IQ2_S": 0.65}

# sha256[:16] of ik_llama.cpp's bytes for known_input(); (type, with imatrix)
KNOWN = {
    ("IQ2_XXS", True): "bcbfbb58100fe5b1",
    ("IQ2_XS", True): "a82a4f90883a584a",
    ("IQ2_S", True): "23cc6db0d059186e",
    ("IQ2_S", False): "0c0c442efb46d9fb",
    ("IQ1_S", True): "6e9935d9baabd096",
    ("IQ1_M", True): "44b2e3e01b36eb55",
    ("IQ1_M", False): "d89b96033965e3c9",
    ("IQ1_S_R4", True): "6439028b1473de3b",
    ("IQ1_S_R4", False): "e3d517911c41075c",
    ("IQ1_M_R4", True): "8ab644c3f532531e",
    ("IQ1_M_R4", False): "3a1115a15b544c21",
}


def known_input() -> tuple[np.ndarray, np.ndarray]:
    """8 rows of 512: a sawtooth of 1009 levels with every 37th value 6x, a zero stretch."""
    i = np.arange(8 * 512, dtype=np.int64)
    v = ((i * 7919 + 13) % 1009 - 504).astype(np.float32) / np.float32(97.0)
    v[i % 37 == 5] *= np.float32(6.0)
    x = v.reshape(8, 512)
    x[3, 40:80] = 0
    qw = ((np.arange(512) * 31 % 17) + 1).astype(np.float32) / np.float32(4.0)
    return x, qw


def awkward(seed: int, n: int) -> np.ndarray:
    """8 rows: gaussian with 1% outliers x8, a zero row, a tiny row, a huge row, a row with
    a zero block, a constant stretch and one of a single sign."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, n)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] *= 8
    x[1] = 0
    x[2] *= np.float32(1e-3)
    x[3] *= np.float32(1e3)
    x[4, 32:64] = 0
    x[5, :48] = 0.5
    x[6] = np.abs(x[6])
    return x


def rel_error(values: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per row: sqrt(sum w (v - x)^2 / sum w x^2)."""
    return np.sqrt((w * (values - x) ** 2).sum(axis=-1) / (w * x**2).sum(axis=-1))


def roundtrip(type_name: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    raw = QUANTIZERS[type_name](x, imatrix) if imatrix is None else quantize(type_name, x, imatrix, n_threads=1)
    return dequantize(type_name, raw, (x.shape[1], x.shape[0]))


@pytest.mark.parametrize("key", list(KNOWN), ids=lambda k: f"{k[0]}-{'imatrix' if k[1] else 'plain'}")
def test_bytes_match_ik_llama_cpp_on_a_fixed_input(key):
    type_name, with_imatrix = key
    x, qw = known_input()
    raw = QUANTIZERS[type_name](x, qw if with_imatrix else None)
    assert raw.dtype == np.uint8 and raw.shape[0] == 8
    assert hashlib.sha256(raw.tobytes()).hexdigest()[:16] == KNOWN[key]


def test_r4_repacks_are_the_plain_quants_repacked():
    x, qw = known_input()
    for r4, plain in [("IQ2_XXS_R4", "IQ2_XXS"), ("IQ2_XS_R4", "IQ2_XS")]:
        ours = quantize(r4, x, qw, n_threads=1)
        expected = repack(quantize(plain, x, qw, n_threads=1), (512, 8), plain, r4)
        assert np.array_equal(ours, expected), r4


@pytest.mark.parametrize("n", [256, 512, 768])
@pytest.mark.parametrize("type_name", PLAIN + R4)
def test_roundtrip_error_is_small(type_name, n):
    x = awkward(n, n)
    w = np.random.default_rng(1).chisquare(3, n).astype(np.float32)
    v = roundtrip(type_name, x, w)
    assert v.shape == x.shape and np.isfinite(v).all()
    assert not v[1].any(), "a zero row must stay zero"
    nonzero = np.arange(8) != 1
    err = rel_error(v[nonzero], x[nonzero], w)
    assert (err < MAX_REL_ERROR[type_name]).all(), err
    assert err[0] > 0.02  # 2 bits cannot be exact: the comparison is not vacuous


def test_error_decreases_with_bits():
    x = np.random.default_rng(7).standard_normal((32, 512)).astype(np.float32)
    w = np.ones(512, np.float32)
    errors = [float(rel_error(roundtrip(t, x, w), x, w).mean()) for t in PLAIN]
    assert errors == sorted(errors, reverse=True), dict(zip(PLAIN, errors, strict=True))
    assert errors[0] < 0.55 and errors[-1] < 0.3


@pytest.mark.parametrize("type_name", [t for t in PLAIN + R4 if t not in NEED_IMATRIX])
def test_imatrix_lowers_the_weighted_error(type_name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 512)).astype(np.float32)
    w = rng.chisquare(1, 512).astype(np.float32)
    w[rng.random(512) < 0.1] *= 30
    with_imatrix = rel_error(roundtrip(type_name, x, w), x, w).mean()
    without = rel_error(roundtrip(type_name, x, None), x, w).mean()
    assert with_imatrix < 0.95 * without, (with_imatrix, without)


@pytest.mark.parametrize("type_name", sorted(NEED_IMATRIX))
def test_types_ik_llama_cpp_refuses_without_imatrix_raise(type_name):
    x = np.ones((4, 256), np.float32)
    with pytest.raises(QuantizeError, match="importance matrix"):
        quantize(type_name, x, None)
    with pytest.raises(QuantizeError, match="importance matrix"):
        QUANTIZERS[type_name](x, None)


def test_bad_input_raises_kiln_errors():
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    w = np.ones(256, np.float32)
    with pytest.raises(UnsupportedTypeError, match="divisible by block size 256"):
        quantize("IQ2_S", np.zeros((4, 288), np.float32), None)
    with pytest.raises(UnsupportedTypeError, match="divisible by block size 256"):
        QUANTIZERS["IQ2_S"](np.zeros((4, 288), np.float32), None)
    bad = x.copy()
    bad[2, 7] = np.nan
    with pytest.raises(QuantizeError, match="NaN"):
        quantize("IQ1_M", bad, w)
    with pytest.raises(KilnError, match="imatrix has 128 values"):
        QUANTIZERS["IQ2_XS"](x, np.ones(128, np.float32))
    with pytest.raises(QuantizeError, match="imatrix"):
        quantize("IQ2_XS", x, np.ones(128, np.float32))
    with pytest.raises(QuantizeError, match="multiple of 4"):
        QUANTIZERS["IQ1_M_R4"](x[:6], w)
    with pytest.raises(KilnError, match="2D"):
        QUANTIZERS["IQ1_S"](x[0], w)


def test_iq1_r4_rows_need_only_blocks_of_32():
    x = np.random.default_rng(4).standard_normal((4, 96)).astype(np.float32)
    w = np.ones(96, np.float32)
    for t in ("IQ1_S_R4", "IQ1_M_R4"):
        assert rel_error(roundtrip(t, x, w), x, w).max() < 0.7


def test_threads_give_the_same_bytes():
    x = np.random.default_rng(9).standard_normal((64, 512)).astype(np.float32)
    w = np.random.default_rng(10).chisquare(2, 512).astype(np.float32)
    for t in ("IQ2_XS", "IQ1_M_R4"):
        assert np.array_equal(quantize(t, x, w, n_threads=1), quantize(t, x, w, n_threads=2)), t


@pytest.mark.parametrize("type_name", PLAIN + R4)
def test_blocks_with_zero_importance_do_not_fail(type_name):
    """ggml aborts on a block whose weights are all zero; kiln writes it as a zero block (the
    _R4 repacks of ik_llama.cpp give such blocks weight 1e-9, so they keep their values)."""
    x = np.random.default_rng(11).standard_normal((4, 512)).astype(np.float32)
    w = np.ones(512, np.float32)
    w[:32] = 0
    v = roundtrip(type_name, x, w)
    assert np.isfinite(v).all()
    assert (rel_error(v[:, 32:], x[:, 32:], w[32:]) < MAX_REL_ERROR[type_name]).all()
    if type_name in ("IQ2_XXS_R4", "IQ2_XS_R4"):
        assert (rel_error(v[:, :32], x[:, :32], np.ones(32, np.float32)) < 0.7).all()


def test_grid_maps_cover_every_point():
    """Every key with levels 0..2 maps to its grid entry or to a non-empty neighbour list
    of entries at the listed distances, nearest first."""
    for kind, size in [("IQ2_XXS", 256), ("IQ2_XS", 512), ("IQ2_S", 1024), ("IQ1", 2048)]:
        grid_l, kmap, neighbours = grid_tables(kind)
        assert grid_l.shape == (size, 8) and (kmap >= 0).sum() == size
        keys = np.arange(kmap.size)
        levels = (keys[:, None] >> (2 * np.arange(8))) & 3
        valid = (levels < 3).all(axis=1) & (keys <= 0xAAAA)
        off = -kmap[valid & (kmap < 0)] - 1
        counts = neighbours[off]
        assert (counts > 0).all()
        u = int(keys[valid & (kmap < 0)][0])
        first = neighbours[off[0] + 1 : off[0] + 1 + counts[0]]
        d2 = ((grid_l[first].astype(int) - levels[u]) ** 2).sum(axis=1)
        assert (np.diff(d2) >= 0).all()
        assert d2[0] == ((grid_l.astype(int) - levels[u]) ** 2).sum(axis=1).min()
