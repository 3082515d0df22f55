"""Dequantization against the PyPI `gguf` package (random blocks) and ik_llama.cpp's golden set."""

from __future__ import annotations

import hashlib
import json

import gguf as gguf_py
import numpy as np
import pytest

from kiln.errors import UnsupportedTypeError
from kiln.gguf import GGUFFile
from kiln.quants import QUANT_TYPES, dequantize, quant_type

BASIC_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def _random_raw(rng, type_name, shape):
    """Random bytes for a tensor, with finite f16 scales where the block has them."""
    t = quant_type(type_name)
    n_rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if type_name == "F32":
        return rng.standard_normal(shape[::-1]).astype(np.float32).view(np.uint8).reshape(-1)
    if type_name == "F16":
        return rng.standard_normal(shape[::-1]).astype(np.float16).view(np.uint8).reshape(-1)
    if type_name == "BF16":
        return (rng.standard_normal(shape[::-1]).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(-1)
    n_blocks = n_rows * shape[0] // t.block_size
    raw = rng.integers(0, 256, size=(n_blocks, t.type_size), dtype=np.uint8)
    n_halves = 2 if type_name in ("Q4_1", "Q5_1") else 1
    halves = (rng.standard_normal((n_blocks, n_halves)) * 0.05).astype(np.float16)
    raw[:, : 2 * n_halves] = halves.view(np.uint8)
    return raw.reshape(-1)


@pytest.mark.parametrize("type_name", BASIC_TYPES)
@pytest.mark.parametrize("shape", [(32, 1), (96, 7), (288, 3, 2), (64,)])
def test_matches_gguf_package(type_name, shape):
    rng = np.random.default_rng(abs(hash((type_name, shape))) % 2**32)
    raw = _random_raw(rng, type_name, shape)
    ours = dequantize(type_name, raw, shape)
    qtype = gguf_py.GGMLQuantizationType[type_name]
    row_bytes = quant_type(type_name).geometry.row_bytes(shape[0])
    theirs = gguf_py.quants.dequantize(raw.reshape(-1, row_bytes), qtype).reshape(ours.shape)
    assert ours.dtype == np.float32 and ours.shape == tuple(reversed(shape))
    assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("type_name", BASIC_TYPES[1:])
def test_matches_golden_manifest(golden, type_name):
    manifest = json.loads((golden / "manifest.json").read_text())["types"][type_name]
    with GGUFFile(golden / manifest["file"]) as f:
        for name, expected in manifest["tensors"].items():
            info = f.tensors[name]
            values = dequantize(info.type_id, f.tensor_bytes(name), info.shape, name)
            assert hashlib.sha256(values.astype("<f4").tobytes()).hexdigest() == expected["sha256_f32"], name
            assert np.array_equal(values.reshape(-1)[:64], np.float32(expected["first64"]))


def test_registry_covers_ik_llama_cpp_types():
    # every GGMLQuantizationType of the PyPI gguf package that ik_llama.cpp shares has the same geometry
    ik_differs = {"Q8_1", "Q8_K"}  # ik_llama.cpp changed these activation-only blocks
    for q in gguf_py.GGMLQuantizationType:
        if q.name in ik_differs:
            continue
        ours = QUANT_TYPES.get(int(q))
        assert ours is not None, q.name
        assert (ours.block_size, ours.type_size) == gguf_py.GGML_QUANT_SIZES[q], q.name
    for name in ["IQ2_K", "IQ4_KS", "IQ2_KT", "IQ5_KS_R4", "IQ2_K_R4", "Q8_KV_R8"]:
        assert quant_type(name).name == name


def test_unsupported_type_is_a_clear_error():
    raw = np.zeros(quant_type("Q8_K64").type_size, np.uint8)
    with pytest.raises(UnsupportedTypeError, match="Q8_K64 in tensor blk.0.x cannot be dequantized"):
        dequantize("Q8_K64", raw, (64, 1), "blk.0.x")
    with pytest.raises(UnsupportedTypeError, match="row size 40 not divisible by block size 32 for Q4_0"):
        dequantize("Q4_0", np.zeros(18, np.uint8), (40, 1))
