"""Reference implementations in plain torch: the ground truth for every fast kernel.

Weights are dequantized to float32 (`QTensor.dense`) and multiplied with torch;
norms, rope (ggml's formulas, YaRN included) and attention are written out
directly. Fast kernels in `cpu/` and `cuda/` must agree with these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .weights import QTensor


def linear(x: torch.Tensor, w: QTensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W^T (+ bias), W stored as ggml (in, out)."""
    y = x @ w.dense().T
    if bias is not None:
        y = y + bias
    return y


def expert_linear(x: torch.Tensor, w: QTensor, expert: int) -> torch.Tensor:
    """x @ W_e^T for expert `expert` of a 3D expert tensor (ggml (in, out, n_expert))."""
    return x @ w.matrix(expert).T


def expert_gate_up(
    x: torch.Tensor, gate: QTensor, up: QTensor, expert: int, fused: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate and up products of one expert; fused (-fmoe): one product with [gate_e; up_e],
    kept per expert after first use."""
    if not fused:
        return expert_linear(x, gate, expert), expert_linear(x, up, expert)
    key = ("gate_up", id(up), expert)
    m = gate._dense.get(key)
    if m is None:
        m = gate._dense[key] = torch.cat([gate.matrix(expert), up.matrix(expert)], dim=0)
    return (x @ m.T).chunk(2, dim=-1)


def per_head_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [n, h, d] times one matrix per head, w [h, out, d] -> [n, h, out]."""
    return torch.einsum("nhd,hod->nho", x, w)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """x * rsqrt(mean(x^2) + eps) * weight over the last dimension (one fused torch op)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def yarn_corr_dims(n_dims: int, n_ctx_orig: int, freq_base: float, beta_fast: float, beta_slow: float):
    """The dimension range over which YaRN blends interpolation and extrapolation (ggml's formula)."""

    def corr_dim(n_rot: float) -> float:
        return n_dims * math.log(n_ctx_orig / (n_rot * 2 * math.pi)) / (2 * math.log(freq_base))

    start = math.floor(corr_dim(beta_fast))
    end = math.ceil(corr_dim(beta_slow))
    return max(0, start), min(n_dims - 1, end)


def rope_cos_sin(
    positions: torch.Tensor,
    n_dims: int,
    freq_base: float,
    freq_scale: float = 1.0,
    freq_factors: torch.Tensor | None = None,
    ext_factor: float = 0.0,
    attn_factor: float = 1.0,
    n_ctx_orig: int = 0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [n_pos, n_dims/2] as ggml's rope computes them (YaRN and freq factors included)."""
    i0 = torch.arange(0, n_dims, 2, dtype=torch.float64)
    theta_extrap = positions.to(torch.float64)[:, None] * freq_base ** (-i0 / n_dims)[None, :]
    if freq_factors is not None:
        theta_extrap = theta_extrap / freq_factors.to(torch.float64)[None, : n_dims // 2]
    theta_interp = freq_scale * theta_extrap
    mscale = attn_factor
    if ext_factor != 0.0:
        low, high = yarn_corr_dims(n_dims, n_ctx_orig, freq_base, beta_fast, beta_slow)
        y = (i0 / 2 - low) / max(0.001, high - low)
        ramp_mix = (1 - y.clamp(0, 1)) * ext_factor
        theta = theta_interp * (1 - ramp_mix) + theta_extrap * ramp_mix
        mscale *= 1.0 + 0.1 * math.log(1.0 / freq_scale)
    else:
        theta = theta_interp
    return (torch.cos(theta) * mscale).float(), (torch.sin(theta) * mscale).float()


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, neox: bool) -> torch.Tensor:
    """Rotate x [n_tok, n_head, head_dim] over its first 2*cos.shape[-1] dims.

    neox=False pairs adjacent values (x0,x1), (x2,x3)... (ggml's "norm" mode);
    neox=True pairs x[i] with x[i + n_dims/2].
    """
    n_rot = 2 * cos.shape[-1]
    xr, rest = x[..., :n_rot], x[..., n_rot:]
    c, s = cos[:, None, :], sin[:, None, :]
    if neox:
        a, b = xr[..., : n_rot // 2], xr[..., n_rot // 2 :]
        out = torch.cat([a * c - b * s, a * s + b * c], dim=-1)
    else:
        a, b = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)
    return torch.cat([out, rest], dim=-1) if rest.numel() else out


class AttentionStats:
    """The largest K*Q score buffer attention has made since `reset()` (what -amb bounds)."""

    def __init__(self) -> None:
        self.peak_kq_bytes = 0

    def reset(self) -> None:
        self.peak_kq_bytes = 0

    def record(self, nbytes: int) -> None:
        self.peak_kq_bytes = max(self.peak_kq_bytes, nbytes)


ATTENTION_STATS = AttentionStats()


def heads_per_chunk(n_head: int, n_q: int, n_k: int, max_kq_bytes: int) -> int:
    """How many heads fit in one K*Q chunk of at most `max_kq_bytes` (f32 scores; at least
    one head; all of them when there is no limit)."""
    if max_kq_bytes <= 0:
        return n_head
    per_head = n_q * n_k * 4
    return max(1, min(n_head, max_kq_bytes // max(1, per_head)))


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    scale: float,
    window: int = 0,
    softcap: float = 0.0,
    max_kq_bytes: int = 0,
) -> torch.Tensor:
    """Causal multi-head attention with grouped KV heads.

    q [n_q, n_head, d], k/v [n_k, n_head_kv, d(v)], positions of each row;
    key j is visible to query i when k_pos[j] <= q_pos[i] and, with a sliding
    window, q_pos[i] - k_pos[j] < window. Returns [n_q, n_head, dv].
    The heads are processed in chunks whose f32 score matrix K*Q stays within
    `max_kq_bytes` (0: all heads at once), as ik_llama.cpp's -amb does.
    """
    n_q, n_head = q.shape[0], q.shape[1]
    n_k, n_head_kv = k.shape[0], k.shape[1]
    group = n_head // n_head_kv
    visible = k_pos[None, :] <= q_pos[:, None]
    if window > 0:
        visible &= (q_pos[:, None] - k_pos[None, :]) < window
    mask = torch.zeros(visible.shape, dtype=torch.float32).masked_fill_(~visible, float("-inf"))
    qh = q.transpose(0, 1).float()  # [h, n_q, d]
    kh = k.transpose(0, 1).float()  # [h_kv, n_k, d]
    vh = v.transpose(0, 1).float()
    step = heads_per_chunk(n_head, n_q, n_k, max_kq_bytes)
    if step > group:
        step -= step % group  # whole groups of heads that share a KV head
    out = torch.empty((n_head, n_q, v.shape[-1]), dtype=torch.float32)
    for h0 in range(0, n_head, step):
        h1 = min(n_head, h0 + step)
        g0, g1 = h0 // group, (h1 - 1) // group + 1
        # the query heads of one KV head are stacked as rows, so K and V are never copied per head
        qc = qh[h0:h1].reshape(g1 - g0, -1, qh.shape[-1])
        scores = torch.bmm(qc, kh[g0:g1].transpose(1, 2)).view(h1 - h0, n_q, n_k)
        ATTENTION_STATS.record(scores.numel() * scores.element_size())
        scores *= scale
        if softcap:
            scores = softcap * torch.tanh(scores / softcap)
        scores += mask
        probs = torch.softmax(scores, dim=-1)
        out[h0:h1] = torch.bmm(probs.view(g1 - g0, -1, n_k), vh[g0:g1]).view(h1 - h0, n_q, -1)
    return out.transpose(0, 1)


def silu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def gelu_gate(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    # ggml's GELU is the tanh approximation
    return F.gelu(gate, approximate="tanh") * up
