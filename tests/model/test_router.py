"""The MoE router's selection rules on hand-made scores: selection bias only for choosing,
group limits (V3: top-2 sum per group; V2: best per group), weight normalization and scale,
and -ser (ik_llama.cpp's argsort_thresh: beyond the first K experts, drop those scoring
below T x the best)."""

from __future__ import annotations

import numpy as np
import torch

from kiln.kernels.weights import QTensor
from kiln.model.hparams import HParams
from kiln.model.moe import GATING_SIGMOID, GATING_SOFTMAX, Router
from kiln.model.settings import ComputeSettings


class _Tensors:
    def __init__(self, router: np.ndarray, bias: np.ndarray | None):
        self.t = {"blk.1.ffn_gate_inp.weight": QTensor.from_float("blk.1.ffn_gate_inp.weight", torch.tensor(router))}
        if bias is not None:
            self.t["blk.1.exp_probs_b.bias"] = QTensor.from_float("blk.1.exp_probs_b.bias", torch.tensor(bias))

    def get(self, name, required=True):
        return self.t.get(name)


def _router(logits_per_expert, k, gating, bias=None, groups=(0, 0), norm=False, scale=0.0, ser=(-1, 0.0)):
    n_expert = len(logits_per_expert)
    hp = HParams("deepseek2", 1, 1, [1], [1], [1], 1, 1, 1, 1, 1, 1e-6)
    hp.n_expert, hp.n_expert_used = n_expert, k
    hp.n_expert_groups, hp.n_group_used = groups
    hp.expert_weights_norm, hp.expert_weights_scale = norm, scale
    # x = [1] and router row e = logit e: the router's logits are the given numbers
    w = np.asarray(logits_per_expert, np.float32)[:, None]
    settings = ComputeSettings(ser_min_experts=ser[0], ser_threshold=ser[1])
    r = Router(_Tensors(w, None if bias is None else np.asarray(bias, np.float32)), "blk.1", hp, settings, gating)
    return r(torch.ones(1, 1))


def test_bias_chooses_but_does_not_weigh():
    logits = [2.0, 1.0, 0.0, -1.0]
    ids, w = _router(logits, 2, GATING_SIGMOID, bias=[0, 0, 5, 0])
    assert ids.tolist() == [[2, 0]]
    expected = torch.sigmoid(torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(w[0], expected)


def test_groups_v3_top2_sum_and_v2_best():
    # groups of 2: {0,1} {2,3} {4,5}; V3 sums the top-2, V2 takes the best
    logits = [3.0, -3.0, 2.0, 2.0, 0.0, 0.0]
    ids, _ = _router(logits, 2, GATING_SIGMOID, groups=(3, 1))
    assert sorted(ids[0].tolist()) == [2, 3]  # group {2,3} has the best top-2 sum
    ids, _ = _router(logits, 2, GATING_SOFTMAX, groups=(3, 1))
    assert ids[0].tolist() == [0, 1]  # group {0,1} has the best single score


def test_norm_and_scale():
    ids, w = _router([1.0, 0.5, 0.0], 2, GATING_SOFTMAX, norm=True, scale=2.5)
    p = torch.softmax(torch.tensor([1.0, 0.5, 0.0]), 0)[:2]
    torch.testing.assert_close(w[0], p / p.sum() * 2.5)


def test_smart_expert_reduction():
    logits = [4.0, 3.9, 0.0, -2.0]
    ids, w = _router(logits, 3, GATING_SOFTMAX, ser=(1, 0.5))
    # softmax: expert 1 is about 0.9 x the best (kept), expert 2 far below 0.5 x (dropped)
    assert ids.tolist() == [[0, 1, -1]]
    ids_all, w_all = _router(logits, 3, GATING_SOFTMAX)
    assert ids_all.tolist() == [[0, 1, 2]]
    torch.testing.assert_close(w, w_all)  # the kept experts keep their weights
