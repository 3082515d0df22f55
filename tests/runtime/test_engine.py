"""The Engine on the default model: batching and the KV cache give the logits of one full pass."""

from __future__ import annotations

import pytest
import torch

from kiln.errors import ContextLimitError, KilnError
from kiln.runtime import Engine, Options

PROMPT = [504, 3575, 282, 4649, 314]  # "The capital of France is" (reference/smollm2.md)
PARIS = 7042  # " Paris"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def engine(smollm2):
    e = Engine.load(smollm2, Options(ctx_size=256, cache_type_k="f32", cache_type_v="f32", temp=0))
    yield e
    e.close()


def test_greedy_next_token(engine):
    engine.reset(None)
    logits = engine.eval(PROMPT)
    assert logits.shape == (5, engine.hparams.n_vocab)
    assert int(logits[-1].argmax()) == PARIS


@pytest.mark.slow
def test_micro_batches_and_single_tokens_agree(engine, smollm2):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, engine.hparams.n_vocab, (37,), generator=g).tolist()
    engine.reset(None)
    full = engine.eval(tokens, seq=0)
    # micro-batches of up to 8 tokens take the generation kernels (16-bit activations, about
    # 2e-5 per product), larger ones float32 products: the logits agree to a few 1e-4
    for ub in (1, 7):
        e = Engine.load(smollm2, Options(ctx_size=64, ubatch_size=ub, cache_type_k="f32", cache_type_v="f32"))
        assert _rel(e.eval(tokens), full) < 1e-3
        e.close()
    # two calls on the same sequence continue it
    engine.reset(None)
    first = engine.eval(tokens[:20], seq=3)
    second = engine.eval(tokens[20:], seq=3)
    assert _rel(torch.cat([first, second]), full) < 1e-4
    # sequences are independent
    engine.eval(tokens[:5], seq=4)
    assert _rel(engine.eval(tokens[5:9], seq=4), full[5:9]) < 1e-3


def test_f16_cache_close_to_f32(engine, smollm2):
    engine.reset(None)
    ref = engine.eval(PROMPT)
    e = Engine.load(smollm2, Options(ctx_size=64))
    assert _rel(e.eval(PROMPT), ref) < 2e-3
    e.close()


def test_context_limit(smollm2):
    e = Engine.load(smollm2, Options(ctx_size=8))
    e.eval(PROMPT)
    with pytest.raises(ContextLimitError, match="do not fit in the context of 8"):
        e.eval(PROMPT)
    assert e.n_past() == 5  # the failed call left the cache as it was
    e.eval(PROMPT[:3])
    with pytest.raises(KilnError, match="empty"):
        e.eval([])
    e.close()


def test_generate_reuses_prefix_and_stops(engine):
    engine.reset(None)
    out = list(engine.generate(PROMPT, n_predict=4))
    assert out[0] == PARIS and len(out) == 4
    # same prompt again: the cached prefix is re-used and the result is the same
    assert list(engine.generate(PROMPT, n_predict=4)) == out
    assert engine.n_past() == len(PROMPT) + 3


def test_no_mmap_same_logits(engine, smollm2):
    engine.reset(None)
    ref = engine.eval(PROMPT)
    e = Engine.load(smollm2, Options(ctx_size=64, no_mmap=True, cache_type_k="f32", cache_type_v="f32"))
    assert torch.equal(e.eval(PROMPT), ref)
    e.close()
