"""The grid i-quants (kiln.quants.iquants) against the PyPI `gguf` package on random blocks,
bit for bit, plus the lookup tables and the input checks. ik_llama.cpp's own results for
these types are checked by test_golden.py."""

from __future__ import annotations

import gguf as gguf_py
import numpy as np
import pytest

from kiln.errors import UnsupportedTypeError
from kiln.quants import dequantize, iquants, iquants_tables, quant_type

TYPES = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"]


def _random_rows(rng: np.random.Generator, type_name: str, n_rows: int, n_blocks: int) -> np.ndarray:
    """Random blocks [n_rows, row_bytes] with finite f16 super-block scales of either sign."""
    t = quant_type(type_name)
    raw = rng.integers(0, 256, size=(n_rows * n_blocks, t.type_size), dtype=np.uint8)
    d = (rng.standard_normal(n_rows * n_blocks) * 0.01).astype("<f2")
    if type_name == "IQ1_M":  # d's 16 bits sit in the top nibbles of the 4 scale words
        bits = d.view("<u2").astype(np.uint16)
        sc = raw[:, 48:56].copy().view("<u2") & np.uint16(0x0FFF)
        sc |= ((bits[:, None] >> (4 * np.arange(4, dtype=np.uint16))) & 15) << 12
        raw[:, 48:56] = sc.view(np.uint8)
    else:
        raw[:, :2] = d.view(np.uint8).reshape(-1, 2)
    return raw.reshape(n_rows, -1)


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize(("n_rows", "n_blocks"), [(1, 1), (5, 2), (3, 3)])
def test_matches_gguf_package(type_name, n_rows, n_blocks):
    rng = np.random.default_rng([TYPES.index(type_name), n_rows, n_blocks])
    rows = _random_rows(rng, type_name, n_rows, n_blocks)
    n = 256 * n_blocks
    ours = np.asarray(iquants.DEQUANTIZERS[type_name](rows, n), dtype=np.float32).reshape(n_rows, n)
    ref = gguf_py.quants.dequantize(rows, getattr(gguf_py.GGMLQuantizationType, type_name))
    assert ref.shape == (n_rows, n)
    assert np.isfinite(ours).all()
    # bit patterns, so -0.0 and 0.0 count as different
    assert np.array_equal(ours.view(np.uint32), ref.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("type_name", TYPES)
def test_registry_shape(type_name):
    rows = _random_rows(np.random.default_rng(7), type_name, 4, 2)
    out = dequantize(type_name, rows.reshape(-1), (512, 2, 2))
    assert out.shape == (2, 2, 512) and out.dtype == np.float32


@pytest.mark.parametrize(
    ("grid", "name"),
    [
        (iquants_tables.IQ2XXS_GRID, "IQ2_XXS"),
        (iquants_tables.IQ2XS_GRID, "IQ2_XS"),
        (iquants_tables.IQ2S_GRID, "IQ2_S"),
        (iquants_tables.IQ3XXS_GRID, "IQ3_XXS"),
        (iquants_tables.IQ3S_GRID, "IQ3_S"),
        (iquants_tables.IQ1S_GRID, "IQ1_S"),
    ],
)
def test_grids_match_gguf_package(grid, name):
    cls = gguf_py.quants._type_traits[getattr(gguf_py.GGMLQuantizationType, name)]
    cls.init_grid()
    assert np.array_equal(np.asarray(cls.grid).reshape(grid.shape), grid.astype(np.float32))


def test_ksigns_have_even_parity():
    s = iquants_tables.KSIGNS
    assert s.shape == (128,) and np.array_equal(s & 127, np.arange(128))
    assert (np.bitwise_count(s) % 2 == 0).all()


@pytest.mark.parametrize("type_name", TYPES)
def test_bad_input_raises(type_name):
    fn = iquants.DEQUANTIZERS[type_name]
    size = quant_type(type_name).type_size
    with pytest.raises(UnsupportedTypeError, match="block size 256"):
        fn(np.zeros((1, size), np.uint8), 128)
    with pytest.raises(UnsupportedTypeError, match="bytes"):
        fn(np.zeros((1, size + 1), np.uint8), 256)
    with pytest.raises(UnsupportedTypeError, match="uint8"):
        fn(np.zeros((1, size), np.float32), 256)
