"""Row-interleaved layouts (_R4/_R8): repack/unpack against ik_llama.cpp's own files in the
golden set (../shared/golden), round trips on random bytes of awkward shapes, and the
dequantizers against ik_llama.cpp's dequantization sums."""

from __future__ import annotations

import hashlib
import json
import zlib
from functools import cache

import numpy as np
import pytest

from kiln.errors import UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.gguf.types import GGML_TYPES_BY_NAME
from kiln.quants import interleaved as il
from kiln.quants import interleaved_iquants
from kiln.quants.registry import quant_type
from tests.conftest import GOLDEN

TYPES = list(il.LAYOUTS)
GOLDEN_TYPES = [
    "Q4_0_R8", "Q5_0_R4", "Q6_0_R4", "Q8_0_R8", "Q2_K_R4", "Q3_K_R4", "Q4_K_R4", "Q5_K_R4", "Q6_K_R4",
    "IQ2_XXS_R4", "IQ2_XS_R4", "IQ3_XXS_R4", "IQ3_S_R4", "IQ1_S_R4", "IQ1_M_R4", "IQ4_NL_R4", "IQ4_XS_R8",
    "IQ2_K_R4", "IQ3_K_R4", "IQ4_K_R4", "IQ5_K_R4", "IQ4_KS_R4", "IQ5_KS_R4", "IQ2_BN_R4", "Q8_K_R8", "Q8_KV_R8",
]
# Quantized directly by ik_llama.cpp, not plain-quantize-then-repack (or no plain file).
NOT_REPACKS = {"IQ1_S_R4", "IQ1_M_R4", "Q8_K_R8"}


def _manifest() -> dict:
    path = GOLDEN / "manifest.json"
    return json.loads(path.read_text())["types"] if path.exists() else {}


@cache
def _golden_rows(type_name: str) -> dict[str, tuple[np.ndarray, int]]:
    """Tensors of quant/<type_name>.gguf whose type is type_name: name -> (rows, n_per_row)."""
    out = {}
    with GGUFFile(GOLDEN / "quant" / f"{type_name}.gguf") as f:
        for name, info in f.tensors.items():
            if info.type_name != type_name:
                continue
            n_rows = int(np.prod(info.shape[1:]))
            out[name] = (np.array(f.tensor_bytes(name)).reshape(n_rows, -1), info.shape[0])
    return out


