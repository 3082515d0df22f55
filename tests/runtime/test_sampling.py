"""Sampling: the candidate sets of top-k / top-p / min-p computed by hand, penalties, seeds."""

from __future__ import annotations

import math

import torch

from kiln.runtime import Sampler, SamplingParams


def _logits(probs):
    return torch.tensor([math.log(p) for p in probs])


PROBS = [0.05, 0.4, 0.02, 0.3, 0.2, 0.03]  # sorted ids by prob: 1, 3, 4, 0, 5, 2


def test_greedy_is_argmax():
    s = Sampler(SamplingParams(temp=0))
    assert s.sample(_logits(PROBS)) == 1


def test_top_k():
    ids, probs = Sampler(SamplingParams(temp=1, top_k=3, top_p=1, min_p=0)).candidates(_logits(PROBS))
    assert ids.tolist() == [1, 3, 4]
    assert torch.allclose(probs, torch.tensor([0.4, 0.3, 0.2]) / 0.9)


def test_top_p_keeps_smallest_prefix_reaching_p():
    # cumulative over all: 0.4, 0.7, 0.9, 0.95 ...: top_p 0.85 keeps three, 0.7 keeps two
    s = Sampler(SamplingParams(temp=1, top_k=0, top_p=0.85, min_p=0))
    assert s.candidates(_logits(PROBS))[0].tolist() == [1, 3, 4]
    s = Sampler(SamplingParams(temp=1, top_k=0, top_p=0.7, min_p=0))
    assert s.candidates(_logits(PROBS))[0].tolist() == [1, 3]


def test_min_p_relative_to_best():
    s = Sampler(SamplingParams(temp=1, top_k=0, top_p=1, min_p=0.5))  # keep p >= 0.2
    assert s.candidates(_logits(PROBS))[0].tolist() == [1, 3, 4]


def test_temperature_sharpens():
    ids, probs = Sampler(SamplingParams(temp=0.5, top_k=2, top_p=1, min_p=0)).candidates(_logits(PROBS))
    expected = torch.tensor([0.4**2, 0.3**2])
    assert torch.allclose(probs, expected / expected.sum())


def test_repeat_penalty():
    s = Sampler(SamplingParams(temp=0, repeat_penalty=10.0, repeat_last_n=4))
    s.accept(1)
    assert s.sample(_logits(PROBS)) == 3  # token 1 is penalized below token 3
    logits = torch.tensor([2.0, -1.0])
    s2 = Sampler(SamplingParams(repeat_penalty=2.0))
    s2.accept(0)
    s2.accept(1)
    assert s2.penalized(logits).tolist() == [1.0, -2.0]


def test_seed_reproducible_and_distribution():
    draws = [[Sampler(SamplingParams(temp=1, top_k=0, top_p=1, min_p=0, seed=7)).sample(_logits(PROBS))] for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    s = Sampler(SamplingParams(temp=1, top_k=0, top_p=1, min_p=0, seed=3))
    counts = torch.zeros(len(PROBS))
    for _ in range(4000):
        counts[s.sample(_logits(PROBS))] += 1
    assert torch.allclose(counts / 4000, torch.tensor(PROBS), atol=0.03)


def test_tiny_temperature_is_greedy_not_nan():
    from kiln.runtime.sampling import Sampler, SamplingParams

    g = torch.Generator().manual_seed(3)
    for temp in (1e-300, 1e-30):
        x = torch.randn(500, generator=g)
        assert Sampler(SamplingParams(temp, 40, 0.95, 0.05, 1.0, 64, 1)).sample(x) == int(x.argmax())
