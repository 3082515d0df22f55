"""Pick the kernel for an operation by device and tensor type.

Weight products on the CPU run the Numba kernels of `cpu/` when the weight's type has a
block decoder there, directly or after unpacking a row-interleaved layout
(`cpu.linear.weight_plan`); other types, and every product while
`use_reference(True)` is in force (or KILN_KERNELS=reference in the environment), take
the reference path (dequantize once, torch). Triton kernels plug in here the same way.

The weight products also report their inputs to the activation observer when one is
installed (`observe.py`; `kiln imatrix` uses it); without one that costs one check.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from . import observe, reference
from .cpu import attention as cpu_attention
from .cpu import block_step as cpu_block_step
from .cpu import linear as cpu_linear
from .cpu import norm as cpu_norm
from .cpu import rope as cpu_rope
from .weights import QTensor

_reference_only = os.environ.get("KILN_KERNELS", "").lower() == "reference"


def use_reference(flag: bool) -> None:
    """Route every product through `reference.py` (True) or the fast kernels (False)."""
    global _reference_only
    _reference_only = flag


def fast_cpu(x: torch.Tensor, w: QTensor) -> bool:
    """Whether the product x @ W^T takes a Numba kernel."""
    return not _reference_only and x.device.type == "cpu" and x.dtype == torch.float32 and cpu_weight(w) is not None


def cpu_weight(w: QTensor) -> cpu_linear.CpuWeight | None:
    """The CPU kernels' view of a weight (None when its type has no kernel), made once:
    row-interleaved types (_R4, _R8) are unpacked to their plain layout, which is the one
    the kernels read fastest (lossless; the unpacked bytes replace the mapped ones)."""
    plan = w._dense.get("cpu", 0)
    if plan == 0:
        plan = w._dense["cpu"] = cpu_linear.weight_plan(w.raw, w.type_id, w.shape)
    return plan


_NO_WEIGHT = torch.ones(1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMS norm over the last dimension (reference.rms_norm); one Numba pass on the CPU."""
    if _reference_only or x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[-1] == 0:
        return reference.rms_norm(x, weight, eps)
    rows = x.reshape(-1, x.shape[-1])
    out = torch.empty(rows.shape, dtype=torch.float32)
    w = _NO_WEIGHT if weight is None else weight.float()
    cpu_norm.rms_norm_into(rows.numpy(), w.numpy(), weight is not None, float(eps), out.numpy())
    return out.view(x.shape)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, neox: bool) -> torch.Tensor:
    """Rotary embedding (reference.rope); one Numba pass for float32 tensors on the CPU."""
    if _reference_only or x.device.type != "cpu" or x.dtype != torch.float32 or cos.dtype != torch.float32:
        return reference.rope(x, cos, sin, neox)
    out = torch.empty(x.shape, dtype=torch.float32)
    cpu_rope.rope_into(x.numpy(), cos.contiguous().numpy(), sin.contiguous().numpy(), neox, out.numpy())
    return out


ATTENTION_MAX_QUERIES = 8  # more query rows (prompt processing) take torch's batched products
_CACHE_KERNELS = {torch.float16: "attend_f16", torch.bfloat16: "attend_bf16"}


def attention(q, k, v, q_pos, k_pos, scale, window=0, softcap=0.0, max_kq_bytes=0) -> torch.Tensor:
    """Causal attention (reference.attention); a few queries over an f16 or bf16 cache on the
    CPU take the flash-style Numba kernel (no score matrix, so -amb has nothing to bound).
    V may be a column range of K's rows (MLA's latent cache: values are the latent part of
    each key row)."""
    kernel = _CACHE_KERNELS.get(k.dtype)
    v_col = None if v is None else _value_columns(k, v)
    if (
        _reference_only
        or kernel is None
        or q.device.type != "cpu"
        or q.shape[0] > ATTENTION_MAX_QUERIES
        or v_col is None
        or q.shape[-1] % 8
        or v.shape[-1] % 8
        or not k.is_contiguous()
    ):
        return reference.attention(q, k, v, q_pos, k_pos, scale, window, softcap, max_kq_bytes)
    n_k = k.shape[0]
    k_bits = k.view(torch.int16).reshape(n_k, -1).numpy()
    out = torch.empty((q.shape[0], q.shape[1], v.shape[-1]), dtype=torch.float32)
    getattr(cpu_attention, kernel)(
        q.float().contiguous().numpy(),
        k_bits,
        k_bits if v_col > 0 else v.view(torch.int16).reshape(n_k, -1).numpy(),
        v_col,
        q_pos.to(torch.int64).numpy(),
        k_pos.to(torch.int64).numpy(),
        float(scale),
        int(window),
        float(softcap),
        out.numpy(),
    )
    return out


