"""The CPU kernels inside a model: logits against the reference path, row-interleaved files
(read through their plain layout, with and without -rtr), and --numa placement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.gguf.types import GGML_TYPES_BY_NAME
from kiln.kernels import dispatch
from kiln.kernels.cpu import linear as cpu_linear
from kiln.quants import interleaved, quantize
from kiln.runtime import Engine, numa
from kiln.runtime.options import Options
from tests.gguf_rewrite import requantize_matrices, rewrite_gguf
from tests.tiny_models import make_tiny_model

PROMPT = [1, 5, 9, 14, 3, 22, 7, 30, 2]


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("fastpath")
    _, f32 = make_tiny_model("llama", d, hidden_size=256, intermediate_size=512, head_dim=64)
    files = {t: requantize_matrices(f32, d / f"{t}.gguf", t) for t in ("Q4_K", "IQ4_KS", "Q8_0", "BF16")}

    def packed(name, values):  # the output matrix (389 rows) does not group by 8
        if values.ndim == 2 and name != "token_embd.weight":
            return values, "Q8_0" if name == "output.weight" else "Q8_0_R8"
        return None

    files["Q8_0_R8"] = rewrite_gguf(f32, d / "Q8_0_R8.gguf", packed)
    return files


def _logits(path: Path, tokens, **options) -> torch.Tensor:
    e = Engine.load(path, Options(ctx_size=64, **options))
    out = [e.eval(tokens[:-2])]  # a batch, then token by token
    for t in tokens[-2:]:
        out.append(e.eval([t]))
    return torch.cat(out)


@pytest.mark.parametrize("type_name", ["Q4_K", "IQ4_KS", "Q8_0", "BF16"])
def test_model_logits_match_the_reference_path(tiny_files, type_name):
    fast = _logits(tiny_files[type_name], PROMPT)
    dispatch.use_reference(True)
    try:
        slow = _logits(tiny_files[type_name], PROMPT)
    finally:
        dispatch.use_reference(False)
    assert torch.isfinite(fast).all()
    # each product is within ~2e-5 of the reference (16-bit activations); a random model
    # amplifies that through its layers to a few 1e-4 (a wrong kernel gives order 1)
    assert float((fast - slow).norm() / slow.norm()) < 3e-3


@pytest.mark.parametrize("rtr", [False, True])
def test_interleaved_file_computes_as_its_plain_type(tiny_files, rtr):
    plain = _logits(tiny_files["Q8_0"], PROMPT)
    packed = _logits(tiny_files["Q8_0_R8"], PROMPT, run_time_repack=rtr)
    assert torch.equal(plain, packed)


LOSSLESS = sorted(n for n in interleaved.LAYOUTS if not interleaved.note(n) and interleaved.plain_type(n) in cpu_linear.DECODERS)


@pytest.mark.parametrize("type_name", LOSSLESS)
def test_every_lossless_interleaved_type_has_a_kernel(type_name):
    plain = interleaved.plain_type(type_name)
    block = GGML_TYPES_BY_NAME[plain].block_size
    K, n_out = 2 * max(block, 256 if block == 256 else 32), 16
    w = np.random.default_rng(0).standard_normal((n_out, K)).astype(np.float32)
    rows = quantize(plain, w, None, "w").reshape(n_out, -1)
    packed = interleaved.repack(type_name, rows)
    plan = cpu_linear.weight_plan(packed.reshape(-1), GGML_TYPES_BY_NAME[type_name].id, (K, n_out))
    assert plan is not None
    np.testing.assert_array_equal(plan.raw, rows.reshape(-1))


def test_numa_placement_modes(tmp_path):
    nodes = {0: {0, 1, 2, 3}, 1: {4, 5, 6, 7}}
    assert numa.placement("distribute", {5}, nodes) == set(range(8))
    assert numa.placement("isolate", {5, 6, 1}, nodes) == {1}
    assert numa.placement("isolate", {4, 7}, nodes) == {4, 7}
    assert numa.placement("numactl", {2, 6}, nodes) == {2, 6}
    assert numa.parse_cpu_list("0-2,5,7-8\n") == {0, 1, 2, 5, 7, 8}
    fake = tmp_path / "node"
    (fake / "node0").mkdir(parents=True)
    (fake / "node0" / "cpulist").write_text("0-1\n")
    (fake / "node1").mkdir()
    (fake / "node1" / "cpulist").write_text("2-3\n")
    assert numa.node_cpus(fake) == {0: {0, 1}, 1: {2, 3}}


def test_numa_balancing_warning(tmp_path, caplog):
    on = tmp_path / "numa_balancing"
    on.write_text("1\n")
    with caplog.at_level("WARNING", logger="kiln.runtime"):
        cpus = numa.apply("numactl", balancing=on)
    assert numa.BALANCING_WARNING in caplog.text
    assert cpus == __import__("os").sched_getaffinity(0)
    assert numa.apply(None, balancing=on) is None


def test_bad_numa_mode_is_an_option_error():
    from kiln.errors import OptionError

    with pytest.raises(OptionError, match="--numa everywhere: use one of distribute, isolate, numactl"):
        Options(numa="everywhere").validate()


@pytest.fixture(scope="module")
def deepseek_q(tmp_path_factory):
    """A tiny DeepSeek-V3 (MLA + MoE) in kernel types: Q8_0 matrices, IQ4_XS/Q4_K experts."""
    from tests.tiny_moe_models import make_tiny_moe_model

    d = tmp_path_factory.mktemp("dsfast")
    _, f32 = make_tiny_moe_model(
        "deepseek-v3", d, "f32", hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
        q_lora_rank=64, kv_lora_rank=64, num_hidden_layers=3,
    )

    def edit(name, values):
        if name.endswith("_exps.weight"):
            return values, "IQ4_XS" if "down" in name else "Q4_K"
        if values.ndim == 2 and values.shape[-1] % 32 == 0 and name != "token_embd.weight":
            return values, "Q8_0"
        return None

    return rewrite_gguf(f32, d / "ds-q.gguf", edit)


@pytest.mark.parametrize("ser", [None, "2,0.5"])
def test_moe_generation_kernels_match_the_reference_path(deepseek_q, ser):
    opts = {} if ser is None else {"ser": ser}
    calls = []
    real = dispatch.selected_experts
    dispatch.selected_experts = lambda *a: calls.append(a[1].name) or real(*a)
    try:
        fast = _logits(deepseek_q, PROMPT, **opts)
    finally:
        dispatch.selected_experts = real
    assert any("ffn_down_exps" in c for c in calls)  # the single tokens took the grouped-by-pair path
    dispatch.use_reference(True)
    try:
        slow = _logits(deepseek_q, PROMPT, **opts)
    finally:
        dispatch.use_reference(False)
    assert torch.isfinite(fast).all()
    assert float((fast - slow).norm() / slow.norm()) < 3e-3
