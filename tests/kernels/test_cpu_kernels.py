"""The Numba CPU kernels against the reference path, for every type they cover.

Weights are made by kiln's quantizers from random values (shapes with odd row counts and
row lengths of an odd number of blocks); the oracle for the decoded values is kiln's
dequantizer, itself checked bit for bit against ik_llama.cpp (tests/quants). The 8-bit
activations of the generation kernel cost about 0.5% (relative error of the product);
the batch path multiplies exact float32 rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiln.gguf.types import GGML_TYPES_BY_NAME
from kiln.kernels import dispatch, reference
from kiln.kernels.cpu import linear as cpu_linear
from kiln.kernels.cpu import matmul
from kiln.kernels.cpu.activations import ActivationBlocks
from kiln.kernels.cpu.decoders import DECODERS
from kiln.kernels.cpu.indirect import readonly
from kiln.kernels.weights import QTensor
from kiln.quants import dequantize, quantize

TYPES = sorted(DECODERS)


def _weights(type_name: str, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(raw bytes [n_out, row_bytes], dequantized float32 [n_out, K], K) of random weights."""
    block = GGML_TYPES_BY_NAME[type_name].block_size
    K = 3 * block if block == 256 else 9 * block
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n_out, K)) * rng.uniform(0.2, 3.0, (n_out, 1))).astype(np.float32)
    raw = quantize(type_name, w, None, "w")
    return raw, dequantize(GGML_TYPES_BY_NAME[type_name].id, raw, (K, n_out), "w"), K


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("type_name", TYPES)
def test_decoded_rows_equal_the_dequantizer(type_name):
    raw, ref, K = _weights(type_name, 13, 1)
    m = cpu_linear.matrix(GGML_TYPES_BY_NAME[type_name].id, K, 13)
    out = np.empty((9, K), dtype=np.float32)
    matmul.decode_rows(m.decoder, readonly(raw), m.row_bytes, K, 4, out, 3)
    np.testing.assert_array_equal(out, ref[4:13])
    ids = torch.tensor([[12, 0], [5, 5]])
    np.testing.assert_array_equal(cpu_linear.rows(raw.reshape(-1), m, ids).numpy(), ref[ids.numpy()])


@pytest.mark.parametrize("type_name", TYPES)
@pytest.mark.parametrize("n_tokens", [1, 3, 8])
def test_generation_product_matches_reference(type_name, n_tokens):
    raw, ref, K = _weights(type_name, 37, 2 + n_tokens)
    x = torch.randn(n_tokens, K, generator=torch.Generator().manual_seed(n_tokens)) * 3
    m = cpu_linear.matrix(GGML_TYPES_BY_NAME[type_name].id, K, 37)
    y = cpu_linear.product(x, raw.reshape(-1), m).numpy()
    assert np.isfinite(y).all()
    assert _rel(y, x.numpy() @ ref.T) < 1e-4


@pytest.mark.parametrize("type_name", ["Q4_1", "Q8_0", "Q6_K", "IQ4_KS", "IQ2_K"])
def test_batch_product_is_exact_float(type_name):
    raw, ref, K = _weights(type_name, 29, 7)
    x = torch.randn(cpu_linear.GEMV_MAX_TOKENS + 11, K, generator=torch.Generator().manual_seed(0))
    m = cpu_linear.matrix(GGML_TYPES_BY_NAME[type_name].id, K, 29)
    y = cpu_linear.product(x, raw.reshape(-1), m).numpy()
    assert _rel(y, x.numpy() @ ref.T) < 1e-5


