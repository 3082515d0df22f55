"""Mixture-of-experts feed-forward: the router (softmax or sigmoid gating, DeepSeek's
selection bias, group-limited top-k, weight normalization and scale, smart expert
reduction) and the routed experts, plus the shared expert some models add.

    probs    = softmax(logits) | sigmoid(logits)          logits = x @ ffn_gate_inp
    chosen   = top-k of (probs + exp_probs_b), within the best groups when grouped
    weights  = probs[chosen] (/ their sum when expert_weights_norm) * expert_weights_scale
    out      = sum over chosen e of weights_e * down_e(silu(gate_e(x)) * up_e(x))  (+ shared(x))

The equations are ik_llama.cpp's `llm_build_moe_ffn` (src/llama-build-context.cpp),
except the group limit: ik_llama.cpp ignores `expert_group_count` for these models;
kiln applies it as DeepSeek defines it (only the `expert_group_used_count` best groups
compete; a group's score is the sum of its two best biased scores with sigmoid gating,
V3's noaux_tc, or its best score with softmax gating, V2's group_limited_greedy: the
GGUF file does not name the method, the gating function tells them apart), so that
kiln computes the model the checkpoint describes.
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from ..kernels import dispatch
from ..kernels.weights import QTensor
from .hparams import HParams
from .layers import GatedFFN, TensorSource, vector
from .settings import ComputeSettings

GATING_SOFTMAX, GATING_SIGMOID = 1, 2


class Router:
    """Token -> (expert ids [n, k], weights [n, k]); a dropped expert (-ser) has id -1."""

    def __init__(
        self,
        tensors: TensorSource,
        prefix: str,
        hp: HParams,
        settings: ComputeSettings,
        gating: int,
        norm_weights: bool | None = None,
    ):
        self.w = tensors.get(f"{prefix}.ffn_gate_inp.weight")
        self.bias = vector(tensors.get(f"{prefix}.exp_probs_b.bias", required=False))
        self.n_expert, self.k = hp.n_expert, hp.n_expert_used
        if gating not in (GATING_SOFTMAX, GATING_SIGMOID):
            raise ModelError(f"{hp.arch}: expert_gating_func {gating} is not one kiln knows (1 softmax, 2 sigmoid)")
        self.gating = gating
        self.norm = hp.expert_weights_norm if norm_weights is None else norm_weights
        self.scale = hp.expert_weights_scale
        self.n_groups, self.n_groups_used = hp.n_expert_groups, hp.n_group_used
        self.settings = settings

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = dispatch.linear(x, self.w).float()
        probs = torch.softmax(logits, dim=-1) if self.gating == GATING_SOFTMAX else torch.sigmoid(logits)
        select = probs + self.bias if self.bias is not None else probs
        if 1 < self.n_groups and 0 < self.n_groups_used < self.n_groups:
            select = self._limit_to_best_groups(select)
        top, ids = torch.topk(select, self.k, dim=-1)  # sorted, best first
        weights = probs.gather(1, ids)
        if self.norm:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if self.scale and abs(self.scale - 1.0) > 1e-5:
            weights = weights * self.scale
        s = self.settings
        if s.ser_active and s.ser_min_experts < self.k:
            # ik_llama.cpp's -ser (argsort_thresh): beyond the first K, an expert whose score is
            # below T x the best one is skipped; the others keep their weights
            drop = top < top[:, :1] * s.ser_threshold
            drop[:, : s.ser_min_experts] = False
            ids = ids.masked_fill(drop, -1)
        return ids, weights

    def _limit_to_best_groups(self, select: torch.Tensor) -> torch.Tensor:
        n = select.shape[0]
        grouped = select.view(n, self.n_groups, -1)
        if self.gating == GATING_SOFTMAX:  # DeepSeek V2's group_limited_greedy: a group's best score
            group_scores = grouped.max(dim=-1).values
        else:  # DeepSeek V3's noaux_tc: the sum of a group's two best biased scores
            group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)
        best = group_scores.topk(self.n_groups_used, dim=-1).indices
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best, True)
        return grouped.masked_fill(~keep[:, :, None], 0.0).view(n, -1)


class RoutedExperts:
    """The expert tensors ffn_{gate,up,down}_exps ([n_expert, ...] 3D weights)."""

    def __init__(self, tensors: TensorSource, prefix: str, settings: ComputeSettings, n_expert: int):
        self.gate = tensors.get(f"{prefix}.ffn_gate_exps.weight")
        self.up = tensors.get(f"{prefix}.ffn_up_exps.weight")
        self.down = tensors.get(f"{prefix}.ffn_down_exps.weight")
        for t in (self.gate, self.up, self.down):
            _check_experts(t, n_expert)
        # -fmoe: one product with [gate; up] per expert (ik_llama.cpp fuses only equal types)
        self.fused = settings.fused_moe and self.gate.type_id == self.up.type_id

    def __call__(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if dispatch.selected_experts_fast(ids.numel(), x, self.gate, self.up, self.down):
            return self._few_tokens(x, ids, weights)
        out = torch.zeros_like(x)
        k = ids.shape[1]
        flat_ids = ids.reshape(-1)
        token_of = torch.arange(x.shape[0]).repeat_interleave(k)
        order = torch.argsort(flat_ids, stable=True)
        experts, counts = torch.unique_consecutive(flat_ids[order], return_counts=True)
        start = 0
        for e, c in zip(experts.tolist(), counts.tolist(), strict=True):
            rows = order[start : start + c]
            start += c
            if e < 0:  # dropped by -ser
                continue
            tokens = token_of[rows]
            xe = x[tokens]
            g, u = dispatch.expert_gate_up(xe, self.gate, self.up, e, self.fused)
            y = dispatch.expert_linear(dispatch.silu_gate(g, u), self.down, e)
            out.index_add_(0, tokens, y * weights.reshape(-1)[rows, None])
        return out


    def _few_tokens(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Generation: every (token, expert) pair in one call per tensor, no grouping."""
        flat = ids.reshape(-1)
        keep = flat >= 0  # -ser drops have id -1
        token_of = torch.arange(x.shape[0]).repeat_interleave(ids.shape[1])[keep]
        experts = flat[keep]
        xs = x[token_of]
        h = dispatch.silu_gate(dispatch.selected_experts(xs, self.gate, experts),
                               dispatch.selected_experts(xs, self.up, experts))
        y = dispatch.selected_experts(h, self.down, experts) * weights.reshape(-1)[keep, None]
        return torch.zeros_like(x).index_add_(0, token_of, y)