def _value_columns(k: torch.Tensor, v: torch.Tensor) -> int | None:
    """0 when v is a contiguous tensor of k's type; the column where v starts in k's rows
    when v is a column range of a contiguous k (same rows, one head); else None."""
    if v.dtype != k.dtype:
        return None
    if (
        k.is_contiguous()
        and v.dim() == 3
        and k.dim() == 3
        and v.shape[:2] == k.shape[:2] == (k.shape[0], 1)
        and v.stride() == k.stride()
        and v.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()
    ):
        col = (v.data_ptr() - k.data_ptr()) // k.element_size()
        if 0 < col and col + v.shape[-1] <= k.shape[-1]:
            return int(col)
    return 0 if v.is_contiguous() else None


def _fast_product(x: torch.Tensor, w: QTensor, expert: int | None = None) -> torch.Tensor:
    plan = cpu_weight(w)
    m = plan.matrix
    y = cpu_linear.product(x.reshape(-1, m.K), plan.expert_bytes(expert), m)
    return y.reshape(*x.shape[:-1], m.n_out)

rope_cos_sin = reference.rope_cos_sin
silu_gate = reference.silu_gate
gelu_gate = reference.gelu_gate


def linear(x: torch.Tensor, w: QTensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W^T (+ bias), W stored as ggml (in, out)."""
    if observe.OBSERVER is not None:
        observe.OBSERVER(w.name, x, None, 1)
    if fast_cpu(x, w):
        y = _fast_product(x, w)
        return y if bias is None else y + bias
    return reference.linear(x, w, bias)


def expert_linear(x: torch.Tensor, w: QTensor, expert: int) -> torch.Tensor:
    """x @ W_e^T for expert `expert` of a 3D expert tensor; x holds the tokens routed to it."""
    if observe.OBSERVER is not None:
        observe.OBSERVER(w.name, x, expert, w.shape[2])
    if fast_cpu(x, w):
        return _fast_product(x, w, expert)
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
    if fast_cpu(x, gate) and fast_cpu(x, up):
        return _fast_product(x, gate, expert), _fast_product(x, up, expert)
    return reference.expert_gate_up(x, gate, up, expert, fused)


def embedding_rows(w: QTensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows `ids` of a 2D weight as float32 (an embedding lookup): a type with a CPU kernel
    decodes just those rows, unless a float copy already exists; others index that copy."""
    if not _reference_only and len(w.shape) == 2 and torch.float32 not in w._dense:
        plan = cpu_weight(w)
        if plan is not None:
            return cpu_linear.rows(plan.raw, plan.matrix, ids)
    return w.rows(ids)


SELECTED_EXPERTS_MAX = 64  # expert rows (token x expert pairs) computed one matrix row at a time


def selected_experts_fast(n_pairs: int, x: torch.Tensor, *weights: QTensor) -> bool:
    """Whether `selected_experts` runs the Numba kernel for n_pairs (token, expert) rows of x."""
    # an activation observer (kiln imatrix) sees experts grouped by expert: the other path
    return observe.OBSERVER is None and n_pairs <= SELECTED_EXPERTS_MAX and all(fast_cpu(x, w) for w in weights)


def selected_experts(x: torch.Tensor, w: QTensor, experts: torch.Tensor) -> torch.Tensor:
    """Row s of x [n_sel, K] times expert experts[s] of a 3D weight -> [n_sel, n_out]: the
    experts of a few tokens in one call (generation), every pair on its own activation row."""
    return cpu_linear.selected_product(x, cpu_weight(w), experts)


def per_head_product(x: torch.Tensor, w: QTensor, n_head: int) -> torch.Tensor:
    """x [n, h, K] times head h's matrix of w -> [n, h, out]; w is 2D and holds the heads'
    matrices one after another (h * out rows of K: MLA's attn_k_b and attn_v_b). A few
    tokens on the CPU take the expert kernel with one head per selection, reading the
    stored blocks; otherwise one float copy per weight (kept) and torch."""
    if observe.OBSERVER is not None:
        observe.OBSERVER(w.name, x, None, n_head)
    n, h, K = x.shape
    if n <= cpu_linear.GEMV_MAX_TOKENS and fast_cpu(x, w):
        sel = torch.arange(h).repeat(n)
        return cpu_linear.selected_product(x.reshape(n * h, K), cpu_weight(w), sel, n_matrices=h).view(n, h, -1)
    return reference.per_head_linear(x, w.dense().reshape(h, -1, K))


_STEP_CACHE_TYPES = (torch.float16, torch.bfloat16)
_key_positions = np.arange(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float32)
_NO_SCALES = np.empty((1, 1), dtype=np.int16)


def _cache_rows(t: torch.Tensor) -> np.ndarray:
    """A cache store as 2D rows: int8 (q8_0) as it is, 16-bit floats as their int16 bits."""
    t = t if t.dtype == torch.int8 else t.view(torch.int16)
    return t.reshape(t.shape[0], -1).numpy()


def block_step_plan(
    attn_norm: torch.Tensor,
    ffn_norm: torch.Tensor,
    eps: float,
    weights: list[QTensor],
    biases: list[torch.Tensor | None],
    q_norm: torch.Tensor | None,
    k_norm: torch.Tensor | None,
    n_head: int,
    n_kv: int,
    hd: int,
    hdv: int,
    neox: bool,
    scale: float,
    window: int,
    softcap: float,
) -> cpu_block_step.BlockWeights | None:
    """A pre-norm block (weights q, k, v, o, gate, up, down; SiLU gate) prepared for
    `blocks_step`, or None when some part has no CPU kernel or the shapes do not fit it."""
    plans = []
    for w in weights:
        plan = cpu_weight(w)
        if plan is None or plan.n_matrices != 1 or plan.matrix.floats:
            return None
        plans.append(plan)
    E, F = plans[0].matrix.K, plans[4].matrix.n_out
    shapes = [(E, n_head * hd), (E, n_kv * hd), (E, n_kv * hdv), (n_head * hdv, E), (E, F), (E, F), (F, E)]
    if [(p.matrix.K, p.matrix.n_out) for p in plans] != shapes or hd % 8 or hdv % 8 or n_head % n_kv:
        return None
    if any(b is not None for b in biases) and any(b is None for b in biases[:3]):
        return None

    def values(t):
        return _NO_VALUES if t is None else t.float().contiguous().numpy()

    return cpu_block_step.BlockWeights(
        values(attn_norm), values(ffn_norm), float(eps),
        np.array([p.matrix.decoder for p in plans], dtype=np.int64),
        tuple(p.raw for p in plans),
        np.array([p.matrix.row_bytes for p in plans], dtype=np.int64),
        np.array([p.matrix.n_out for p in plans], dtype=np.int64),
        tuple(values(b) for b in biases), values(q_norm), values(k_norm),
        n_head, n_kv, hd, hdv, bool(neox), int(window), float(scale), float(softcap),
    )  # fmt: skip


def block_steps_enabled(x: torch.Tensor) -> bool:
    """Whether `blocks_step` may run now for hidden states x (the fast path is on and no
    activation observer wants to see the products one by one)."""
    return not _reference_only and observe.OBSERVER is None and x.device.type == "cpu" and x.dtype == torch.float32


def block_step_cache_ok(rows: tuple, step: cpu_block_step.BlockWeights) -> bool:
    """Whether `blocks_step` can write and read these cache rows (k, v, slot, k scales,
    v scales): f16 or bf16, or q8_0 with heads of whole 32-value blocks; K and V alike."""
    k, v, _, k_scales, _ = rows
    if k.dtype != v.dtype:
        return False
    if k.dtype == torch.int8:
        return k_scales is not None and step.hd % 32 == 0 and step.hdv % 32 == 0
    return k.dtype in _STEP_CACHE_TYPES


def model_steps(blocks: list[cpu_block_step.BlockWeights]) -> cpu_block_step.ModelSteps:
    """A model's prepared blocks (`block_step_plan`), stacked for `blocks_step`."""
    return cpu_block_step.ModelSteps(blocks)


def blocks_step(
    steps: cpu_block_step.ModelSteps,
    x: torch.Tensor,
    ropes: list[tuple[torch.Tensor, torch.Tensor]],
    rows: list[tuple[torch.Tensor, torch.Tensor, int]],
) -> torch.Tensor:
    """Every block for one token in one call: x [1, E] becomes the last block's output in
    place. Layer l's key and value go to row `slot` (= the token's position) of its caches
    rows[l] = (k, v, slot, k scales, v scales: None unless q8_0), which it then attends to with rows 0..slot; ropes[l] = its
    (cos, sin). Returns each layer's output sum (the caller's NaN check)."""
    global _key_positions
    slot = rows[0][2]
    if _key_positions.size <= slot:
        _key_positions = np.arange(max(2 * _key_positions.size, slot + 1, 256), dtype=np.int64)
    cpu_linear.use_threads("generation")
    k_caches = tuple(_cache_rows(r[0]) for r in rows)
    v_caches = tuple(_cache_rows(r[1]) for r in rows)
    k_scales = tuple(_NO_SCALES if r[3] is None else r[3].view(torch.int16).numpy() for r in rows)
    v_scales = tuple(_NO_SCALES if r[4] is None else r[4].view(torch.int16).numpy() for r in rows)
    cpu_block_step.blocks_step(
        x.view(-1).numpy(), steps.attn_norms, steps.ffn_norms, steps.eps, steps.decs, steps.data, steps.row_bytes,
        steps.n_out, *steps.biases, steps.q_norm, steps.k_norm, steps.shapes,
        tuple(c.reshape(-1).numpy() for c, _ in ropes), tuple(s.reshape(-1).numpy() for _, s in ropes),
        steps.flags, steps.fparams, k_caches, v_caches, k_scales, v_scales, rows[0][0].dtype == torch.bfloat16,
        slot, _key_positions,
        *steps.scratch, steps.sums, cpu_linear.work_chunks(),
    )  # fmt: skip
    return torch.from_numpy(steps.sums)
