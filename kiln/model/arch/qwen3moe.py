"""Qwen3 MoE (Qwen3-30B-A3B, Qwen3-235B-A22B, Qwen3-Coder-480B): the Qwen3 block (q/k norms,
NeoX rope) with a routed-expert FFN: softmax gating, top-k weights renormalized (ik_llama.cpp
always normalizes them for this architecture), no shared expert."""

from __future__ import annotations

from ..layers import Attention, CausalLM, PreNormBlock, RopeConfig, vector
from ..moe import GATING_SOFTMAX, MoEFFN


class Qwen3MoeBlock(PreNormBlock):
    def __init__(self, model: CausalLM, tensors, layer: int):
        hp, p = model.hp, f"blk.{layer}"
        self.eps = hp.norm_eps
        self.attn_norm = vector(tensors.get(f"{p}.attn_norm.weight"))
        rope = RopeConfig.from_hparams(hp, neox=True)
        self.attn = Attention(tensors, p, layer, hp, rope, max_kq_bytes=model.settings.attn_max_bytes)
        self.ffn_norm = vector(tensors.get(f"{p}.ffn_norm.weight"))
        self.ffn = MoEFFN(tensors, p, hp, model.settings, GATING_SOFTMAX, norm_weights=True)



class Qwen3Moe(CausalLM):
    def make_block(self, tensors, layer):
        return Qwen3MoeBlock(self, tensors, layer)
