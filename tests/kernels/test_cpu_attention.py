"""The CPU kernels for attention, rope and RMS norm against the reference path, on random
inputs of awkward shapes (grouped heads, windows, soft-capping, positions with gaps)."""

from __future__ import annotations

import pytest
import torch

from kiln.kernels import dispatch, reference


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "n_q, n_k, n_head, n_kv, d, dv, window, softcap",
    [(1, 1, 3, 1, 8, 8, 0, 0.0), (1, 77, 9, 3, 64, 64, 0, 0.0), (5, 40, 4, 4, 24, 16, 0, 0.0),
     (8, 130, 6, 2, 32, 40, 17, 0.0), (3, 64, 8, 1, 16, 16, 0, 30.0)],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_generation_attention_matches_reference(n_q, n_k, n_head, n_kv, d, dv, window, softcap, dtype):
    g = torch.Generator().manual_seed(n_k)
    q = torch.randn(n_q, n_head, d, generator=g) * 2
    k = (torch.randn(n_k, n_kv, d, generator=g) * 2).to(dtype)
    v = torch.randn(n_k, n_kv, dv, generator=g).to(dtype)
    k_pos = torch.arange(n_k) * 2  # gaps, as after a cache edit
    q_pos = k_pos[-n_q:] if n_q <= n_k else torch.arange(n_q)
    want = reference.attention(q, k, v, q_pos, k_pos, 0.125, window, softcap)
    got = dispatch.attention(q, k, v, q_pos, k_pos, 0.125, window, softcap)
    assert torch.isfinite(got).all()
    assert _rel(got, want) < 1e-5


@pytest.mark.parametrize("n_q, n_k, n_head, rope, latent", [(1, 1, 2, 8, 32), (1, 93, 16, 64, 512), (4, 37, 3, 16, 40)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_latent_attention_reads_values_from_the_key_rows(n_q, n_k, n_head, rope, latent, dtype):
    """MLA's latent cache: one row [rope part, latent part] per token shared by every head;
    the values are the latent columns of the same rows (a strided view, not a copy)."""
    g = torch.Generator().manual_seed(n_k + latent)
    q = torch.randn(n_q, n_head, rope + latent, generator=g)
    rows = (torch.randn(n_k, 1, rope + latent, generator=g) * 2).to(dtype)
    v = rows[:, :, rope:]
    k_pos = torch.arange(n_k)
    q_pos = k_pos[-n_q:]
    assert dispatch._value_columns(rows, v) == rope
    want = reference.attention(q, rows, v, q_pos, k_pos, 0.07)
    got = dispatch.attention(q, rows, v, q_pos, k_pos, 0.07)
    assert _rel(got, want) < 1e-5
    if n_k > 1:  # strided views that are not a column range of the key rows
        assert dispatch._value_columns(rows, rows[:, :, : latent // 2]) is None
        assert dispatch._value_columns(rows, rows[1:, :, rope:]) is None


def test_batches_take_the_reference_attention():
    q = torch.randn(dispatch.ATTENTION_MAX_QUERIES + 1, 2, 8)
    k = torch.randn(20, 1, 8).half()
    v = torch.randn(20, 1, 8).half()
    pos = torch.arange(20)
    want = reference.attention(q, k, v, pos[-q.shape[0]:], pos, 0.3)
    assert torch.equal(dispatch.attention(q, k, v, pos[-q.shape[0]:], pos, 0.3), want)


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_rot, d", [(64, 64), (32, 80), (16, 18)])
def test_rope_matches_reference(neox, n_rot, d):
    pos = torch.tensor([0, 5, 6, 1000, 31])
    cos, sin = reference.rope_cos_sin(pos, n_rot, 10000.0)
    x = torch.randn(5, 3, d)
    view = torch.randn(5, 3, d + 7)[..., 7:]  # a strided view, as MLA's rope part
    for t in (x, view):
        assert _rel(dispatch.rope(t, cos, sin, neox), reference.rope(t, cos, sin, neox)) < 1e-6


@pytest.mark.parametrize("shape", [(1, 576), (7, 3, 17), (2, 1)])
def test_rms_norm_matches_reference(shape):
    x = torch.randn(*shape) * 5
    w = torch.randn(shape[-1])
    for weight in (w, None):
        assert _rel(dispatch.rms_norm(x, weight, 1e-5), reference.rms_norm(x, weight, 1e-5)) < 1e-6
    view = torch.randn(shape[-1] + 3, *shape[:-1]).movedim(0, -1)[..., 3:]  # not contiguous
    assert _rel(dispatch.rms_norm(view, w, 1e-6), reference.rms_norm(view, w, 1e-6)) < 1e-6
