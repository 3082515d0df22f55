"""Quantizing to IQ2_K, IQ3_K, IQ4_K, IQ5_K, IQ6_K (kiln.quants.iqk_k_quantize).

Oracles: ik_llama.cpp's own output, i.e. the golden files (../shared/golden, src.gguf
quantized with imatrix.dat by llama-quantize) and, for the paths the golden set does not
reach (no imatrix, imatrix zeros, zero and tiny rows), the sha256 of what ik_llama.cpp's
quantize_iq*_k (commit 8337e4cd3, GCC 12 -O3 -march=native) wrote for `reference_input()`.
Beyond those: the error falls with the bits, the imatrix lowers the weighted error, and
the grid lookup is the nearest grid value.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kiln.errors import KilnError, QuantizeError, UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.quants import dequantize, quantize
from kiln.quants import iqk_tables as T
from kiln.quants.imatrix import read_imatrix_dat
from kiln.quants.iqk_k_quantize import BLOCK_BYTES, QUANTIZERS
from kiln.quants.quantize_common import IQ3NL_INDEX, IQ4NL_INDEX, IQ5NL_INDEX, best_index_iq2nl, best_index_nl

TYPES = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ5_K", "IQ6_K"]

# sha256 of ik_llama.cpp's bytes for reference_input(): (without imatrix, with its imatrix)
IK_SHA256 = {
    "IQ2_K": ("785d22135a5f2bb4776a3609f37806190659eba866ecb979473bd01980c21579",
              "9d86875593e4859d3cb7770394f8e26de6569b96ae893ee4b44bff0996c208ea"),
    "IQ3_K": ("afea200b9a099b2685fd89fd3f88801a826fe5219226a1225c5c7cb04b2fd054",
              "d7d56c83dd8fa1a9f79cc63a52f91e86967c84fa4a4588744d52a7ada51b675f"),
    "IQ4_K": ("90cebab69b351e4330012e5eb1142c6ce94792032190ef960a27286ffe89e1f6",
              "7d089a7b8bd23b5bf0c90bd7ad04700079a66abee81904b36b0bd15b0d279289"),
    "IQ5_K": ("a92c35915d83580fa620aa47d5b91745c1c3fcb88b3675dffefd300f44360148",
              "9b7097d802bbe4422ed59a89d548c796bcb3f2f62c29513c85a6e5e2a5a59e7e"),
    "IQ6_K": ("6a82e5b2a67ba009e91cc32d8485922be25ed11ace4067bdd6c195c54c70e5eb",
              "7092a511332b1c5b52afb536348c599ac9a214cc9dab2ddfad946edf7cfcecf9"),
}  # fmt: skip


def reference_input() -> tuple[np.ndarray, np.ndarray]:
    """5 rows of 512: outliers, a zero stretch over a sub-block edge, a tiny row, ties,
    an all-zero row; an imatrix with zeros, one sub-block all zero."""
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((5, 512)).astype(np.float32)
    x[rng.random(x.shape) < 0.01] *= np.float32(10)
    x[1, 16:48] = 0
    x[2] *= np.float32(1e-6)
    x[3, ::3] = np.round(x[3, ::3])
    x[4] = 0
    w = rng.chisquare(2, 512).astype(np.float32)
    w[rng.random(512) < 0.1] = 0
    w[256:272] = 0
    return x, w


def awkward_input(seed: int, n_per_row: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, n_per_row)).astype(np.float32) * np.float32(0.02)
    x[rng.random(x.shape) < 0.005] *= 15  # outliers
    x[1] = 0  # zero row
    x[2] *= np.float32(1e-12)  # tiny values: below what an f16 block scale can express
    x[3, :256] = np.abs(x[3, :256])  # one sign only
    x[4] *= np.float32(0.01)  # small values
    return x


def weighted_rmse(values: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    return float(np.sqrt(np.sum(w * (values - x) ** 2) / (np.sum(w) * x.shape[0])))


def roundtrip(type_name: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    raw = QUANTIZERS[type_name](x, imatrix)
    assert raw.dtype == np.uint8 and raw.shape == (x.shape[0], x.shape[1] // 256 * BLOCK_BYTES[type_name])
    return dequantize(type_name, raw.reshape(-1), (x.shape[1], x.shape[0]))


@pytest.mark.parametrize("type_name", TYPES)
def test_bytes_equal_ik_llama_cpp(type_name):
    x, w = reference_input()
    plain, weighted = IK_SHA256[type_name]
    assert hashlib.sha256(QUANTIZERS[type_name](x, None).tobytes()).hexdigest() == plain
    assert hashlib.sha256(QUANTIZERS[type_name](x, w).tobytes()).hexdigest() == weighted


@pytest.mark.parametrize("type_name", TYPES + ["IQ4_K_R4"])
def test_bytes_equal_golden_file(golden, type_name):
    name = "blk.0.attn_k.weight"
    with GGUFFile(golden / "src.gguf") as src, GGUFFile(golden / "quant" / f"{type_name}.gguf") as f:
        info = src.tensors[name]
        x = dequantize(info.type_id, src.tensor_bytes(name), info.shape)
        w = read_imatrix_dat(golden / "imatrix.dat").weights(name)
        expected = np.asarray(f.tensor_bytes(name)).reshape(-1)
    assert np.array_equal(quantize(type_name, x, w, name, n_threads=2), expected)


@pytest.mark.parametrize("n_per_row", [256, 512, 768])
def test_error_falls_with_bits(n_per_row):
    x = awkward_input(n_per_row, n_per_row)
    w = np.random.default_rng(7).chisquare(1, n_per_row).astype(np.float32)
    live = np.abs(x).max(axis=1) > 1e-6
    xs = x[live]
    rel_plain, rel_weighted = [], []
    for t in TYPES:
        v = roundtrip(t, x, None)
        vw = roundtrip(t, x, w)
        # zero rows stay zero, tiny rows do not blow up
        assert np.all(v[1] == 0) and np.all(vw[1] == 0)
        assert np.all(np.abs(v[2]) <= 2 * np.abs(x[2]).max())
        rel_plain.append(np.sqrt(np.mean((v[live] - xs) ** 2) / np.mean(xs**2)))
        rel_weighted.append(weighted_rmse(vw[live], xs, w) / weighted_rmse(0 * xs, xs, w))
    assert rel_plain[0] < 0.5 and rel_plain[-1] < 0.05
    assert all(a > b for a, b in zip(rel_plain[:-1], rel_plain[1:], strict=True)), rel_plain
    assert all(a > b for a, b in zip(rel_weighted[:-1], rel_weighted[1:], strict=True)), rel_weighted


@pytest.mark.parametrize("n_per_row", [256, 512, 768])
def test_imatrix_lowers_the_weighted_error(n_per_row):
    rng = np.random.default_rng(n_per_row)
    x = rng.standard_normal((16, n_per_row)).astype(np.float32)
    w = np.exp(2 * rng.standard_normal(n_per_row)).astype(np.float32)
    for t in TYPES:
        ratio = weighted_rmse(roundtrip(t, x, w), x, w) / weighted_rmse(roundtrip(t, x, None), x, w)
        assert ratio < 0.8, (t, ratio)


@pytest.mark.parametrize("type_name", TYPES)
def test_layout_roundtrips_through_the_dequantizer(type_name):
    """Values that sit on the grid come back (nearly) exactly: the fields are where the
    dequantizer reads them."""
    rng = np.random.default_rng(3)
    grid = {"IQ2_K": T.IQ2NL[:4], "IQ3_K": T.IQ3NL[:8], "IQ4_K": T.IQ4K[:16],
            "IQ5_K": T.IQ5NL[:32], "IQ6_K": T.IQ6NL[:64]}[type_name]  # fmt: skip
    scale = np.repeat(rng.uniform(0.5, 1.5, (2, 16)), 16, axis=1).astype(np.float32) * np.float32(1e-3)
    x = np.asarray(grid, np.float32)[rng.integers(0, len(grid), (2, 256))] * scale
    x[:, ::16] = np.float32(grid[0]) * scale[:, ::16]  # every sub-block reaches the grid's end
    v = roundtrip(type_name, x, None)
    tol = {"IQ2_K": 0.35, "IQ3_K": 0.15, "IQ4_K": 0.05, "IQ5_K": 0.05, "IQ6_K": 0.05}[type_name]
    assert np.sqrt(np.mean((v - x) ** 2) / np.mean(x**2)) < tol


@pytest.mark.parametrize(
    ("values", "n", "table"),
    [(T.IQ3NL_F32, 8, IQ3NL_INDEX), (T.IQ4K_F32, 16, IQ4NL_INDEX), (T.IQ5NL_F32, 32, IQ5NL_INDEX)],
)
def test_best_index_is_the_nearest_grid_value(values, n, table):
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-140, 140, 3000), np.arange(-130, 130, 0.5)]).astype(np.float32)
    for off in (0, n):
        half = values[off : off + n].astype(np.float64)
        for x in xs:
            dist = np.abs(half - float(x))
            want = int(np.flatnonzero(dist == dist.min())[-1])  # ties go up, as in ik
            assert best_index_nl(values, off, n, table, x) == want, (off, x)
            if n == 8:
                four = T.IQ2NL_F32
                d4 = np.abs(four[off // 2 : off // 2 + 4].astype(np.float64) - float(x))
                assert best_index_iq2nl(four, off // 2, x) == int(np.flatnonzero(d4 == d4.min())[-1])


def test_bad_input_raises():
    x = np.ones((4, 256), np.float32)
    with pytest.raises(UnsupportedTypeError):
        quantize("IQ4_K", np.ones((4, 288), np.float32))
    with pytest.raises(QuantizeError):
        quantize("IQ3_K", np.where(np.eye(4, 256) > 0, np.nan, x))
    with pytest.raises(QuantizeError):
        quantize("IQ5_K", x, np.ones(128, np.float32))
    with pytest.raises(QuantizeError):
        quantize("IQ2_K_R4", np.ones((3, 256), np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS["IQ6_K"](np.ones(256, np.float32))
    with pytest.raises(KilnError):
        QUANTIZERS["IQ6_K"](x, np.ones(255, np.float32))
