"""The KV cache's storage types: q8_0 rows hold what ggml's Q8_0 holds (kiln's Q8_0
quantizer is byte-identical to ik_llama.cpp's and the gguf package's); rows that q8_0
cannot hold are a clear error; a full cache takes exactly n_ctx rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiln.errors import OptionError
from kiln.quants import dequantize, quantize
from kiln.runtime.kv_cache import KVCache, bytes_per_value, check_row


def test_q8_0_rows_match_ggml_q8_0():
    g = torch.Generator().manual_seed(3)
    cache = KVCache(n_layer=1, n_ctx=40, type_k="q8_0", type_v="q8_0")
    seq = cache.seq(0)
    parts = [torch.randn(n, 3, 64, generator=g) * 5 for n in (17, 1, 9)]
    for p in parts:
        seq.begin(p.shape[0])
        k_all, v_all, pos = seq.append(0, p, p[..., :32].contiguous())
        seq.commit([0] * p.shape[0])
    x = torch.cat(parts).numpy().reshape(-1, 64 * 3)
    expected = dequantize("Q8_0", quantize("Q8_0", x), (64 * 3, x.shape[0])).reshape(-1, 3, 64)
    np.testing.assert_array_equal(k_all.numpy(), expected)
    assert v_all.shape == (27, 3, 32) and pos.tolist() == list(range(27))


def test_q8_0_needs_whole_blocks():
    check_row("q8_0", 576, "K")
    with pytest.raises(OptionError, match="multiple of 32 values; this model's rows have 48"):
        check_row("q8_0", 48, "K")


@pytest.mark.parametrize("cache_type", ["f32", "f16", "bf16", "q8_0"])
def test_full_cache_takes_n_ctx_rows(cache_type):
    n_ctx, row = 300, 96
    seq = KVCache(2, n_ctx, cache_type, cache_type).seq(0)
    for n in (200, 99, 1):
        seq.begin(n)
        for layer in range(2):
            seq.append(layer, torch.randn(n, 1, row), None)
        seq.commit([0] * n)
    assert seq.nbytes() == int(2 * n_ctx * row * bytes_per_value(cache_type))
