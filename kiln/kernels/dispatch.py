"""Pick the kernel for an operation by device and tensor type.

Today every operation runs on the reference path (dequantize once, torch on
the CPU); Numba and Triton kernels plug in here, behind the same signatures.
"""

from __future__ import annotations

from . import reference

linear = reference.linear
expert_linear = reference.expert_linear
expert_gate_up = reference.expert_gate_up
per_head_linear = reference.per_head_linear
rms_norm = reference.rms_norm
rope_cos_sin = reference.rope_cos_sin
rope = reference.rope
attention = reference.attention
silu_gate = reference.silu_gate
gelu_gate = reference.gelu_gate
