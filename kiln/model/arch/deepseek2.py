"""DeepSeek V2/V3/R1, Kimi-K2, Moonlight (GGUF arch `deepseek2`): multi-head latent attention
(q LoRA optional), leading dense blocks, then MoE blocks with shared experts.

    h   = x + MLA(RMSNorm(x))                                  (kiln/model/mla.py)
    out = h + FFN(RMSNorm(h))      FFN = SwiGLU for the first leading_dense_block_count
                                         blocks, routed experts + shared expert after

Rope is ggml's adjacent-pair mode on the rope dims only; YaRN as DeepSeek scales it
(softmax scale mscale^2/sqrt(d)). Whether q goes through a LoRA is read from the file
(attention.q_lora_rank), not guessed from the layer count as ik_llama.cpp does.
"""

from __future__ import annotations

from ..layers import CausalLM, GatedFFN, PreNormBlock, vector
from ..mla import MLAAttention, MLAShape, prepare_mla_tensors
from ..moe import GATING_SOFTMAX, MoEFFN


class Deepseek2Block(PreNormBlock):
    def __init__(self, model: Deepseek2, tensors, layer: int):
        hp, p = model.hp, f"blk.{layer}"
        self.eps = hp.norm_eps
        self.attn_norm = vector(tensors.get(f"{p}.attn_norm.weight"))
        self.attn = MLAAttention(tensors, layer, hp, model.mla_tensors[layer], model.settings)
        self.ffn_norm = vector(tensors.get(f"{p}.ffn_norm.weight"))
        if layer < hp.n_layer_dense_lead:
            self.ffn = GatedFFN(tensors, p)
        else:
            # DeepSeek 2/2.5 files may lack the gating key: they use softmax (ik_llama.cpp's rule)
            self.ffn = MoEFFN(tensors, p, hp, model.settings, hp.expert_gating_func or GATING_SOFTMAX)



class Deepseek2(CausalLM):
    def prepare(self, tensors):
        self.mla_shape = MLAShape.from_hparams(self.hp)
        self.mla_tensors = prepare_mla_tensors(tensors, self.hp, self.settings.mla)

    def make_block(self, tensors, layer):
        return Deepseek2Block(self, tensors, layer)

    def kv_row_sizes(self, layer: int) -> tuple[int, int]:
        s = self.mla_shape
        if self.settings.mla == 0:
            return s.n_head * (s.qk_nope + s.qk_rope), s.n_head * s.v_head
        return s.latent, 0
