"""The fused per-block generation step (`kernels/cpu/block_step.py`): token-by-token logits
and KV cache rows against the per-operation path and the reference path, for the
architectures it covers (llama, qwen2 biases, qwen3 q/k norms), f16, bf16 and q8_0 caches,
and the cases that must fall back to the per-operation path."""

from __future__ import annotations

import pytest
import torch

from kiln.kernels import dispatch
from kiln.runtime import Engine
from kiln.runtime.options import Options
from tests.gguf_rewrite import requantize_matrices
from tests.tiny_models import make_tiny_model

PROMPT = [1, 5, 9, 14, 3, 22, 7, 30, 2, 11, 4]
GENERATED = 6  # tokens of PROMPT evaluated one at a time


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("blockstep")
    out = {}
    for arch, cfg in (
        ("llama", dict(hidden_size=256, intermediate_size=512, head_dim=64)),
        ("qwen2", dict(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=32)),
        ("qwen2-hd16", dict(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2)),
        ("qwen3", dict(hidden_size=96, intermediate_size=160)),
    ):
        _, f32 = make_tiny_model(arch.split("-")[0], d / arch, **cfg)
        out[arch] = requantize_matrices(f32, d / f"{arch}-q8.gguf", "Q8_0")
    _, f32 = make_tiny_model("llama", d / "llama-k", hidden_size=256, intermediate_size=512, head_dim=64)
    out["llama-Q4_K"] = requantize_matrices(f32, d / "llama-q4k.gguf", "Q4_K")
    out["llama-IQ4_KS"] = requantize_matrices(f32, d / "llama-iq4ks.gguf", "IQ4_KS")
    return out


def _generate(path, steps: bool, **options):
    """Logits of the last GENERATED tokens, evaluated one by one, and the engine; steps
    False: the engine keeps off the one-call stack (Options.block_steps)."""
    e = Engine.load(path, Options(ctx_size=64, block_steps=steps, **options))
    calls, real = [], dispatch.blocks_step
    dispatch.blocks_step = lambda *a: calls.append(1) or real(*a)
    try:
        e.eval(PROMPT[:-GENERATED])
        logits = torch.cat([e.eval([t]) for t in PROMPT[-GENERATED:]])
    finally:
        dispatch.blocks_step = real
    e.stack_calls = len(calls)  # how many tokens went through the one-call stack
    return logits, e


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "llama-Q4_K", "llama-IQ4_KS"])
@pytest.mark.parametrize("cache", ["f16", "bf16", "q8_0"])
def test_block_step_matches_the_per_operation_path(files, name, cache):
    fused, e1 = _generate(files[name], True, cache_type_k=cache, cache_type_v=cache)
    assert e1.stack_calls == GENERATED, "the one-call stack did not apply"
    plain, e2 = _generate(files[name], False, cache_type_k=cache, cache_type_v=cache)
    assert e2.stack_calls == 0
    assert torch.isfinite(fused).all()
    # the same kernels and roundings; only float summation order (and SiLU's formula)
    # differs, which can flip the rounding of a cached value in later layers: one bf16 step
    # is 2^-8 of a value (2^-11 in f16), and a random model amplifies that; a wrong step gives
    # order 1
    assert _rel(fused, plain) < {"f16": 3e-4, "bf16": 1e-3, "q8_0": 3e-3}[cache]
    for layer in range(len(e1.model.blocks)):
        for which in ("k", "v"):
            a = getattr(e1.cache.seq(0), which)[layer].read(len(PROMPT))
            b = getattr(e2.cache.seq(0), which)[layer].read(len(PROMPT))
            if cache == "q8_0":  # same input in layer 0: at most one quantization step apart;
                # later layers' inputs differ slightly, which can flip one more rounding
                step = b.abs().amax(dim=-1, keepdim=True) / 127
                assert bool(((a - b).abs() <= step * (1.001 if layer == 0 else 2)).all())
                continue
            if layer == 0:  # same input: norm, product, bias, q/k norm, rope and rounding agree to
                # the last bit of the cache type (fast-math may order one product's sum differently)
                steps = (a.view(torch.int16).int() - b.view(torch.int16).int()).abs()
                assert bool(((steps <= 1) | (a.float() == b.float())).all())
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "llama-Q4_K"])
def test_block_step_matches_the_reference_path(files, name):
    fused, _ = _generate(files[name], True)
    dispatch.use_reference(True)
    try:
        slow, _ = _generate(files[name], True)
    finally:
        dispatch.use_reference(False)
    assert _rel(fused, slow) < 3e-3


@pytest.mark.parametrize(
    "name, types", [("llama", ("f32", "f32")), ("llama", ("q8_0", "f16")), ("qwen2-hd16", ("q8_0", "q8_0"))]
)
def test_f32_mixed_and_unaligned_q8_0_caches_take_the_per_operation_path(files, name, types):
    """f32 caches, K and V of different types, and q8_0 heads of 16 values (not whole blocks)."""
    fused, e = _generate(files[name], True, cache_type_k=types[0], cache_type_v=types[1])
    plain, _ = _generate(files[name], False, cache_type_k=types[0], cache_type_v=types[1])
    assert e.stack_calls == 0 and torch.equal(fused, plain)


def test_no_block_step_while_an_observer_watches(files, monkeypatch):
    from kiln.kernels import observe

    seen = []
    monkeypatch.setattr(observe, "OBSERVER", lambda name, x, expert, n: seen.append(name))
    _, e = _generate(files["llama"], True)
    assert e.stack_calls == 0
    # every product of every generated token reached the observer
    assert seen.count("blk.0.attn_q.weight") == 1 + GENERATED


def test_a_nan_is_reported_with_its_layer_on_both_paths(files, tmp_path):
    import numpy as np

    from kiln.errors import NumericalError
    from tests.gguf_rewrite import rewrite_gguf

    def poison(name, values):
        return (np.full_like(values, np.nan), "F32") if name == "blk.1.ffn_norm.weight" else None

    bad = rewrite_gguf(files["llama"], tmp_path / "nan.gguf", poison)
    for steps in (True, False):
        e = Engine.load(bad, Options(ctx_size=64, block_steps=steps))
        with pytest.raises(NumericalError, match=r"layer 1 \(blk\.1\)"):
            e.eval([5])  # one token: the one-call stack when steps
        if steps:
            assert e.model._steps
