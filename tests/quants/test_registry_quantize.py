"""kiln.quants.quantize / repack as a caller sees them: the errors, expert tensors with one
imatrix row per expert, thread-count independence, repack both ways."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.errors import KilnError, QuantizeError, UnsupportedTypeError
from kiln.quants import dequantize, quantize, repack


def _x(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("type_name,block", [("Q4_K", 256), ("IQ4_KS", 256), ("IQ2_KT", 256), ("Q4_K_R4", 256)])
def test_row_length_the_type_cannot_hold(type_name, block):
    with pytest.raises(UnsupportedTypeError) as info:
        quantize(type_name, _x(8, 128), None, "blk.0.attn_k.weight")
    msg = str(info.value)
    assert "blk.0.attn_k.weight" in msg and type_name in msg and f"block size {block}" in msg and "128" in msg


@pytest.mark.parametrize("type_name", ["IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_XXS_R4"])
def test_types_that_need_an_imatrix(type_name):
    with pytest.raises(QuantizeError, match=f"{type_name} in tensor blk.3.ffn_down.weight needs an importance matrix"):
        quantize(type_name, _x(8, 256), None, "blk.3.ffn_down.weight")


def test_bad_imatrix_and_values():
    with pytest.raises(QuantizeError, match="imatrix in tensor w has 100 values"):
        quantize("Q4_K", _x(4, 256), np.ones(100, np.float32), "w")
    x = _x(4, 256)
    x[2, 7] = np.nan
    with pytest.raises(QuantizeError, match="w holds NaN or Inf"):
        quantize("Q4_K", x, None, "w")
    with pytest.raises(KilnError, match="cannot quantize int32 values"):
        quantize("Q8_0", np.zeros((4, 32), np.int32))


def test_expert_tensor_takes_one_imatrix_row_per_expert():
    x = _x(3, 8, 256, seed=1)
    w = np.random.default_rng(2).chisquare(1.0, (3, 256)).astype(np.float32)
    whole = quantize("IQ4_XS", x, w.reshape(-1), "blk.1.ffn_up_exps.weight")
    parts = [quantize("IQ4_XS", x[e], w[e]) for e in range(3)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert not np.array_equal(parts[0], quantize("IQ4_XS", x[0], w[1]))


@pytest.mark.parametrize("type_name", ["Q5_K", "IQ3_S", "IQ4_K_R4"])
def test_threads_do_not_change_bytes(type_name):
    x, w = _x(48, 512, seed=3), np.ones(512, np.float32)
    np.testing.assert_array_equal(quantize(type_name, x, w, n_threads=1), quantize(type_name, x, w, n_threads=3))


def test_repack_both_ways_and_wrong_pairs():
    x = _x(16, 512, seed=4)
    plain = quantize("Q6_K", x)
    r4 = repack(plain, (512, 16), "Q6_K", "Q6_K_R4")
    np.testing.assert_array_equal(r4, quantize("Q6_K_R4", x))
    np.testing.assert_array_equal(repack(r4, (512, 16), "Q6_K_R4", "Q6_K"), plain)
    with pytest.raises(UnsupportedTypeError, match="cannot repack Q6_K to Q4_K_R4"):
        repack(plain, (512, 16), "Q6_K", "Q4_K_R4")
    with pytest.raises(UnsupportedTypeError, match="interleaves 4 rows"):
        repack(quantize("Q6_K", x[:6]), (512, 6), "Q6_K", "Q6_K_R4")


@pytest.mark.parametrize("type_name", ["IQ4_NL", "IQ4_XS", "IQ4_KS", "Q4_K", "IQ2_K", "IQ3_S"])
def test_imatrix_with_zero_blocks(type_name):
    """An expert no token reached has all-zero importance: the block is still quantized sanely
    (ggml divides 0 by 0 in IQ4_NL/IQ4_XS and writes a NaN scale)."""
    x = _x(8, 512, seed=5)
    w = np.random.default_rng(6).chisquare(1.0, 512).astype(np.float32)
    w[:256] = 0.0
    raw = quantize(type_name, x, w, "blk.5.ffn_down_exps.weight")
    back = dequantize(type_name, raw, (512, 8))
    assert np.isfinite(back).all()
    assert np.sqrt(np.mean((back - x) ** 2)) < 0.6 * np.sqrt(np.mean(x**2))
