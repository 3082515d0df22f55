"""Gemma 3 (text): scaled embeddings, sandwich norms, per-head q/k norms, GELU-gated FFN,
and 5 sliding-window layers for every global one.

    x0  = Embed(t) * sqrt(n_embd)
    h   = x + PostAttnNorm(Attn(AttnNorm(x)))        window n_swa, rope base 10000 on local layers
    out = h + PostFFNNorm(Down(GELU(Gate(FFNNorm(h))) * Up(FFNNorm(h))))

The norm weights in GGUF already include Gemma's "+1". As in llama.cpp, every 6th
layer is global and uses the file's rope base and scaling; the others use base
10000 without scaling; q is scaled by 1/sqrt(head_dim) (1/sqrt(n_embd/n_head) for
the 62-layer 27B model).
"""

from __future__ import annotations

import math

from ...kernels import dispatch
from ..layers import Attention, CausalLM, GatedFFN, RopeConfig, vector

SLIDING_WINDOW_PATTERN = 6
LOCAL_ROPE_BASE = 10000.0


class Gemma3Block:
    def __init__(self, model: CausalLM, tensors, layer: int):
        hp, p = model.hp, f"blk.{layer}"
        self.eps = hp.norm_eps
        sliding = (layer + 1) % SLIDING_WINDOW_PATTERN != 0
        if sliding:
            rope = RopeConfig.from_hparams(hp, neox=True, freq_base=LOCAL_ROPE_BASE, freq_scale=1.0)
        else:
            rope = RopeConfig.from_hparams(hp, neox=True)
        if hp.n_layer == 62:
            scale = 1.0 / math.sqrt(hp.n_embd / hp.n_head[0])
        else:
            scale = 1.0 / math.sqrt(hp.head_dim_k)
        window = hp.sliding_window if sliding else 0
        self.attn_norm = vector(tensors.get(f"{p}.attn_norm.weight"))
        self.attn = Attention(
            tensors, p, layer, hp, rope, scale=scale, window=window, max_kq_bytes=model.settings.attn_max_bytes
        )
        self.attn_post_norm = vector(tensors.get(f"{p}.post_attention_norm.weight"))
        self.ffn_norm = vector(tensors.get(f"{p}.ffn_norm.weight"))
        self.ffn = GatedFFN(tensors, p, act=dispatch.gelu_gate)
        self.ffn_post_norm = vector(tensors.get(f"{p}.post_ffw_norm.weight"))

    def __call__(self, x, positions, cache, rope):
        norm = dispatch.rms_norm
        a = self.attn(norm(x, self.attn_norm, self.eps), positions, cache, rope)
        h = x + norm(a, self.attn_post_norm, self.eps)
        f = self.ffn(norm(h, self.ffn_norm, self.eps))
        return h + norm(f, self.ffn_post_norm, self.eps)


class Gemma3(CausalLM):
    def make_block(self, tensors, layer):
        return Gemma3Block(self, tensors, layer)

    def embed(self, tokens):
        return super().embed(tokens) * math.sqrt(self.hp.n_embd)
