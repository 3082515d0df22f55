"""Llama (Llama 2/3, SmolLM2, Mistral-style): pre-norm blocks, GQA attention with rope, SwiGLU.

    h   = x + Attn(RMSNorm(x))
    out = h + Down(SiLU(Gate(RMSNorm(h))) * Up(RMSNorm(h)))

GGUF llama files store q/k permuted for ggml's adjacent-pair ("norm") rope.
"""

from __future__ import annotations

from ..layers import Attention, CausalLM, GatedFFN, PreNormBlock, RopeConfig, vector


class LlamaBlock(PreNormBlock):
    def __init__(self, model: CausalLM, tensors, layer: int):
        hp, p = model.hp, f"blk.{layer}"
        self.eps = hp.norm_eps
        self.attn_norm = vector(tensors.get(f"{p}.attn_norm.weight"))
        self.attn = Attention(
            tensors,
            p,
            layer,
            hp,
            RopeConfig.from_hparams(hp, neox=model.rope_neox),
            max_kq_bytes=model.settings.attn_max_bytes,
        )
        self.ffn_norm = vector(tensors.get(f"{p}.ffn_norm.weight"))
        self.ffn = GatedFFN(tensors, p)



class Llama(CausalLM):
    rope_neox = False

    def make_block(self, tensors, layer):
        return LlamaBlock(self, tensors, layer)
