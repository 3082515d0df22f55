"""Reference rope tables against transformers' rope initialisation (default, linear, YaRN, llama3),
and the two pairings (ggml "norm" and NeoX) against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from kiln.kernels.reference import rope, rope_cos_sin

HEAD_DIM, BASE, N_CTX = 64, 10000.0, 4096


def _hf(rope_parameters):
    cfg = LlamaConfig(
        hidden_size=HEAD_DIM * 4,
        num_attention_heads=4,
        max_position_embeddings=N_CTX,
        rope_parameters={"rope_theta": BASE, **rope_parameters},
    )
    kind = rope_parameters["rope_type"]
    fn = ROPE_INIT_FUNCTIONS[kind] if kind != "default" else None
    if fn is None:
        inv = 1.0 / (BASE ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
        return inv, 1.0
    inv, attn = fn(cfg, "cpu")
    return inv.double(), attn


POS = torch.tensor([0, 1, 7, 100, 1000, 4095, 20000])
# transformers keeps inverse frequencies in float32: its angles carry ~1e-7 relative error
TOL = (2e-5 + 2e-7 * POS.double())[:, None]


def _close(a, b):
    return bool(((a.double() - b).abs() <= TOL).all())


@pytest.mark.parametrize(
    "params,kw",
    [
        ({"rope_type": "default"}, {}),
        ({"rope_type": "linear", "factor": 4.0}, {"freq_scale": 0.25}),
        (
            {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512},
            {"freq_scale": 0.125, "ext_factor": 1.0, "n_ctx_orig": 512},
        ),
    ],
)
def test_tables_match_transformers(params, kw):
    inv, attn = _hf(params)
    theta = POS.double()[:, None] * inv[None, :]
    cos, sin = rope_cos_sin(POS, HEAD_DIM, BASE, **kw)
    assert _close(cos, torch.cos(theta) * attn)
    assert _close(sin, torch.sin(theta) * attn)


def test_llama3_freq_factors():
    params = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 512}
    inv_scaled, _ = _hf(params)
    inv, _ = _hf({"rope_type": "default"})
    factors = inv / inv_scaled  # what llama.cpp stores in rope_freqs.weight
    cos, sin = rope_cos_sin(POS, HEAD_DIM, BASE, freq_factors=factors.float())
    theta = POS.double()[:, None] * inv_scaled[None, :]
    assert _close(cos, torch.cos(theta))
    assert _close(sin, torch.sin(theta))


def test_pairings():
    torch.manual_seed(0)
    x = torch.randn(5, 3, 10)  # rotate 8 of 10 dims
    cos, sin = rope_cos_sin(torch.arange(5), 8, BASE)
    for neox in (False, True):
        y = rope(x, cos, sin, neox)
        assert torch.equal(y[..., 8:], x[..., 8:])
        for i in range(4):
            a, b = (i, i + 4) if neox else (2 * i, 2 * i + 1)
            c, s = cos[:, None, i], sin[:, None, i]
            assert torch.allclose(y[..., a], x[..., a] * c - x[..., b] * s, atol=1e-6)
            assert torch.allclose(y[..., b], x[..., a] * s + x[..., b] * c, atol=1e-6)
        # a rotation keeps the norm of each pair
        assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert math.isclose(float(cos[0, 0]), 1.0)