def test_activation_blocks_follow_their_definition():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 96)) * rng.uniform(0.01, 100, (5, 1))).astype(np.float32)
    x[2, 32:64] = 0  # an all-zero block has scale 0 and values 0
    qx, dx, sx, sx32 = ActivationBlocks(96).quantize(x)
    blocks = x.reshape(5, 3, 32)
    d = np.abs(blocks).max(axis=2) / np.float32(32767)
    np.testing.assert_allclose(dx, d, rtol=1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(d[..., None] > 0, np.rint(blocks * (1 / d[..., None])), 0)
    np.testing.assert_array_equal(qx.reshape(5, 3, 32), want)
    q = qx.astype(np.float32).reshape(5, 6, 16)
    np.testing.assert_allclose(sx, q.sum(axis=2) * np.repeat(dx, 2, axis=1), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(sx32, sx.reshape(5, 3, 2).sum(axis=2), rtol=1e-6)


def test_dispatch_takes_the_fast_path_and_can_be_switched_off():
    raw, ref, K = _weights("Q4_K", 21, 5)
    w = QTensor("blk.0.ffn_up.weight", raw.reshape(-1), GGML_TYPES_BY_NAME["Q4_K"].id, (K, 21))
    x = torch.randn(2, 3, K)
    bias = torch.randn(21)
    fast = dispatch.linear(x, w, bias)
    ids = torch.tensor([[20, 3], [3, 0]])
    np.testing.assert_array_equal(dispatch.embedding_rows(w, ids).numpy(), ref[ids.numpy()])
    assert torch.float32 not in w._dense  # no float copy was made
    dispatch.use_reference(True)
    try:
        slow = dispatch.linear(x, w, bias)
    finally:
        dispatch.use_reference(False)
    assert _rel(fast.numpy(), slow.numpy()) < 1e-2
    assert _rel(slow.numpy(), (x @ torch.from_numpy(ref).T + bias).numpy()) < 1e-6


def test_expert_products_read_their_own_expert():
    n_exp, n_out = 3, 19
    raws, refs = [], []
    for e in range(n_exp):
        raw, ref, K = _weights("IQ4_XS", n_out, 10 + e)
        raws.append(raw)
        refs.append(ref)
    w = QTensor("blk.1.ffn_down_exps.weight", np.concatenate(raws).reshape(-1), GGML_TYPES_BY_NAME["IQ4_XS"].id,
                (K, n_out, n_exp))
    x = torch.randn(4, K)
    for e in range(n_exp):
        y = dispatch.expert_linear(x, w, e).numpy()
        assert _rel(y, x.numpy() @ refs[e].T) < 1e-2
        g, u = dispatch.expert_gate_up(x, w, w, e, fused=True)
        assert _rel(g.numpy(), y) < 1e-6 and _rel(u.numpy(), y) < 1e-6
    assert _rel(reference.expert_linear(x, w, 1).numpy(), x.numpy() @ refs[1].T) < 1e-6


@pytest.mark.parametrize("type_name", ["Q4_1", "Q6_K", "IQ2_KS"])
def test_selected_experts_each_use_their_own_matrix_and_row(type_name):
    n_exp, n_out = 4, 23
    parts = [_weights(type_name, n_out, 20 + e) for e in range(n_exp)]
    K = parts[0][2]
    w = QTensor("blk.2.ffn_up_exps.weight", np.concatenate([p[0] for p in parts]).reshape(-1),
                GGML_TYPES_BY_NAME[type_name].id, (K, n_out, n_exp))
    experts = torch.tensor([3, 0, 3, 1, 2])
    x = torch.randn(5, K)
    assert dispatch.selected_experts_fast(len(experts), x, w)
    y = dispatch.selected_experts(x, w, experts).numpy()
    want = np.stack([x[s].numpy() @ parts[e][1].T for s, e in enumerate(experts.tolist())])
    assert np.isfinite(y).all()
    assert _rel(y, want) < 1e-4


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic"])
def test_row_dot_instruction_sets_agree_with_numpy(isa, monkeypatch):
    """The block dot is spelled three ways (512-bit, 256-bit, generic vectors); each machine
    compiles one, so each is compiled here too, where the host allows it."""
    from numba import njit

    from kiln.kernels.cpu import simd

    if isa == "avx512" and not simd.HAS_AVX512 or isa == "avx2" and not simd.HAS_AVX2:
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setattr(simd, "HAS_AVX512", isa == "avx512")
    monkeypatch.setattr(simd, "HAS_AVX2", isa != "generic")

    @njit
    def dots(w, sw, x, dx, sw32, n):  # a fresh function: compiled with the flags set above
        return simd.row_dot_sub16(w, 0, sw, 0, x, 0, dx, 0, n), simd.row_dot_block32(w, 0, sw32, 0, x, 0, dx, 0, n)

    rng = np.random.default_rng(7)
    n = 11
    w = rng.integers(-128, 128, 32 * n).astype(np.int8)
    x = rng.integers(-32767, 32768, 32 * n).astype(np.int16)
    dx = rng.random(n).astype(np.float32)
    sw = np.repeat(rng.random(2 * n).astype(np.float32), 4)  # two 16-value scales per block, each x4
    sw32 = rng.random(n).astype(np.float32)
    sub16, block32 = dots(w, sw, x, dx, sw32, n)
    prod = (w.astype(np.float64) * x).reshape(n, 2, 16).sum(-1)
    want16 = (prod * sw.reshape(n, 2, 4)[:, :, 0] * dx[:, None]).sum()
    want32 = (prod.sum(-1) * sw32 * dx).sum()
    assert abs(sub16 - want16) <= 1e-5 * np.abs(prod * dx[:, None]).sum()
    assert abs(block32 - want32) <= 1e-5 * np.abs(prod * dx[:, None]).sum()
    ir = dots.inspect_llvm(dots.signatures[0])
    assert ("avx512.pmaddw" in ir, "avx2.pmadd" in ir) == (isa == "avx512", isa == "avx2")


@pytest.mark.parametrize("type_name, n_tokens, three_d", [("Q8_0", 1, False), ("Q4_K", 3, False), ("IQ4_KS", 2, True)])
def test_per_head_product_matches_reference(type_name, n_tokens, three_d):
    """MLA's per-head products (attn_k_b, attn_v_b): head h of x times matrix h of the weight,
    stored as one 2D tensor of n_head * out rows or as a 3D tensor."""
    n_head, out, K = 5, 24, 256
    rng = np.random.default_rng(3)
    values = rng.standard_normal((n_head * out, K)).astype(np.float32)
    raw = quantize(type_name, values, None, "blk.0.attn_k_b.weight").reshape(-1)
    shape = (K, out, n_head) if three_d else (K, n_head * out)
    w = QTensor("blk.0.attn_k_b.weight", raw, GGML_TYPES_BY_NAME[type_name].id, shape)
    x = torch.from_numpy(rng.standard_normal((n_tokens, n_head, K)).astype(np.float32))
    got = dispatch.per_head_product(x, w, n_head)
    want = reference.per_head_linear(x, w.dense().reshape(n_head, out, K))
    assert got.shape == (n_tokens, n_head, out)
    assert _rel(got.numpy(), want.numpy()) < 1e-4


@pytest.mark.parametrize("type_name", ["F16", "BF16"])
@pytest.mark.parametrize("n_tokens", [1, 3, 8, 13])
def test_float_weights_are_read_as_stored(type_name, n_tokens):
    """F16 / BF16 weights: generation (up to 8 rows) and batch products, expert selection and
    row lookups against the exact float products; no float32 copy of the weight is made."""
    n_out, K, n_exp = 21, 72, 3
    rng = np.random.default_rng(n_tokens)
    values = (rng.standard_normal((n_exp * n_out, K)) * 2).astype(np.float32)
    raw = quantize(type_name, values, None, "w").reshape(-1)
    ref = dequantize(type_name, raw, (K, n_exp * n_out))
    x = torch.from_numpy(rng.standard_normal((n_tokens, K)).astype(np.float32))
    w2 = QTensor("blk.0.ffn_up.weight", raw, GGML_TYPES_BY_NAME[type_name].id, (K, n_exp * n_out))
    assert dispatch.fast_cpu(x, w2)
    assert _rel(dispatch.linear(x, w2).numpy(), x.numpy() @ ref.T) < 1e-6
    assert torch.float32 not in w2._dense
    ids = torch.tensor([[4, 0], [62, 4]])
    np.testing.assert_array_equal(dispatch.embedding_rows(w2, ids).numpy(), ref[ids.numpy()])
    w3 = QTensor("blk.0.ffn_up_exps.weight", raw, GGML_TYPES_BY_NAME[type_name].id, (K, n_out, n_exp))
    sel = torch.tensor([2, 0, 1, 2][: max(1, min(n_tokens, 4))])
    xs = x[: sel.numel()]
    got = dispatch.selected_experts(xs, w3, sel).numpy()
    want = np.stack([xs[i].numpy() @ ref[int(e) * n_out : (int(e) + 1) * n_out].T for i, e in enumerate(sel)])
    assert _rel(got, want) < 1e-6


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_activation_reaches_the_output(bad):
    """The 16-bit activation blocks must not swallow a NaN or Inf (the model's per-layer
    check reports it): that token's outputs are non-finite, the other tokens' are not."""
    raw, ref, K = _weights("Q4_K", 9, 1)
    m = cpu_linear.matrix(GGML_TYPES_BY_NAME["Q4_K"].id, K, 9)
    x = torch.randn(3, K)
    x[1, 5] = bad
    y = cpu_linear.product(x, raw.reshape(-1), m)
    assert not torch.isfinite(y[1]).any()
    assert torch.isfinite(y[[0, 2]]).all()
