"""The default model against ../shared/reference/smollm2.md (exact-math figures that
ik_llama.cpp on f32 weights and transformers agree on)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from kiln.cli import main
from kiln.runtime import Engine, Options
from kiln.tokenizer import Tokenizer
from tests.conftest import WIKI, reference_value

N_CTX = 512


def _reference_ppl() -> list[float]:
    return [float(x) for x in re.findall(r"\[\d+\]([\d.]+)", reference_value("ppl_first20"))]


def test_greedy_continuation(smollm2, capsys):
    code = main(["run", "-m", str(smollm2), "-p", "The capital of France is", "-n", "24", "--temp", "0"])
    assert code == 0
    assert capsys.readouterr().out == json.loads(reference_value("greedy_text_json")) + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("ubatch", [512, 96])
def test_perplexity_first_chunks(smollm2, ubatch):
    """llama-perplexity's scoring: each 512-token chunk scored on its second half."""
    engine = Engine.load(smollm2, Options(ctx_size=N_CTX, ubatch_size=ubatch))
    tokenizer = Tokenizer.from_metadata(engine.metadata)
    ids = tokenizer.encode(WIKI.read_text(encoding="utf-8")[:20000], add_special=False)
    expected = _reference_ppl()[:2]
    nll, count, got = 0.0, 0, []
    for c in range(len(expected)):
        chunk = ids[c * N_CTX : (c + 1) * N_CTX]
        engine.reset(None)
        logprobs = torch.log_softmax(engine.eval(chunk).double(), dim=-1)
        for i in range(N_CTX // 2, N_CTX - 1):
            nll -= float(logprobs[i, chunk[i + 1]])
            count += 1
        got.append(math.exp(nll / count))
    engine.close()
    for ours, ref in zip(got, expected, strict=True):
        assert abs(ours / ref - 1) < 1e-3, (got, expected)
