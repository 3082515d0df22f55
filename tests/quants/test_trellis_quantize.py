"""Quantizing to IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT (kiln.quants.trellis_quantize).

Oracles: ik_llama.cpp's llama-quantize output in ../shared/golden (src.gguf quantized with
imatrix.dat: the bytes must be ik's), kiln's trellis dequantizer (bit-exact with ik's, see
test_trellis.py) for everything that is read back, and a brute-force search over the whole
codebook for the pruned nearest-entry search.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import KilnError
from kiln.gguf import GGUFFile
from kiln.quants import dequantize, quantize
from kiln.quants.imatrix import read_imatrix_dat
from kiln.quants.trellis import BLOCK_BYTES
from kiln.quants.trellis_quantize import QUANTIZERS, _codebook, _match4, _match8

TYPES = ["IQ1_KT", "IQ2_KT", "IQ3_KT", "IQ4_KT"]


def awkward_rows(seed: int, n: int) -> np.ndarray:
    """Gaussian rows of length n with outliers, a zero row, a tiny row, a zero super-block,
    a constant block and a row of large values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((7, n)).astype(np.float32) * np.float32(0.02)
    x[rng.random(x.shape) < 0.01] *= 10
    x[1] = 0
    x[2] *= np.float32(1e-30)
    x[3, :256] = 0
    x[4, 32:64] = 0.03
    x[5] *= np.float32(1e4)
    return x


