"""Pick the kernel for an operation by device and tensor type.

Today every operation runs on the reference path (dequantize once, torch on
the CPU); Numba and Triton kernels plug in here, behind the same signatures.

The weight products also report their inputs to the activation observer when one is
installed (`observe.py`; `kiln imatrix` uses it); without one that costs one check.
"""

from __future__ import annotations

import torch

from . import observe, reference
from .weights import QTensor

rms_norm = reference.rms_norm
rope_cos_sin = reference.rope_cos_sin
rope = reference.rope
attention = reference.attention
silu_gate = reference.silu_gate
gelu_gate = reference.gelu_gate


def linear(x: torch.Tensor, w: QTensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W^T (+ bias), W stored as ggml (in, out)."""
    if observe.OBSERVER is not None:
        observe.OBSERVER(w.name, x, None, 1)
    return reference.linear(x, w, bias)


def expert_linear(x: torch.Tensor, w: QTensor, expert: int) -> torch.Tensor:
    """x @ W_e^T for expert `expert` of a 3D expert tensor; x holds the tokens routed to it."""
    if observe.OBSERVER is not None:
        observe.OBSERVER(w.name, x, expert, w.shape[2])
    return reference.expert_linear(x, w, expert)


def expert_gate_up(
    x: torch.Tensor, gate: QTensor, up: QTensor, expert: int, fused: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate and up products of one expert (one product with [gate_e; up_e] when fused)."""
    if observe.OBSERVER is not None:
        # fused (-fmoe), ik_llama.cpp's one op is named after the up tensor; quantizing
        # ffn_gate_exps then takes ffn_up_exps' data (the same input)
        if not fused:
            observe.OBSERVER(gate.name, x, expert, gate.shape[2])
        observe.OBSERVER(up.name, x, expert, up.shape[2])
    return reference.expert_gate_up(x, gate, up, expert, fused)


def per_head_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [n, h, d] times one matrix per head, w [h, out, d] -> [n, h, out]."""
    if observe.OBSERVER is not None:
        name = observe.tensor_name(w)
        if name is not None:
            observe.OBSERVER(name, x, None, w.shape[0])
    return reference.per_head_linear(x, w)
