"""Continuous batching: several sequences evaluated in one forward pass give the logits each
gives alone (dense attention and every MLA mode), micro-batches split and mix them freely."""

from __future__ import annotations

import pytest
import torch

from kiln.runtime import BatchItem, Engine, Options
from tests.tiny_models import make_tiny_model
from tests.tiny_moe_models import make_tiny_moe_model

PROMPTS = [list(range(5, 5 + 37)), list(range(60, 60 + 9)), list(range(100, 100 + 70))]


def alone(path, opts: Options) -> list[torch.Tensor]:
    """Each prompt in its own engine, then two decode steps of tokens 7 and 8."""
    out = []
    for p in PROMPTS:
        e = Engine.load(path, opts)
        rows = [e.eval(p), e.eval([7]), e.eval([8])]
        e.close()
        out.append(torch.cat(rows))
    return out


def together(path, opts: Options) -> list[torch.Tensor]:
    e = Engine.load(path, opts)
    first = e.eval_batch([BatchItem(i, p, 0) for i, p in enumerate(PROMPTS)])
    step1 = e.eval_batch([BatchItem(i, [7], 0) for i in range(len(PROMPTS))])
    step2 = e.eval_batch([BatchItem(i, [8], 0) for i in range(len(PROMPTS))])
    e.close()
    return [torch.cat([a, b, c]) for a, b, c in zip(first, step1, step2, strict=True)]


def check(path, **kw):
    for ub in (512, 16):  # one micro-batch for all, or prompts cut and mixed across micro-batches
        opts = Options(ctx_size=128, ubatch_size=ub, cache_type_k="f32", cache_type_v="f32", **kw)
        for a, b in zip(alone(path, opts), together(path, opts), strict=True):
            assert a.shape == b.shape
            assert float((a - b).abs().max()) < 1e-4 * float(a.abs().max())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    return make_tiny_model("llama", d)[1], make_tiny_moe_model("deepseek-v3", d)[1]


def test_dense_batch_equals_separate(models):
    check(models[0])


@pytest.mark.parametrize("mla", [0, 1, 3])
def test_mla_batch_equals_separate(models, mla):
    check(models[1], mla=mla)


def test_last_row_only_and_errors(models):
    e = Engine.load(models[0], Options(ctx_size=64))
    out = e.eval_batch([BatchItem(0, [1, 2, 3]), BatchItem(1, [4, 5])])
    assert [o.shape[0] for o in out] == [1, 1]
    with pytest.raises(Exception, match="one item per sequence"):
        e.eval_batch([BatchItem(2, [1]), BatchItem(2, [2])])
    with pytest.raises(Exception, match="do not fit"):
        e.eval_batch([BatchItem(3, [1] * 65)])
    e.close()
