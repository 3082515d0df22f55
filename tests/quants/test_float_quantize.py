"""F16 and BF16 from float32: byte-identical to the gguf package (ties, subnormals, the f16
range edge, rounding up to inf in BF16); F16 overflow is refused instead of written as inf."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import quantize as gguf_quantize

from kiln.errors import QuantizeError
from kiln.quants import dequantize, quantize


def _awkward() -> np.ndarray:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 96)) * 3).astype(np.float32)
    x[0, :4] = [65504.0, -65519.0, 6.1e-5, 1e-8]
    bits = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x3F817FFF, 1, 0x7F7FFFFF, 0x8000, 0x80018000], np.uint32)
    x[1, :8] = bits.view(np.float32)
    return x


@pytest.mark.parametrize("type_name", ["F16", "BF16"])
def test_matches_gguf_package(type_name):
    x = _awkward()
    if type_name == "F16":
        x[1, 5] = 1.0  # the largest float32 is refused for F16 (test below)
    got = quantize(type_name, x, None)
    ref = gguf_quantize(x, GGMLQuantizationType[type_name])
    np.testing.assert_array_equal(got, ref.view(np.uint8).reshape(-1))
    back = dequantize(type_name, got, (96, 6))
    finite = np.abs(x) < 3e38  # the largest float32 rounds up to inf in BF16, as in ggml
    rel = 2**-11 if type_name == "F16" else 2**-8
    assert np.all(np.abs(back[finite] - x[finite]) <= rel * np.abs(x[finite]) + 6e-8)


def test_f16_overflow_is_refused():
    with pytest.raises(QuantizeError, match="beyond the range of F16"):
        quantize("F16", np.full((2, 32), 70000.0, np.float32), None, "blk.0.ffn_down.weight")
