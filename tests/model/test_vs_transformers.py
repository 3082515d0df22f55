"""kiln's logits against transformers' on tiny random models written by `kiln convert`.

A 64-token prompt in one batch, then 16 tokens one at a time through the KV
cache; the error is max |kiln - hf| / max |hf| over all those logits.

The file's precision is tested with an f32 KV cache (the tiny models' weights are
f16-representable, so an f16 file holds them exactly). The default f16 KV cache
rounds every key and value to 11 bits; on these deliberately sharp random models
that alone moves logits by up to ~2.5e-3 of their range, so it has its own bound.
"""

from __future__ import annotations

import pytest
import torch

from kiln.runtime import Engine, Options
from tests.tiny_models import make_tiny_model

ARCHS = ["llama", "llama-tied", "llama-rope-scaling", "qwen2", "qwen3", "gemma3"]
TOLERANCE = {"f32": 1e-4, "f16": 2e-3}
F16_CACHE_TOLERANCE = 5e-3
N_PROMPT, N_DECODE = 64, 16


def _compare(arch, outtype, cache, tmp_path) -> float:
    hf_model, gguf_path = make_tiny_model(arch, tmp_path, outtype=outtype)
    vocab = hf_model.config.vocab_size
    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, vocab, (N_PROMPT + N_DECODE,), generator=g)
    with torch.no_grad():
        expected = hf_model(tokens[None]).logits[0].float()
    engine = Engine.load(gguf_path, Options(ctx_size=128, cache_type_k=cache, cache_type_v=cache))
    got = [engine.eval(tokens[:N_PROMPT].tolist())]
    for i in range(N_PROMPT, N_PROMPT + N_DECODE):
        got.append(engine.eval([int(tokens[i])]))
    engine.close()
    got = torch.cat(got)
    assert got.shape == expected.shape
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch, outtype, tmp_path):
    err = _compare(arch, outtype, "f32", tmp_path)
    assert err < TOLERANCE[outtype], f"{arch} {outtype}: relative error {err:.2e}"


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_default_f16_kv_cache(arch, tmp_path):
    err = _compare(arch, "f16", "f16", tmp_path)
    assert err < F16_CACHE_TOLERANCE, f"{arch} with an f16 KV cache: relative error {err:.2e}"
