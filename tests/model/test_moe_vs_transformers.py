"""kiln's MoE architectures against transformers on tiny random models written by `kiln convert`
(tests/tiny_moe_models.py): DeepSeek V3 (q LoRA, YaRN, sigmoid gating with selection bias,
expert groups, shared expert, a leading dense block), DeepSeek V2 (no q LoRA, softmax),
Qwen3 MoE and GLM-4.5 MoE.

Every run: a 64-token prompt in one batch, then 16 tokens one at a time through the KV
cache (f32 file, f32 cache); the error is max |kiln - hf| / max |hf|. Each model is run in
every -mla mode, with -amb off and so small that every head is its own chunk, and with
-fmoe on and off; the peak K*Q buffer is measured against -amb.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from kiln.cli import main
from kiln.errors import KilnError, ModelError
from kiln.gguf import GGUFFile, GGUFWriter
from kiln.kernels.reference import ATTENTION_STATS
from kiln.kernels.weights import QTensor
from kiln.model.mla import MLAShape, _split_kv_b
from kiln.quants import dequantize, quantize
from kiln.runtime import Engine, Options
from kiln.runtime.kv_cache import bytes_per_value
from tests.tiny_moe_models import make_tiny_moe_model

N_PROMPT, N_DECODE = 64, 16
TOLERANCE = 1e-4
ONE_BYTE_MIB = 1 / (1 << 20)  # -amb of one byte: each head in its own chunk


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cache = {}

    def get(kind: str, convention: str = "ik"):
        key = (kind, convention)
        if key not in cache:
            hf, path = make_tiny_moe_model(kind, tmp_path_factory.mktemp(kind), mla_convention=convention)
            g = torch.Generator().manual_seed(1234)
            tokens = torch.randint(0, hf.config.vocab_size, (N_PROMPT + N_DECODE,), generator=g)
            with torch.no_grad():
                expected = hf(tokens[None]).logits[0].float()
            cache[key] = (hf, path, tokens, expected)
        return cache[key]

    return get


def _logits(path, tokens, **options) -> torch.Tensor:
    engine = Engine.load(path, Options(ctx_size=128, cache_type_k="f32", cache_type_v="f32", **options))
    got = [engine.eval(tokens[:N_PROMPT].tolist())]
    got += [engine.eval([int(t)]) for t in tokens[N_PROMPT:]]
    engine.close()
    return torch.cat(got)


def _rel(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape
    return float((got - expected).abs().max() / expected.abs().max())


MODES = {
    "deepseek-v3": [0, 1, 2, 3],
    "deepseek-v2": [0, 1, 2, 3],
    "qwen3moe": [3],
    "glm4moe": [3],
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MODES))
def test_logits_match_transformers(models, kind):
    hf, path, tokens, expected = models(kind)
    n_head = hf.config.num_attention_heads
    failures = []
    for mla, amb, fmoe in itertools.product(MODES[kind], [0, ONE_BYTE_MIB], [True, False]):
        ATTENTION_STATS.reset()
        err = _rel(_logits(path, tokens, mla=mla, attn_max_batch=amb, fused_moe=fmoe), expected)
        if err >= TOLERANCE:
            failures.append(f"-mla {mla} -amb {amb} -fmoe {fmoe}: {err:.2e}")
        largest_head = N_PROMPT * N_PROMPT * 4  # one head's K*Q of the prompt batch, f32
        if amb:  # at least 4 chunks: one head each
            assert ATTENTION_STATS.peak_kq_bytes == largest_head and n_head >= 4
        else:
            assert ATTENTION_STATS.peak_kq_bytes == n_head * largest_head
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_three_mla_conventions_same_logits(models):
    reference = _logits(models("deepseek-v3", "ik")[1], models("deepseek-v3")[2], mla=3)
    for convention in ("mainline-old", "mainline-new"):
        _, path, tokens, _ = models("deepseek-v3", convention)
        for mla in (0, 1, 3):
            got = _logits(path, tokens, mla=mla)
            assert _rel(got, reference) < 1e-5, (convention, mla)


@pytest.mark.slow
@pytest.mark.parametrize("cache_type", ["f16", "q8_0"])
def test_latent_cache_size(tmp_path, capsys, cache_type):
    # kv_lora 48 + rope 16 = 64 values per token: whole q8_0 blocks
    hf, path = make_tiny_moe_model("deepseek-v3", tmp_path, kv_lora_rank=48)
    n_ctx, n_layer = 40, hf.config.num_hidden_layers
    engine = Engine.load(path, Options(ctx_size=n_ctx, cache_type_k=cache_type, mla=3))
    row = hf.config.kv_lora_rank + hf.config.qk_rope_head_dim
    expected = int(row * n_layer * n_ctx * bytes_per_value(cache_type))
    mib = expected / (1 << 20)
    assert engine.kv_size_line() == (
        f"llama_new_context_with_model: KV self size  = {mib:7.2f} MiB, c^KV ({cache_type}): {mib:7.2f} MiB, kv^T: not used"
    )
    g = torch.Generator().manual_seed(5)
    logits = engine.eval(torch.randint(0, hf.config.vocab_size, (n_ctx,), generator=g).tolist())
    assert torch.isfinite(logits).all()
    assert engine.cache.seq(0).nbytes() == expected
    engine.close()
    code = main(["run", "-m", str(path), "-p", "Hello", "-n", "2", "--temp", "0", "-c", str(n_ctx), "-ctk", cache_type])
    assert code == 0
    assert f"c^KV ({cache_type}): {mib:7.2f} MiB, kv^T: not used" in capsys.readouterr().err


def test_derived_k_b_is_q8_0_when_kv_b_is_quantized():
    s = MLAShape(n_head=2, qk_nope=32, qk_rope=16, v_head=24, kv_lora=64, q_lora=0)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(s.n_head * (s.qk_nope + s.v_head), s.kv_lora, generator=g)
    kv_b = QTensor.from_float("blk.0.attn_kv_b.weight", w, "Q4_0")
    k_b, v_b = _split_kv_b(kv_b, s, "blk.0")
    # v_b is kv_b's value rows, bytes unchanged (the same values as slicing the float copy)
    assert k_b.type_name == "Q8_0" and v_b.type_name == "Q4_0"
    dense = kv_b.dense().view(s.n_head, s.qk_nope + s.v_head, s.kv_lora)
    k_ref = dense[:, : s.qk_nope].transpose(1, 2).reshape(-1, s.qk_nope).numpy()
    q8 = dequantize("Q8_0", quantize("Q8_0", k_ref), (s.qk_nope, k_ref.shape[0]))
    np.testing.assert_array_equal(k_b.dense().numpy(), q8)
    np.testing.assert_array_equal(v_b.dense().view(s.n_head, s.v_head, s.kv_lora), dense[:, s.qk_nope :])


def _copy_without(src, dst, drop_key=None, drop_tensor=None):
    with GGUFFile(src) as f, GGUFWriter(dst) as w:
        for key, value in f.metadata.items():
            if key != drop_key and not key.startswith("GGUF."):
                vtype, item_type = f.value_types[key]
                w.add(key, value, vtype, item_type)
        for name, info in f.tensors.items():
            if name != drop_tensor:
                w.add_tensor(name, info.shape, info.type_id, np.asarray(f.tensor_bytes(name)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "drop_key,drop_tensor,message",
    [
        ("deepseek2.attention.kv_lora_rank", None, "deepseek2.attention.kv_lora_rank is missing"),
        ("deepseek2.expert_count", None, "deepseek2.expert_count is missing"),
        (None, "blk.1.ffn_gate_exps.weight", "tensor blk.1.ffn_gate_exps.weight is missing"),
        (None, "blk.0.attn_kv_a_mqa.weight", "tensor blk.0.attn_kv_a_mqa.weight is missing"),
    ],
)
def test_missing_key_or_tensor_is_named(models, tmp_path, drop_key, drop_tensor, message):
    _, path, _, _ = models("deepseek-v3")
    broken = tmp_path / "broken.gguf"
    _copy_without(path, broken, drop_key, drop_tensor)
    with pytest.raises(KilnError, match=message) as info:
        Engine.load(broken, Options(ctx_size=64))
    assert isinstance(info.value, ModelError)