class MoEFFN:
    """Router + routed experts + the optional shared expert (ffn_*_shexp)."""

    def __init__(
        self,
        tensors: TensorSource,
        prefix: str,
        hp: HParams,
        settings: ComputeSettings,
        gating: int,
        norm_weights: bool | None = None,
    ):
        for name in ("n_expert", "n_expert_used"):
            if getattr(hp, name) <= 0:
                key = {"n_expert": "expert_count", "n_expert_used": "expert_used_count"}[name]
                raise ModelError(f"{hp.arch}: metadata key {hp.arch}.{key} is missing or 0; the file is incomplete")
        self.router = Router(tensors, prefix, hp, settings, gating, norm_weights)
        self.experts = RoutedExperts(tensors, prefix, settings, hp.n_expert)
        shared = tensors.get(f"{prefix}.ffn_up_shexp.weight", required=False)
        self.shared = GatedFFN(tensors, prefix, suffix="_shexp") if shared is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights = self.router(x)
        out = self.experts(x, ids, weights)
        if self.shared is not None:
            out = out + self.shared(x)
        return out


def _check_experts(t: QTensor, n_expert: int) -> None:
    if len(t.shape) != 3 or t.shape[2] != n_expert:
        raise ModelError(
            f"tensor {t.name} has shape {list(t.shape)}; expected 3 dimensions, the last the {n_expert} experts "
            "of expert_count: the file is inconsistent, convert it again"
        )
