"""Quantizing to IQ2_KS, IQ2_KL, IQ3_KS, IQ4_KS, IQ4_KSS, IQ5_KS (kiln.quants.iqk_ks_quantize).

Oracle: ik_llama.cpp's llama-quantize output in ../shared/golden (src.gguf quantized with
imatrix.dat), which these quantizers reproduce byte for byte. Random rows of awkward
shapes check the round trip through kiln's dequantizers, the imatrix's effect, the edge
cases (zero, tiny, huge, constant blocks) and the errors raised.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiln.errors import KilnError, QuantizeError, UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.quants import dequantize, quantize
from kiln.quants import iqk_ks_quantize as Q
from kiln.quants import iqk_tables as T
from kiln.quants.imatrix import read_imatrix_dat
from kiln.quants.quantize_common import nl_best_index

TYPES = ["IQ2_KS", "IQ2_KL", "IQ3_KS", "IQ4_KSS", "IQ4_KS", "IQ5_KS"]  # fewest bits first
# relative RMS error bounds on gaussian rows with outliers (measured without imatrix:
# 0.41 0.25 0.23 0.15 0.10 0.05; with one, weighted by it: 0.27 0.18 0.16 0.08 0.07 0.04)
MAX_REL_ERR = {
    "IQ2_KS": 0.5,
    "IQ2_KL": 0.33,
    "IQ3_KS": 0.28,
    "IQ4_KSS": 0.19,
    "IQ4_KS": 0.13,
    "IQ5_KS": 0.065,
}


def awkward_rows(seed: int) -> list[np.ndarray]:
    """Rows of 256, 512 and 768 values with outliers, and rows that exercise edge cases."""
    rng = np.random.default_rng(seed)
    out = []
    for rows, n in [(3, 256), (2, 512), (5, 768)]:
        x = rng.standard_normal((rows, n)).astype(np.float32) * np.float32(0.05)
        x[rng.random(x.shape) < 0.02] *= 12
        out.append(x)
    x = rng.standard_normal((7, 512)).astype(np.float32)
    x[0] = 0  # all zero
    x[1, :256] = 0  # one zero block of 256
    x[2, 32:64] = 0.75  # constant sub-block
    x[3] *= np.float32(1e-20)  # below every threshold: quantizes to zero
    x[4, 64:96] *= np.float32(1e4)  # a huge sub-block
    x[5] = rng.integers(-3, 4, 512).astype(np.float32)  # ties everywhere
    x[6, ::2] = 0
    out.append(x)
    return out


def _roundtrip(type_name: str, x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    raw = quantize(type_name, x, w, n_threads=1)
    return dequantize(type_name, raw, (x.shape[1], x.shape[0]))


def _rel_err(y: np.ndarray, x: np.ndarray, w: np.ndarray | None = None) -> float:
    w = np.ones(x.shape[1], np.float32) if w is None else w
    return float(np.sqrt(np.sum(w * (y - x) ** 2) / np.sum(w * x**2)))


@pytest.mark.slow
@pytest.mark.parametrize("type_name", TYPES)
def test_golden_bytes_with_imatrix(golden, type_name):
    entry = json.loads((golden / "manifest.json").read_text())["types"][type_name]
    imatrix = read_imatrix_dat(golden / "imatrix.dat")
    checked = 0
    with GGUFFile(golden / "src.gguf") as src, GGUFFile(golden / entry["file"]) as ref:
        for name, expected in entry["tensors"].items():
            if expected["type"] != type_name:
                continue
            cols, rows = src.tensors[name].shape
            x = np.frombuffer(src.tensor_bytes(name), dtype="<f4").reshape(rows, cols)
            ours = Q.QUANTIZERS[type_name](x, imatrix.weights(name), name=name)
            assert np.array_equal(ours.reshape(-1), ref.tensor_bytes(name).reshape(-1)), name
            checked += 1
    assert checked == 9


def test_errors_are_small_and_fall_with_more_bits():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 768)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] *= 8
    w = (rng.chisquare(1, 768) ** 2).astype(np.float32)
    for weights in (None, w):
        errs = [_rel_err(_roundtrip(t, x, weights), x, weights) for t in TYPES]
        assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs
        assert all(e < MAX_REL_ERR[t] for t, e in zip(TYPES, errs, strict=True)), errs


@pytest.mark.parametrize("type_name", TYPES)
def test_awkward_rows_round_trip(type_name):
    for seed in range(2):
        for x in awkward_rows(seed):
            n = x.shape[1]
            w = np.random.default_rng(seed).chisquare(1, n).astype(np.float32)
            w[:32] = 0  # an all-zero imatrix block falls back to tiny weights
            for weights in (None, w):
                raw = Q.QUANTIZERS[type_name](x, weights)
                assert raw.dtype == np.uint8 and raw.shape == (x.shape[0], raw.shape[1])
                y = dequantize(type_name, raw, (n, x.shape[0])).reshape(x.shape)
                assert np.isfinite(y).all()
                if x.shape == (7, 512):
                    assert not y[0].any() and not y[3].any()  # zero and below-threshold rows
                    # a zero block in a live row keeps a nonzero scale (ik_llama.cpp does so too)
                    assert np.abs(y[1, :256]).max() <= 0.01 * np.abs(x[1]).max()
                    big = x[4, 64:96]
                    assert _rel_err(y[4:5, 64:96], big[None]) < 2 * MAX_REL_ERR[type_name]
                    x, y = x[[2, 5, 6]], y[[2, 5, 6]]
                assert _rel_err(y, x) < 1.6 * MAX_REL_ERR[type_name], (x.shape, weights is None)


def test_imatrix_lowers_the_weighted_error():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    w = (rng.chisquare(1, 512) ** 2).astype(np.float32)
    for t in TYPES:
        without = _rel_err(_roundtrip(t, x, None), x, w)
        with_w = _rel_err(_roundtrip(t, x, w), x, w)
        assert with_w < 0.9 * without, (t, with_w, without)


def test_decisions_do_not_depend_on_the_magnitude():
    """Every step is float32 with power-of-two-exact scaling: 16*x gives the same blocks and
    16 times the row scale (a float64 constant or a stray double would break this)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    w = rng.chisquare(1, 512).astype(np.float32)
    for t in TYPES:
        meta = 2 if t in ("IQ2_KS", "IQ2_KL", "IQ3_KS") else 4
        dt = "<f2" if meta == 2 else "<f4"
        for weights in (None, w):
            a = Q.QUANTIZERS[t](x, weights)
            b = Q.QUANTIZERS[t](x * np.float32(16), weights)
            assert np.array_equal(a[:, meta:], b[:, meta:]), t
            da = a[:, :meta].copy().view(dt).astype(np.float32)
            db = b[:, :meta].copy().view(dt).astype(np.float32)
            assert np.array_equal(db, da * 16), t