def _roundtrip(type_name: str, x: np.ndarray, imatrix: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    raw = quantize(type_name, x, imatrix, n_threads=2)
    return raw.reshape(x.shape[0], -1), dequantize(type_name, raw, x.shape[::-1])


def _weights(x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
    """The quantizer's weights: imatrix * sqrt(2*mean(x^2 over the super-block) + x^2)."""
    sb = x.reshape(x.shape[0], -1, 256).astype(np.float64)
    sigma2 = 2 * (sb**2).mean(axis=2, keepdims=True)
    return (imatrix.reshape(1, -1, 256) * np.sqrt(sigma2 + sb**2)).reshape(x.shape)


@pytest.mark.parametrize("type_name", TYPES)
def test_golden_bytes(golden, type_name):
    """The 64-row tensors of the golden source come out byte for byte as ik_llama.cpp's."""
    imatrix = read_imatrix_dat(golden / "imatrix.dat")
    with GGUFFile(golden / "src.gguf") as src, GGUFFile(golden / "quant" / f"{type_name}.gguf") as ref:
        for name in ["token_embd.weight", "output.weight"]:
            info = src.tensors[name]
            x = np.asarray(src.tensor_bytes(name)).view(np.float32).reshape(info.shape[::-1])
            ours = quantize(type_name, x, imatrix.weights(name), name, n_threads=2)
            assert np.array_equal(ours, np.asarray(ref.tensor_bytes(name)).reshape(-1)), name


@pytest.mark.slow
def test_error_small_and_decreasing_with_bits():
    for n in (256, 512, 768):
        x = awkward_rows(n, n)
        normal = np.array([0, 3, 4, 6])  # rows with a signal of ordinary size
        errors = []
        for type_name in TYPES:
            raw, y = _roundtrip(type_name, x, None)
            assert raw.shape == (7, 4 + n // 256 * BLOCK_BYTES[type_name])
            assert np.isfinite(y).all()
            assert np.all(y[1] == 0) and np.all(raw[1] == 0), "a zero row is all zero bytes"
            assert np.abs(y[2]).max() <= 1e-28, "a tiny row stays tiny"
            assert np.abs(y[3, :256]).max() <= 0.01 * np.abs(y[3]).max(), "a zero super-block stays ~0"
            rel = np.sqrt(((y[normal] - x[normal]) ** 2).mean() / (x[normal] ** 2).mean())
            big = np.sqrt(((y[5] - x[5]) ** 2).mean() / (x[5] ** 2).mean())
            assert big < 0.7, (type_name, n, big)
            errors.append(rel)
        assert errors[0] < 0.7 and errors[3] < 0.16, (n, errors)
        assert errors[0] > errors[1] > errors[2] > errors[3], (n, errors)


@pytest.mark.slow
def test_imatrix_lowers_weighted_error():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 512)).astype(np.float32)
    imatrix = (rng.chisquare(1, 512) * np.where(rng.random(512) < 0.1, 50, 1)).astype(np.float32)
    for type_name in TYPES:
        errs = []
        for im in (None, imatrix):
            _, y = _roundtrip(type_name, x, im)
            errs.append(np.sum(imatrix * (y - x) ** 2))
        assert errs[1] < 0.8 * errs[0], (type_name, errs)


@pytest.mark.parametrize("type_name", TYPES)
def test_row_scale_is_the_least_squares_fit(type_name):
    """Read back through the dequantizer, each row scale is the weighted least-squares scale
    of the chosen seeds and block scales (times 1.07 for IQ1_KT, as ik_llama.cpp writes it):
    every field of the layout must be where the dequantizer looks for it."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 768)).astype(np.float32)
    imatrix = rng.chisquare(2, 768).astype(np.float32)
    _, y = _roundtrip(type_name, x, imatrix)
    w = _weights(x, imatrix)
    fit = (w * x * y).sum(axis=1) / (w * y * y).sum(axis=1)
    expected = 1 / 1.07 if type_name == "IQ1_KT" else 1.0
    np.testing.assert_allclose(fit, expected, rtol=2e-4)


def test_threads_and_chunks_do_not_change_bytes():
    x = awkward_rows(3, 512)
    imatrix = np.random.default_rng(3).chisquare(1, 512).astype(np.float32)
    for type_name in ("IQ2_KT", "IQ4_KT"):
        one = quantize(type_name, x, imatrix, n_threads=1)
        assert np.array_equal(one, quantize(type_name, x, imatrix, n_threads=3))
        assert np.array_equal(one.reshape(7, -1)[2:5], QUANTIZERS[type_name](x[2:5], imatrix))


@pytest.mark.parametrize("key", TYPES)
def test_pruned_search_is_cluster_argmin_and_near_exhaustive(key):
    """find_best_match returns the weighted-nearest entry of the bin's list (its score
    computed in ik's summation order), which is the codebook's nearest entry in most cases
    and hardly worse in the others."""
    cb = _codebook(key)
    vals, cv, offsets, members, mid = cb.args
    group = vals.shape[1]
    assert np.all(np.diff(offsets) % 8 == 0)
    rng = np.random.default_rng(2)
    buf = np.empty(cb.buf_len, np.float32)
    out = np.empty(8, np.int32)
    ratios, exact = [], 0
    for _ in range(40):
        xb = rng.standard_normal(32).astype(np.float32)
        xb = np.abs(xb) if key == "IQ3_KT" else xb
        wb = (rng.random(32) + 0.1).astype(np.float32)
        d = np.float32(np.abs(xb).max() / 100)
        (_match8 if group == 8 else _match4)(d, xb, wb, cb.args, buf, out)
        for g in range(32 // group):
            s = (np.float32(1) / d) * xb[g * group : (g + 1) * group]
            w = wb[g * group : (g + 1) * group]
            if group == 8:
                u = int(((s > mid) << np.arange(8)).sum())
            else:
                u = int(
                    (
                        np.searchsorted(np.array([-48, -16, 16, 48], np.float32), s, side="right")
                        * 5 ** np.arange(4)
                    ).sum()
                )
            cols = np.arange(offsets[u], offsets[u + 1])
            e = w * (cv[:, cols].T - s) ** 2
            if group == 8:
                score = ((e[:, 0] + e[:, 4]) + (e[:, 2] + e[:, 6])) + (
                    (e[:, 1] + e[:, 5]) + (e[:, 3] + e[:, 7])
                )
            else:
                score = (e[:, 0] + e[:, 2]) + (e[:, 1] + e[:, 3])
            assert score[members[cols] == out[g]].min() == score.min()
            full = ((vals.astype(np.float64) - s) ** 2 * w).sum(axis=1)
            ratios.append(full[out[g]] / full.min())
            exact += out[g] == full.argmin()
    assert np.mean(ratios) < 1.15 and exact >= 0.8 * len(ratios), (np.mean(ratios), exact / len(ratios))


@pytest.mark.parametrize("type_name", TYPES)
def test_bad_input_raises(type_name):
    x = np.ones((2, 256), np.float32)
    with pytest.raises(KilnError, match="256"):
        quantize(type_name, np.ones((2, 288), np.float32))
    with pytest.raises(KilnError, match="super-block"):
        QUANTIZERS[type_name](np.ones((2, 288), np.float32))
    bad = x.copy()
    bad[1, 7] = np.nan
    with pytest.raises(KilnError, match="NaN"):
        quantize(type_name, bad)
    with pytest.raises(KilnError, match="imatrix"):
        quantize(type_name, x, np.ones(128, np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS[type_name](np.ones(256, np.float32))