@cache
def _golden_plain(type_name: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    with GGUFFile(GOLDEN / "quant" / f"{type_name}.gguf") as f:
        out = {}
        for name in names:
            info = f.tensors[name]
            assert info.type_name == type_name
            out[name] = np.array(f.tensor_bytes(name)).reshape(int(np.prod(info.shape[1:])), -1)
        return out


def test_every_golden_interleaved_type_has_a_layout():
    assert set(GOLDEN_TYPES) <= set(TYPES)
    golden_r = {t for t in _manifest() if "_R" in t}
    assert golden_r <= set(TYPES), golden_r - set(TYPES)


# --- against ik_llama.cpp's files ------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(set(GOLDEN_TYPES) - NOT_REPACKS))
def test_repack_of_golden_plain_equals_golden_interleaved(golden, type_name):
    tensors = _golden_rows(type_name)
    assert tensors
    plain = _golden_plain(il.plain_type(type_name), tuple(tensors))
    for name, (y, _n) in tensors.items():
        x = plain[name]
        assert np.array_equal(il.repack(type_name, x), y), name
        assert np.array_equal(il.unpack(type_name, y), x), name


@pytest.mark.parametrize("type_name", GOLDEN_TYPES)
def test_golden_interleaved_round_trip(golden, type_name):
    for name, (y, _n) in _golden_rows(type_name).items():
        if type_name == "IQ1_M_R4":
            # IQ1_M holds only odd sub-scales (d*(2s+1)); ik_llama.cpp's IQ1_M_R4 uses even ones too
            with pytest.raises(UnsupportedTypeError, match="IQ1_M_R4"):
                il.unpack(type_name, y)
            y = _odd_iq1m_scales(y)
        assert np.array_equal(il.repack(type_name, il.unpack(type_name, y)), y), name


def test_iq1_repack_of_golden_plain_round_trips_where_representable(golden):
    """IQ1_S/IQ1_M -> _R4 needs one scale per row: true for the golden rows of 256 values."""
    for type_name in ("IQ1_S_R4", "IQ1_M_R4"):
        tensors = _golden_rows(type_name)
        plain = _golden_plain(il.plain_type(type_name), tuple(tensors))
        for name, (_y, n) in tensors.items():
            x = plain[name]
            if n == 256:
                assert np.array_equal(il.unpack(type_name, il.repack(type_name, x)), x), name
            else:  # two super-blocks per row with different scales
                with pytest.raises(UnsupportedTypeError, match="one scale per row"):
                    il.repack(type_name, x)


# --- random bytes of awkward shapes ----------------------------------------------------------


def _odd_iq1m_scales(y: np.ndarray) -> np.ndarray:
    """Set the low bit of every 4-bit sub-scale of IQ1_M_R4 rows."""
    rows = y.shape[0]
    g = y.reshape(rows // 4, -1).copy()
    blocks = g[:, 8:].reshape(g.shape[0], -1, 28)
    blocks[:, :, 24:] |= np.uint8(0x11)
    return g.reshape(rows, -1)


def _random_interleaved(rng, type_name: str, groups: int, n: int) -> np.ndarray:
    lay = il.LAYOUTS[type_name]
    geo = GGML_TYPES_BY_NAME[type_name]
    y = rng.integers(0, 256, (groups * lay.rows, geo.row_bytes(n)), dtype=np.uint8)
    if type_name == "Q8_K_R8":  # f16 scales: keep them finite so f16 -> f32 -> f16 is exact
        g = y.reshape(groups, -1)
        blocks = g.reshape(groups, n // 256, -1)
        blocks[:, :, :16] = rng.uniform(-2, 2, (groups, n // 256, 8)).astype("<f2").view(np.uint8)
        y = g.reshape(y.shape)
    if type_name == "IQ1_M_R4":
        y = _odd_iq1m_scales(y)
    return y


def _shapes(type_name: str):
    """(groups, values per row): 1..3 groups x 1..3 blocks, rows of 256k values for the IQ1
    types (their plain types have 256-value blocks)."""
    if type_name in ("IQ1_S_R4", "IQ1_M_R4"):
        return [(1, 256), (3, 512)]
    bs = GGML_TYPES_BY_NAME[type_name].block_size
    return [(1, bs), (2, 2 * bs), (3, 3 * bs)]


@pytest.mark.parametrize("type_name", TYPES)
def test_random_round_trips(type_name):
    rng = np.random.default_rng(zlib.crc32(type_name.encode()))
    lay = il.LAYOUTS[type_name]
    for groups, n in _shapes(type_name):
        y = _random_interleaved(rng, type_name, groups, n)
        x = il.unpack(type_name, y)
        assert x.shape == (groups * lay.rows, GGML_TYPES_BY_NAME[lay.plain].row_bytes(n))
        assert np.array_equal(il.repack(type_name, x), y), (groups, n)
        assert np.array_equal(il.unpack(type_name, il.repack(type_name, x)), x), (groups, n)
        if not lay.note:  # lossless both ways: any plain bytes survive repack + unpack
            x = rng.integers(0, 256, x.shape, dtype=np.uint8)
            assert np.array_equal(il.unpack(type_name, il.repack(type_name, x)), x), (groups, n)


def test_groups_are_independent():
    """Each group of rows repacks on its own: repacking a tensor equals repacking its groups."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (12, GGML_TYPES_BY_NAME["Q4_K"].row_bytes(512)), dtype=np.uint8)
    whole = il.repack("Q4_K_R4", x)
    parts = np.concatenate([il.repack("Q4_K_R4", x[i : i + 4]) for i in range(0, 12, 4)])
    assert np.array_equal(whole, parts)


def test_q8_k_r8_rounds_the_scale_to_f16():
    rng = np.random.default_rng(3)
    y = _random_interleaved(rng, "Q8_K_R8", 1, 256)
    x = il.unpack("Q8_K_R8", y)
    blocks = x.reshape(8, 296)
    d = blocks[:, :4].copy().view("<f4")[:, 0]
    q = blocks[:, 8:264].view(np.int8).astype(np.int32)
    assert np.array_equal(blocks[:, 264:].copy().view("<i2"), q.reshape(8, 16, 16).sum(-1))
    assert np.array_equal(blocks[:, 4:8].copy().view("<f4")[:, 0], d * q.sum(-1).astype(np.float32))
    x2 = blocks.copy()
    x2[:, :4] = (d * np.float32(1 + 2**-12)).astype("<f4").view(np.uint8).reshape(8, 4)  # off the f16 grid
    assert np.array_equal(il.repack("Q8_K_R8", x2.reshape(8, -1)), y)


def test_scrambled_signs():
    t = interleaved_iquants.SCRAMBLE
    assert list(t[:8]) == [0x00, 0x7F, 0x7E, 0x01, 0x7C, 0x03, 0x02, 0x7D]
    s = np.arange(128)
    parity = np.array([bin(v).count("1") & 1 for v in s])
    t16 = t.astype(np.int64)
    assert np.array_equal((t16 ^ (t16 << 1)) & 0xFF, s | (parity << 7))
    assert np.array_equal(interleaved_iquants.UNSCRAMBLE[t], s)


# --- errors ----------------------------------------------------------------------------------


def test_bad_input_is_reported_with_the_type_name():
    x = np.zeros((6, GGML_TYPES_BY_NAME["Q4_0"].row_bytes(64)), dtype=np.uint8)
    with pytest.raises(UnsupportedTypeError, match="Q4_0_R8.*multiple of 8"):
        il.repack("Q4_0_R8", x)
    with pytest.raises(UnsupportedTypeError, match="Q4_K_R4"):
        il.unpack("Q4_K_R4", np.zeros((4, 100), dtype=np.uint8))
    with pytest.raises(UnsupportedTypeError, match="Q4_K_R4"):
        il.repack("Q4_K_R4", np.zeros(144 * 4, dtype=np.uint8))
    with pytest.raises(UnsupportedTypeError, match="not a row-interleaved type"):
        il.repack("Q4_K", np.zeros((4, 144), dtype=np.uint8))
    with pytest.raises(UnsupportedTypeError, match="IQ1_S_R4"):
        il.unpack("IQ1_S_R4", np.zeros((4, GGML_TYPES_BY_NAME["IQ1_S_R4"].row_bytes(96)), dtype=np.uint8))
    deq = il.DEQUANTIZERS["Q8_0_R8"]
    with pytest.raises(UnsupportedTypeError, match="Q8_0_R8"):
        deq(np.zeros((8, 34), dtype=np.uint8), 64)
    with pytest.raises(UnsupportedTypeError, match="Q8_0_R8"):
        deq(np.zeros((4, 34), dtype=np.uint8), 32)


# --- dequantization --------------------------------------------------------------------------


def _gguf_iq1s_grid() -> np.ndarray:
    """The IQ1_S grid of llama.cpp's own Python package (an outside oracle)."""
    from gguf.quants import IQ1_S

    IQ1_S.init_grid()
    return np.asarray(IQ1_S.grid).reshape(2048, 8).astype(np.int8)


@pytest.fixture
def iq1s_grid(monkeypatch):
    """Use kiln's IQ1_S grid when kiln can dequantize IQ1_S, else the gguf package's."""
    if quant_type("IQ1_S").dequantizer is None:
        monkeypatch.setattr(interleaved_iquants, "_iq1s_grid", _gguf_iq1s_grid)


@pytest.mark.parametrize("type_name", GOLDEN_TYPES)
def test_dequantize_reproduces_ik_llama_cpp(golden, iq1s_grid, type_name):
    """The interleaved tensors of each golden file (the lead's test_golden also needs the file's
    plain-typed tensors)."""
    lay = il.LAYOUTS[type_name]
    if lay.direct is None and quant_type(lay.plain).dequantizer is None:
        pytest.fail(f"{lay.plain} cannot be dequantized")
    expected = _manifest()[type_name]["tensors"]
    for name, (y, n) in _golden_rows(type_name).items():
        values = np.asarray(il.DEQUANTIZERS[type_name](y, n), dtype=np.float32).reshape(-1)
        assert values.size == y.shape[0] * n
        assert np.array_equal(values[:64], np.float32(expected[name]["first64"])), name
        assert hashlib.sha256(values.astype("<f4").tobytes()).hexdigest() == expected[name]["sha256_f32"], name


def test_iq1s_grid_from_kiln_matches_gguf():
    if quant_type("IQ1_S").dequantizer is None:
        pytest.fail("IQ1_S cannot be dequantized")
    assert np.array_equal(interleaved_iquants._iq1s_grid(), _gguf_iq1s_grid())


@pytest.mark.parametrize("type_name", ["Q5_0_R4", "Q6_0_R4", "IQ1_S_R4", "IQ1_M_R4", "Q8_K_R8"])
def test_direct_dequantizers_agree_with_the_plain_type(iq1s_grid, type_name):
    """Where the interleaved type has its own formula, its values equal the plain type's on
    the unpacked rows (up to the sign of a zero: ik_llama.cpp's Q5_0_R4/Q6_0_R4 give +0)."""
    lay = il.LAYOUTS[type_name]
    plain = quant_type(lay.plain).dequantizer
    if plain is None:
        pytest.fail(f"{lay.plain} cannot be dequantized")
    rng = np.random.default_rng(11)
    n = 512 if type_name in ("IQ1_S_R4", "IQ1_M_R4", "Q8_K_R8") else 96
    y = _random_interleaved(rng, type_name, 2, n)
    if type_name in ("Q5_0_R4", "Q6_0_R4"):  # finite f16 scales
        g = y.reshape(2, n // 32, -1)
        g[:, :, :8] = rng.uniform(-1, 1, (2, n // 32, 4)).astype("<f2").view(np.uint8)
        y = g.reshape(y.shape)
    if type_name in ("IQ1_S_R4", "IQ1_M_R4"):
        g = y.reshape(2, -1)
        g[:, :8] = rng.uniform(0, 1, (2, 4)).astype("<f2").view(np.uint8)
        y = g.reshape(y.shape)
    got = np.asarray(il.DEQUANTIZERS[type_name](y, n), dtype=np.float32).reshape(-1)
    want = np.asarray(plain(il.unpack(type_name, y), n), dtype=np.float32).reshape(-1)
    assert np.array_equal(got, want)


# Interleaved types whose plain type llama.cpp's gguf package dequantizes (IQ1_M_R4's golden
# tensors cannot become IQ1_M: even sub-scales).
GGUF_PLAIN = [
    "Q4_0_R8", "Q5_0_R4", "Q8_0_R8", "Q2_K_R4", "Q3_K_R4", "Q4_K_R4", "Q5_K_R4", "Q6_K_R4", "IQ2_XXS_R4",
    "IQ2_XS_R4", "IQ3_XXS_R4", "IQ3_S_R4", "IQ1_S_R4", "IQ4_NL_R4", "IQ4_XS_R8",
]


@pytest.mark.parametrize("type_name", GGUF_PLAIN)
def test_unpacked_golden_dequantized_by_gguf_matches_ik_llama_cpp(golden, iq1s_grid, type_name):
    """Outside oracle for unpack: llama.cpp's Python (gguf) dequantizes the unpacked rows to
    ik_llama.cpp's values for the interleaved tensor (Q5_0_R4: to the same values as kiln's
    dequantizer, which differs from Q5_0's only in the sign of some zeros)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    gtype = GGMLQuantizationType[il.plain_type(type_name)]
    expected = _manifest()[type_name]["tensors"]
    for name, (y, n) in _golden_rows(type_name).items():
        values = gguf_dequantize(il.unpack(type_name, y), gtype).astype("<f4").reshape(-1)
        if type_name == "Q5_0_R4":
            ours = np.asarray(il.DEQUANTIZERS[type_name](y, n), dtype=np.float32).reshape(-1)
            assert np.array_equal(values, ours), name
        else:
            assert hashlib.sha256(values.tobytes()).hexdigest() == expected[name]["sha256_f32"], name


@pytest.mark.parametrize("type_name", ["IQ1_S_R4", "IQ1_M_R4"])
def test_iq1_conversions_keep_values(iq1s_grid, type_name):
    """IQ1_*_R4 -> IQ1_* (where representable) keeps every value: kiln's direct dequantizer of
    the interleaved rows equals llama.cpp's Python dequantizer of the unpacked ones."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    rng = np.random.default_rng(5)
    n = 512
    y = _random_interleaved(rng, type_name, 2, n)
    g = y.reshape(2, -1)
    g[:, :8] = rng.uniform(0, 1, (2, 4)).astype("<f2").view(np.uint8)  # finite row scales
    y = g.reshape(y.shape)
    got = np.asarray(il.DEQUANTIZERS[type_name](y, n), dtype=np.float32).reshape(-1)
    want = gguf_dequantize(il.unpack(type_name, y), GGMLQuantizationType[il.plain_type(type_name)]).reshape(-1)
    assert np.array_equal(got, want.astype(np.float32))