def test_threads_and_layouts_give_the_same_bytes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((24, 256)).astype(np.float32)
    w = rng.chisquare(1, 256).astype(np.float32)
    for t in TYPES:
        one = Q.QUANTIZERS[t](x, w)
        assert np.array_equal(quantize(t, x, w, n_threads=2).reshape(one.shape), one)
        wide = np.zeros((24, 512), np.float64)
        wide[:, ::2] = x
        assert np.array_equal(Q.QUANTIZERS[t](wide[:, ::2], w.astype(np.float64)), one)


def test_nearest_value_tables():
    """The shortcut tables give the nearest grid value wherever no midpoint is within 1."""
    for half, bits in ((T.IQ3NL[:8], 3), (T.IQ4K[:16], 4), (T.IQ5NL[:32], 5)):
        v = np.asarray(half, np.float32)
        mids = (v[1:] + v[:-1]) / 2
        for x in np.linspace(v[0] - 5, v[-1] + 5, 2001, dtype=np.float32):
            got = nl_best_index(bits, 0, x)
            if np.all(np.abs(mids - x) >= 1):
                assert got == int(np.argmin(np.abs(v - x))), (bits, x)
            else:  # near a midpoint: the compared pair, the nearer one
                assert abs(v[got] - x) <= np.min(np.abs(v - x)) + 1e-6, (bits, x)


def test_iq2_kl_search_tables():
    pts = {tuple(p) for p in T.IQ2KL_PAIRS.tolist()}
    assert len(pts) == 32
    on = Q._KL_INDEX[Q._KL_INDEX >= 0]
    assert sorted(on.tolist()) == list(range(32))
    v = T.IQ3NL[:8]
    for j in np.nonzero(Q._KL_INDEX < 0)[0]:
        a, b = v[j // 8], v[j % 8]
        assert (a, b) not in pts
        near = Q._KL_NEIGH[-Q._KL_INDEX[j] - 1]
        d = [(Q._KL_PTS[n, 0] - a) ** 2 + (Q._KL_PTS[n, 1] - b) ** 2 for n in near]
        assert d == sorted(d) and len(set(near.tolist())) == 8


def test_iq4_kss_pruning_makes_parity_even_with_one_small_change():
    rng = np.random.default_rng(8)
    xv = np.empty(4, np.float32)
    wv = np.empty(4, np.float32)
    for _ in range(300):
        v = int(rng.integers(0, 1 << 16))
        xv[:] = rng.standard_normal(4)
        wv[:] = rng.random(4)
        o = int(rng.integers(0, 2)) * 16
        p = Q._prune(v, Q._IQ4K, o, xv, wv, np.float32(0.02))
        assert bin(p).count("1") % 2 == 0
        if bin(v).count("1") % 2 == 0:
            assert p == v
        else:
            changed = [j for j in range(4) if (p >> 4 * j) & 15 != (v >> 4 * j) & 15]
            assert len(changed) == 1
            j = changed[0]
            assert abs(((p >> 4 * j) & 15) - ((v >> 4 * j) & 15)) <= 2


@pytest.mark.parametrize("type_name", TYPES)
def test_bad_input_raises(type_name):
    fn = Q.QUANTIZERS[type_name]
    for n in (48, 128):
        with pytest.raises(UnsupportedTypeError, match="not divisible by block size 256"):
            fn(np.zeros((2, n), np.float32), None)
    with pytest.raises(KilnError, match="2D"):
        fn(np.zeros(256, np.float32), None)
    with pytest.raises(KilnError, match="imatrix has 32 values"):
        fn(np.zeros((2, 256), np.float32), np.ones(32, np.float32), name="blk.0.ffn_up.weight")
    with pytest.raises(UnsupportedTypeError, match="not divisible by block size 256"):
        quantize(type_name, np.zeros((2, 320), np.float32))
    x = np.ones((2, 256), np.float32)
    x[1, 7] = np.nan
    with pytest.raises(QuantizeError, match="NaN"):
        quantize(type_name, x)
    with pytest.raises(QuantizeError, match="imatrix"):
        quantize(type_name, np.ones((2, 256), np.float32), np.ones(100, np.float32))
