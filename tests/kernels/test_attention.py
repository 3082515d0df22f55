"""Attention in head chunks (-amb) against torch's own scaled_dot_product_attention, on
awkward shapes: GQA and MQA (one KV head, as the latent cache), sliding window, softcap,
a chunk limit that splits inside a group of heads and one that spans several groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kiln.kernels.reference import ATTENTION_STATS, attention


def _oracle(q, k, v, q_pos, k_pos, scale, window=0, softcap=0.0):
    n_head, n_kv = q.shape[1], k.shape[1]
    kh = k.transpose(0, 1).repeat_interleave(n_head // n_kv, dim=0)
    vh = v.transpose(0, 1).repeat_interleave(n_head // n_kv, dim=0)
    qh = q.transpose(0, 1)
    visible = k_pos[None, :] <= q_pos[:, None]
    if window:
        visible &= (q_pos[:, None] - k_pos[None, :]) < window
    if softcap:
        s = qh @ kh.transpose(1, 2) * scale
        s = softcap * torch.tanh(s / softcap)
        out = torch.softmax(s.masked_fill(~visible, float("-inf")), -1) @ vh
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=visible, scale=scale)
    return out.transpose(0, 1)


@pytest.mark.parametrize(
    "n_head,n_kv,d,dv,window,softcap",
    [(6, 2, 24, 24, 0, 0.0), (8, 1, 40, 24, 0, 0.0), (4, 4, 16, 16, 5, 0.0), (6, 3, 8, 8, 0, 3.0)],
)
@pytest.mark.parametrize("max_bytes", [0, 1, 3 * 7 * 19 * 4, 4 * 7 * 19 * 4])
def test_chunked_attention_matches_sdpa(n_head, n_kv, d, dv, window, softcap, max_bytes):
    g = torch.Generator().manual_seed(n_head * 100 + d)
    n_q, n_k = 7, 19
    q = torch.randn(n_q, n_head, d, generator=g)
    k = torch.randn(n_k, n_kv, d, generator=g)
    v = torch.randn(n_k, n_kv, dv, generator=g)
    k_pos = torch.arange(n_k)
    q_pos = torch.arange(n_k - n_q, n_k)
    expected = _oracle(q, k, v, q_pos, k_pos, 0.3, window, softcap)
    ATTENTION_STATS.reset()
    got = attention(q, k, v, q_pos, k_pos, 0.3, window, softcap, max_kq_bytes=max_bytes)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    one_head = n_q * n_k * 4
    if max_bytes:
        assert ATTENTION_STATS.peak_kq_bytes <= max(max_bytes, one_head)
    else:
        assert ATTENTION_STATS.peak_kq_bytes == n_head * one_head
