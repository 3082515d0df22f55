"""Quantizing to Q2_K..Q6_K, Q8_K, IQ4_NL, IQ4_XS, MXFP4 and Q8_KV (kiln.quants.kquants_quantize).

Oracles: the `gguf` package's MXFP4 quantizer; digests of ik_llama.cpp's own output
(`ggml_quantize_chunk`, commit 8337e4cd3, GCC 12 -O3 -march=native on this x86-64 machine
kind) for a deterministic input, with and without importance weights; and, in
test_quantize_golden.py, ik_llama.cpp's llama-quantize files of ../shared/golden. The
rest checks properties: errors shrink with bits, an imatrix lowers the weighted error,
values on a type's grid come back exactly, the R8 types are repacks, bad input raises.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize

from kiln.errors import KilnError, QuantizeError, UnsupportedTypeError
from kiln.quants import dequantize, quantize, repack
from kiln.quants.kquants_quantize import QUANTIZERS
from kiln.quants.kquants_search import IQ4NL_INT, best_index_iq4nl, f16_bits
from kiln.quants.kquants_tables import IQ4NL_VALUES
from kiln.quants.quantize_common import IQ4NL_INDEX

TYPES = list(QUANTIZERS)
USES_IMATRIX = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def deterministic_input() -> tuple[np.ndarray, np.ndarray]:
    """Six awkward rows of 768 (integer hash -> float64 -> float32: no RNG stream) and weights."""
    n_rows, n = 6, 768
    i = np.arange(n_rows * n, dtype=np.uint64)
    h = (i * np.uint64(2654435761) + np.uint64(12345)) % np.uint64(2**32)
    u = h.astype(np.float64) / 2.0**32 * 2.0 - 1.0
    x = (u + 6.0 * u**9).reshape(n_rows, n).astype(np.float32)
    x[0, :256] = 0  # a zero super-block
    x[1, 256:288] = 0.75  # a constant sub-block
    x[2] *= np.float32(1e-20)  # a tiny row
    x[3] = np.abs(x[3]) + np.float32(0.5)  # all positive
    x[4, 512:] *= np.float32(1e4)  # a large super-block
    x[5, 100:116] = -np.abs(x[5, 100:116])  # a negative sub-block
    k = np.arange(n, dtype=np.uint64)
    g = ((k * np.uint64(40503) + np.uint64(7)) % np.uint64(1000)).astype(np.float64)
    return x, (0.05 + (g / 100.0) ** 2).astype(np.float32)


# sha256 of ik_llama.cpp's bytes for deterministic_input(), (type, with imatrix)
IK_DIGESTS = {
    ("Q2_K", True): "2ebc2f2000990a80414ab0eca55197afcc512d73b11c2dc66cf1b1d35c8a9286",
    ("Q2_K", False): "6c56b38ebeb1eff56c5808e50bb33ef0315714b6e7578c51724d3ef19f0a1590",
    ("Q3_K", True): "cdbccaae79109af854a237ada966da8e009154dafa06be5feea841edfb0d8c89",
    ("Q3_K", False): "3ca82642ac63548289daa13d9fe1e49da882fc66bf6577c4e82ef48602ae922a",
    ("Q4_K", True): "75bfceafb32ced9b7f724ab31671c8c8f918a83f41bbefa00342b2503893f37a",
    ("Q4_K", False): "d1926c6966154da414ea3ddb5d56a8a776594d679b7c071657a93f732753209d",
    ("Q5_K", True): "9c81fb50579be011bc6b1fc6b255b27a854ef8a47374e0ff9777059b45657878",
    ("Q5_K", False): "05c845013b937b052ffd3d003ef3b9659ecbe0898c2f9d22d620ab202a95be28",
    ("Q6_K", True): "49af5b1639f8a404f465e1d844133a5845f44c66ef26b38b7979de5949beb5e0",
    ("Q6_K", False): "de64a0244f0d5ddc329476820d0b922c24fc81cc7b9c60848111195f24cc1ad8",
    ("IQ4_NL", True): "76bb84de3a94a7314be739f363309eb6ff2a0c341d1b895b36adc6b453cdd1e0",
    ("IQ4_NL", False): "357a59094e309f906e1b34297367133ff53fe1a13f00a54bd6843ee39761dc96",
    ("IQ4_XS", True): "6fa043d1d013fce4567dc56465fe6f6b4a5b7e102dd950de6e62df3ae734c7fa",
    ("IQ4_XS", False): "093506692d02a802fc058cdbdc5f057d8c14378da43a904f05378f05a50058e0",
}


@pytest.mark.parametrize("type_name,with_imatrix", list(IK_DIGESTS))
def test_bytes_equal_ik_llama_cpp(type_name, with_imatrix):
    x, w = deterministic_input()
    raw = QUANTIZERS[type_name](x, w if with_imatrix else None)
    assert hashlib.sha256(raw.tobytes()).hexdigest() == IK_DIGESTS[type_name, with_imatrix]


@pytest.mark.parametrize("shape", [(1, 32), (5, 256), (7, 768)])
def test_mxfp4_matches_gguf_package(shape):
    rng = np.random.default_rng(shape[1])
    for scale in (1e-3, 1.0, 37.0, 1e5):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        x[rng.random(shape) < 0.05] = 0
        x[0, :32] = np.float32(0.25) * np.array([0.5, 1.5, 2.5, 3.5, 5, 7, 10, 12] * 4, np.float32)  # midpoints
        if shape[0] > 1:
            x[1, :32] = 0
        if shape[0] > 2:
            x[2, :32] = np.float32(2.0) ** np.arange(-16, 16, dtype=np.float32)  # exact powers of two
        ours = QUANTIZERS["MXFP4"](x, None)
        theirs = np.asarray(gguf_quantize(x, GGMLQuantizationType.MXFP4)).reshape(ours.shape)
        assert np.array_equal(ours, theirs), (shape, scale)


def awkward(rng: np.random.Generator, n_rows: int, n: int) -> np.ndarray:
    x = rng.standard_normal((n_rows, n)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] *= 10  # outliers
    x[0] = 0  # a zero row
    x[1] *= np.float32(1e-30)  # tiny values
    x[2] = np.abs(x[2])  # all positive
    return x


def roundtrip(type_name: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    raw = quantize(type_name, x, w, n_threads=2)
    return dequantize(type_name, raw, (x.shape[1], x.shape[0]))


@pytest.mark.parametrize("n", [256, 512, 768])
def test_roundtrip_of_awkward_rows(n):
    rng = np.random.default_rng(n)
    x = awkward(rng, 6, n)
    w = (rng.chisquare(1, n) + 0.01).astype(np.float32)
    bound = {"Q2_K": 0.4, "Q3_K": 0.3, "Q4_K": 0.15, "Q5_K": 0.08, "Q6_K": 0.05, "Q8_K": 0.05,
             "IQ4_NL": 0.17, "IQ4_XS": 0.17, "MXFP4": 0.2, "Q8_KV": 0.05}
    for t in TYPES:
        for weights in (None, w):
            v = roundtrip(t, x, weights)
            assert np.isfinite(v).all(), t
            assert np.all(v[0] == 0), t  # a zero row stays zero
            assert np.all(np.abs(v[1]) <= 1e-28), t  # tiny values stay tiny
            rest = slice(2, None)
            rel = np.sqrt(np.sum((v[rest] - x[rest]) ** 2) / np.sum(x[rest] ** 2))
            assert rel < bound[t], (t, n, weights is not None, rel)


def test_error_shrinks_with_bits():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    err = {}
    for t in TYPES:
        v = roundtrip(t, x, None)
        err[t] = float(np.sqrt(np.mean((v - x) ** 2)))
    order = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]
    assert all(err[a] > 1.5 * err[b] for a, b in zip(order[:-1], order[1:], strict=True)), err
    assert err["Q3_K"] > err["IQ4_XS"] > err["Q5_K"], err
    assert err["Q3_K"] > err["IQ4_NL"] > err["Q5_K"], err
    assert err["Q6_K"] > err["Q8_KV"], err


@pytest.mark.parametrize("type_name", USES_IMATRIX)
def test_imatrix_lowers_the_weighted_error(type_name):
    rng = np.random.default_rng(2)
    n = 512
    x = rng.standard_normal((16, n)).astype(np.float32)
    w = np.where(rng.random(n) < 0.2, 50.0, 0.1).astype(np.float32)  # a few columns matter most

    def weighted(v):
        return float(np.sum(w * (v - x) ** 2))

    with_w, without = weighted(roundtrip(type_name, x, w)), weighted(roundtrip(type_name, x, None))
    assert with_w < 0.9 * without, (with_w, without)


def test_values_on_the_grid_come_back_exactly():
    rng = np.random.default_rng(3)
    q = rng.integers(-127, 128, (4, 512)).astype(np.float32)
    q[:, 7] = 127
    x = q * np.float32(0.125)
    for t in ("Q8_K", "Q8_KV"):
        assert np.array_equal(roundtrip(t, x, None), x), t
    codes = rng.integers(0, 16, (4, 512))
    x = IQ4NL_VALUES[codes] * np.float32(2.0**-7)
    x[:, ::32] = -127 * np.float32(2.0**-7)  # the largest magnitude in every block
    for t in ("IQ4_NL", "IQ4_XS"):
        for w in (None, np.ones(512, np.float32)):
            assert np.array_equal(roundtrip(t, x, w), x), t
    mx = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)[codes] * np.float32(2.0**-5)
    mx[:, ::32] = 12 * np.float32(2.0**-5)
    assert np.array_equal(roundtrip("MXFP4", mx, None), mx)


def test_q2_k_stores_ternary_rows_exactly():
    rng = np.random.default_rng(4)
    x = (rng.integers(-1, 2, (3, 512)) * 0.75).astype(np.float32)
    assert np.array_equal(roundtrip("Q2_K", x, None), x)


def test_q8_sums_match_the_quants():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    raw = QUANTIZERS["Q8_K"](x, None).reshape(-1, 296)
    d = raw[:, 0:4].copy().view(np.float32)[:, 0]
    q = raw[:, 8:264].view(np.int8).astype(np.int64)
    bsums = raw[:, 264:296].copy().view(np.int16)
    assert np.array_equal(bsums, q.reshape(-1, 16, 16).sum(axis=2))
    assert np.array_equal(raw[:, 4:8].copy().view(np.float32)[:, 0], d * q.sum(axis=1).astype(np.float32))
    raw = QUANTIZERS["Q8_KV"](x, None)
    assert np.array_equal(raw[:, 4:8].copy().view(np.int32)[:, 0], raw[:, 8:].view(np.int8).astype(np.int64).sum(axis=1))


@pytest.mark.parametrize("r_type,plain,use_w", [("Q8_K_R8", "Q8_K", False), ("Q8_KV_R8", "Q8_KV", False),
                                                ("Q4_K_R4", "Q4_K", True), ("IQ4_XS_R8", "IQ4_XS", True)])
def test_interleaved_types_are_repacks(r_type, plain, use_w):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 512)).astype(np.float32)
    w = rng.chisquare(2, 512).astype(np.float32) if use_w else None
    ours = quantize(r_type, x, w, n_threads=2)
    assert np.array_equal(ours, repack(quantize(plain, x, w, n_threads=1), (512, 8), plain, r_type))
    v = dequantize(r_type, ours, (512, 8))
    assert np.sqrt(np.mean((v - x) ** 2)) < 0.1


def test_threads_do_not_change_the_bytes():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 256)).astype(np.float32)
    w = rng.chisquare(2, 256).astype(np.float32)
    for t in TYPES:
        assert np.array_equal(quantize(t, x, w, n_threads=1), quantize(t, x, w, n_threads=2)), t


def test_iq4nl_nearest_grid_index():
    values = IQ4NL_VALUES
    v = np.concatenate([np.linspace(-140, 130, 5001), (values[1:] + values[:-1]) / 2 + 1e-3]).astype(np.float32)
    for a in v:
        got = best_index_iq4nl(IQ4NL_INDEX, values, a)
        assert abs(values[got] - a) <= np.min(np.abs(values - a)) + 1e-6, a
    assert IQ4NL_INT.dtype == np.int32


def test_f16_rounding_matches_numpy():
    rng = np.random.default_rng(8)
    bits = np.concatenate([rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32),
                           np.array([0x477FEFFF, 0x477FF000, 0x33000000, 0x33000001, 0x387FE000, 0x38800000], np.uint32)])
    v = bits.view(np.float32)
    v = v[np.isfinite(v)]
    ours = np.array([f16_bits(a) for a in v], np.uint16)
    with np.errstate(over="ignore"):  # values past the f16 range become inf, as in F16C
        assert np.array_equal(ours, v.astype(np.float16).view(np.uint16))


def test_bad_input_raises():
    x = np.zeros((4, 300), np.float32)
    with pytest.raises(UnsupportedTypeError):
        quantize("Q4_K", x)
    with pytest.raises(UnsupportedTypeError):
        QUANTIZERS["Q4_K"](x, None)
    x = np.ones((4, 256), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(QuantizeError):
        quantize("Q2_K", x)
    with pytest.raises(QuantizeError):
        quantize("IQ4_XS", np.ones((4, 256), np.float32), np.ones(128, np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS["Q6_K"](np.ones((4, 256), np.float32), np.ones(100, np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS["Q8_KV"](np.ones(256, np.float32), None)
