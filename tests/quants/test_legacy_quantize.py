"""Quantizing to Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q6_0 (kiln.quants.legacy_quantize).

Oracles: the `gguf` package's quantize (llama.cpp's own Python) for the mainline types
without an imatrix, and ik_llama.cpp's llama-quantize output in ../shared/golden (src.gguf
quantized with imatrix.dat) for every type with an imatrix.
"""

from __future__ import annotations

import json
from fractions import Fraction

import gguf
import numpy as np
import pytest
from gguf.quants import quantize as gguf_quantize

from kiln.errors import KilnError, UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.quants import dequantize
from kiln.quants.imatrix import read_imatrix_dat
from kiln.quants.legacy_quantize import BLOCK_BYTES, QUANTIZERS

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_0"]
GGUF_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def awkward_inputs(seed: int) -> list[np.ndarray]:
    """Several rows of 1..5 blocks each, with the blocks that exercise edge cases."""
    rng = np.random.default_rng(seed)
    out = []
    for rows, blocks in [(1, 1), (3, 2), (5, 3), (2, 4), (7, 5)]:
        x = rng.standard_normal((rows, 32 * blocks)).astype(np.float32) * np.float32(0.05)
        outliers = rng.random(x.shape) < 0.02
        x[outliers] *= 12
        out.append(x)
    x = rng.standard_normal((6, 32 * 5)).astype(np.float32)
    x[0, :32] = 0  # all-zero block
    x[1, 32:64] = 0.75  # constant block
    x[2, 64:96] = -np.abs(x[2, 64:96])  # negative only
    x[3, 96:128] = np.abs(x[3, 96:128]) + 1  # positive only, min > 0
    x[4, :32] = (rng.integers(-8, 8, 32) * 0.125).astype(np.float32)  # ties
    x[4, 3], x[4, 9] = 2.0, -2.0  # equal magnitudes of both signs
    x[5, :32] *= np.float32(1e-20)  # tiny
    x[5, 32:64] *= np.float32(1e4)  # large
    out.append(x)
    return out


def _blocks_differing(a: np.ndarray, b: np.ndarray, block_bytes: int) -> int:
    return int((a.reshape(-1, block_bytes) != b.reshape(-1, block_bytes)).any(axis=1).sum())


