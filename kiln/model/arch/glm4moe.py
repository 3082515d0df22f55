"""GLM-4.5 / 4.6 / 4.7 (GGUF arch `glm4moe`): attention with q/k/v biases, optional per-head
q/k norms and NeoX rope on part of each head (rope.dimension_count); leading dense blocks,
then MoE blocks: sigmoid gating with the selection bias exp_probs_b, normalized and
scaled top-k weights, one shared expert. The trailing nextn (multi-token prediction)
blocks are not run."""

from __future__ import annotations

from ..layers import Attention, CausalLM, GatedFFN, PreNormBlock, RopeConfig, vector
from ..moe import GATING_SIGMOID, MoEFFN


class Glm4MoeBlock(PreNormBlock):
    def __init__(self, model: CausalLM, tensors, layer: int):
        hp, p = model.hp, f"blk.{layer}"
        self.eps = hp.norm_eps
        self.attn_norm = vector(tensors.get(f"{p}.attn_norm.weight"))
        rope = RopeConfig.from_hparams(hp, neox=True)
        self.attn = Attention(tensors, p, layer, hp, rope, max_kq_bytes=model.settings.attn_max_bytes)
        self.ffn_norm = vector(tensors.get(f"{p}.post_attention_norm.weight", required=False))
        if self.ffn_norm is None:
            self.ffn_norm = vector(tensors.get(f"{p}.ffn_norm.weight"))
        if layer < hp.n_layer_dense_lead:
            self.ffn = GatedFFN(tensors, p)
        else:
            self.ffn = MoEFFN(tensors, p, hp, model.settings, hp.expert_gating_func or GATING_SIGMOID)



class Glm4Moe(CausalLM):
    def make_block(self, tensors, layer):
        return Glm4MoeBlock(self, tensors, layer)
