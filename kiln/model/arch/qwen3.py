"""Qwen3 (dense): the Llama block with per-head RMSNorm on q and k before rope, NeoX rope, no biases."""

from __future__ import annotations

from .llama import Llama


class Qwen3(Llama):
    rope_neox = True  # attn_q_norm / attn_k_norm are picked up by Attention
