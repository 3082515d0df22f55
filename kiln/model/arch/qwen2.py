"""Qwen2 / Qwen2.5: the Llama block with q/k/v biases and NeoX-style (half-split) rope."""

from __future__ import annotations

from .llama import Llama


class Qwen2(Llama):
    rope_neox = True  # the biases are picked up by Attention when the file has them