@pytest.mark.parametrize("type_name", GGUF_TYPES)
def test_matches_gguf_package_without_imatrix(type_name):
    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    for seed in range(2):
        for x in awkward_inputs(seed):
            ours = QUANTIZERS[type_name](x, None)
            assert ours.dtype == np.uint8
            assert ours.shape == (x.shape[0], x.shape[1] // 32 * BLOCK_BYTES[type_name])
            theirs = gguf_quantize(x, qtype).reshape(ours.shape)
            assert _blocks_differing(ours, theirs, BLOCK_BYTES[type_name]) == 0, (type_name, x.shape)


def test_q5_0_fuses_the_offset_add_like_ik_llama_cpp():
    """ik_llama.cpp's x86 build (FMA) rounds x*(1/d) + 16.5 once; the gguf package rounds twice.

    With max -1.2345678 (d = max/-16) the value below has x/d + 16.5 = 30.99999884 exactly;
    rounded once to float32 that stays below 31 (the float32 spacing there is 2**-19), so
    its quant is 30; rounding x/d first gives 14.5 and then 31.
    """
    mx = np.float32(-1.2345678)
    v = np.array([1066350009], dtype=np.uint32).view(np.float32)[0]
    d = mx / np.float32(-16)
    exact = Fraction(float(v)) * Fraction(float(np.float32(1) / d)) + Fraction(33, 2)
    assert Fraction(31) - Fraction(1, 2**20) > exact > Fraction(30)  # below the midpoint 31 - 2**-20
    x = np.zeros((1, 32), np.float32)
    x[0, 0], x[0, 1] = mx, v
    ours = QUANTIZERS["Q5_0"](x, None)[0]
    q1 = (ours[6 + 1] & 0x0F) | (((int(ours[2:6].view("<u4")[0]) >> 1) & 1) << 4)
    assert q1 == 30
    theirs = gguf_quantize(x, gguf.GGMLQuantizationType.Q5_0).reshape(-1)
    assert (theirs[6 + 1] & 0x0F) | (((int(theirs[2:6].view("<u4")[0]) >> 1) & 1) << 4) == 31


def _golden_cases(golden_dir):
    manifest = json.loads((golden_dir / "manifest.json").read_text())
    return manifest["types"]


@pytest.mark.parametrize("type_name", TYPES)
def test_golden_bytes_with_imatrix(golden, type_name):
    entry = _golden_cases(golden)[type_name]
    imatrix = read_imatrix_dat(golden / "imatrix.dat")
    checked = 0
    with GGUFFile(golden / "src.gguf") as src, GGUFFile(golden / entry["file"]) as ref:
        for name, expected in entry["tensors"].items():
            if expected["type"] != type_name:
                continue
            info = src.tensors[name]
            cols, rows = info.shape
            x = np.frombuffer(src.tensor_bytes(name), dtype="<f4").reshape(rows, cols)
            ours = QUANTIZERS[type_name](x, imatrix.weights(name), name=name)
            theirs = ref.tensor_bytes(name).reshape(ours.shape)
            assert _blocks_differing(ours, theirs, BLOCK_BYTES[type_name]) == 0, name
            checked += 1
    assert checked == 9


def _dequantize_q6_0(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 26)
    d = b[:, :2].copy().view("<f2").astype(np.float32)
    qh, qs = b[:, 2:10], b[:, 10:26]
    q = np.empty((b.shape[0], 32), np.int32)
    for j in range(16):
        h = (qh[:, j % 8] >> (4 * (j // 8))) & 0x0F
        q[:, j] = (qs[:, j] & 0x0F) | ((h & 3) << 4)
        q[:, j + 16] = (qs[:, j] >> 4) | ((h >> 2) << 4)
    return ((q - 32).astype(np.float32) * d).reshape(-1)


def _roundtrip(type_name: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    raw = QUANTIZERS[type_name](x, w)
    if type_name == "Q6_0":
        return _dequantize_q6_0(raw).reshape(x.shape)
    return dequantize(type_name, raw, (x.shape[1], x.shape[0])).reshape(x.shape)


def test_errors_shrink_with_more_bits():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    w = rng.chisquare(1, 256).astype(np.float32)
    for weights in (None, w):
        ww = np.ones(256, np.float32) if weights is None else weights
        err = {}
        for t in TYPES:
            y = _roundtrip(t, x, weights)
            err[t] = float(np.sqrt(np.mean(ww * (y - x) ** 2) / np.mean(ww * x**2)))
        assert err["Q4_0"] < 0.15 and err["Q4_1"] < err["Q4_0"] * 1.05
        assert err["Q5_0"] < err["Q4_0"] * 0.6 and err["Q5_1"] < err["Q4_1"] * 0.6
        assert err["Q6_0"] < err["Q5_0"] * 0.6
        assert err["Q8_0"] < err["Q6_0"] * 0.3


def test_imatrix_lowers_the_weighted_error():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 128)).astype(np.float32)
    w = (rng.chisquare(1, 128) ** 2).astype(np.float32)
    for t in ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_0"]:
        plain = np.sum(w * (_roundtrip(t, x, None) - x) ** 2)
        weighted = np.sum(w * (_roundtrip(t, x, w) - x) ** 2)
        assert weighted < plain, t


def test_q8_0_ignores_the_imatrix_and_input_layout_does_not_matter():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 96)).astype(np.float32)
    w = rng.chisquare(1, 96).astype(np.float32)
    assert np.array_equal(QUANTIZERS["Q8_0"](x, w), QUANTIZERS["Q8_0"](x, None))
    for t in TYPES:
        expected = QUANTIZERS[t](x, w)
        assert np.array_equal(QUANTIZERS[t](x.astype(np.float64), w.astype(np.float64)), expected)
        wide = np.zeros((4, 192), np.float32)
        wide[:, ::2] = x
        assert np.array_equal(QUANTIZERS[t](wide[:, ::2], w), expected)


@pytest.mark.parametrize("type_name", TYPES)
def test_bad_input_raises(type_name):
    fn = QUANTIZERS[type_name]
    with pytest.raises(UnsupportedTypeError, match="not divisible by block size 32"):
        fn(np.zeros((2, 48), np.float32), None)
    with pytest.raises(KilnError, match="2D"):
        fn(np.zeros(64, np.float32), None)
    with pytest.raises(KilnError, match="imatrix has 32 values"):
        fn(np.zeros((2, 64), np.float32), np.ones(32, np.float32), name="blk.0.attn_q.weight")
