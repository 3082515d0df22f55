"""`kiln imatrix` against independent computations and ik_llama.cpp.

- tiny llama / Qwen3-MoE / DeepSeek-V3 (tests/tiny_models.py, tiny_moe_models.py): the
  stored sums and counts equal the squared activations captured with hooks on the
  transformers model the GGUF file was converted from (f32 file, f32 KV cache); an expert
  counts exactly the tokens transformers routes to it;
- the default model: close to ik_llama.cpp's llama-imatrix on the dequantized f32 file
  (tests/tools/data/imatrix_smollm2_ik_f32.dat: four of its entries after one chunk);
- `.dat` values, calls, --save-frequency copies, merging, and the errors.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kiln.cli import main
from kiln.gguf import GGUFFile
from kiln.quants.imatrix import read_imatrix_dat, write_imatrix_dat
from kiln.quants.imatrix_gguf import read_imatrix_gguf
from kiln.tokenizer import Tokenizer
from kiln.tools.imatrix_output import ImatrixOutput
from tests.conftest import WIKI
from tests.tiny_models import make_tiny_model
from tests.tiny_moe_models import make_tiny_moe_model

N_CTX, N_CHUNK = 32, 3
IK_REFERENCE = "tests/tools/data/imatrix_smollm2_ik_f32.dat"
EXACT = ["-c", str(N_CTX), "--chunks", str(N_CHUNK), "-ctk", "f32", "-ctv", "f32", "-t", "2"]
ATTN = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output"}
MLP = {"gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    p = tmp_path_factory.mktemp("imatrix-text") / "text.txt"
    p.write_text(WIKI.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_model("llama", tmp_path_factory.mktemp("llama"))


def chunks_of(gguf_path, text) -> list[list[int]]:
    """The chunks llama-imatrix evaluates: -c tokens each, BOS first when the model adds one."""
    with GGUFFile(gguf_path) as f:
        tok = Tokenizer.from_metadata(f.metadata)
    ids = list(tok.encode(text.read_text(encoding="utf-8"), add_special=True))
    out = []
    for i in range(N_CHUNK):
        c = ids[i * N_CTX : (i + 1) * N_CTX]
        if tok.add_bos:
            c[0] = tok.bos_id
        out.append(c)
    return out


class Capture:
    """Sum of squared inputs per column and the rows seen, per (entry, matrix)."""

    def __init__(self):
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.rows: dict[tuple[str, int], int] = {}

    def add(self, name: str, x: torch.Tensor, matrix: int = 0) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        key = (name, matrix)
        self.sums[key] = self.sums.get(key, 0) + x.square().sum(0)
        self.rows[key] = self.rows.get(key, 0) + x.shape[0]

    def linear(self, module, name: str):
        module.register_forward_pre_hook(lambda _m, args: self.add(name, args[0]))


def run_hf(model, chunks: list[list[int]]) -> None:
    with torch.no_grad():
        for c in chunks:
            model(torch.tensor([c]))


def assert_entry(stats, cap: Capture, name: str, n_matrices: int = 1, rtol: float = 1e-4) -> None:
    d = stats.entries[name]
    assert d.n_matrices == n_matrices, name
    for m in range(n_matrices):
        want = cap.sums.get((name, m))
        got = d.sums.reshape(n_matrices, -1)[m]
        if want is None:  # an expert transformers routed nothing to
            assert d.counts[m] == 0 and not got.any(), (name, m)
            continue
        assert d.counts[m] == cap.rows[(name, m)], (name, m)
        np.testing.assert_allclose(got, want.numpy(), rtol=rtol, atol=1e-6 * float(want.max()), err_msg=f"{name}[{m}]")


def test_llama_equals_captured_activations(llama, text, tmp_path, capsys):
    hf, path = llama
    out = tmp_path / "im.gguf"
    assert main(["imatrix", "-m", str(path), "-f", str(text), *EXACT, "--process-output", "-o", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("[1]") and f"[{N_CHUNK}]" in printed.out and "Final estimate: PPL = " in printed.out
    assert "seconds per pass - ETA" in printed.err and f"stored collected data after {N_CHUNK} chunks" in printed.err
    cap = Capture()
    for i, layer in enumerate(hf.model.layers):
        for attr, kind in ATTN.items():
            cap.linear(getattr(layer.self_attn, attr), f"blk.{i}.{kind}.weight")
        for attr, kind in MLP.items():
            cap.linear(getattr(layer.mlp, attr), f"blk.{i}.{kind}.weight")
    cap.linear(hf.lm_head, "output.weight")
    run_hf(hf, chunks_of(path, text))
    stats = read_imatrix_gguf(out)
    assert sorted(stats.entries) == sorted(name for name, _ in cap.sums)
    for name in stats.entries:
        assert_entry(stats, cap, name)
    assert stats.chunks == N_CHUNK and stats.chunk_size == N_CTX and stats.datasets == [str(text)]


def test_dat_values_calls_and_save_frequency(llama, text, tmp_path, capsys):
    """-ub 16: two passes per chunk, so ncall = 2 per chunk; value = mean square * ncall;
    without --process-output the output tensor is not collected; .at_N copies."""
    _, path = llama
    out = tmp_path / "im.dat"
    argv = ["imatrix", "-m", str(path), "-f", str(text), *EXACT, "-ub", "16", "--no-ppl", "--save-frequency", "1"]
    assert main([*argv, "-o", str(out)]) == 0
    assert "[1]" not in capsys.readouterr().out
    ref = tmp_path / "ref.gguf"  # with the perplexity: the output matrix runs, but is not collected
    assert main(["imatrix", "-m", str(path), "-f", str(text), *EXACT, "-o", str(ref)]) == 0
    stats = read_imatrix_gguf(ref)
    im = read_imatrix_dat(out)
    assert im.chunks == N_CHUNK and im.dataset == str(text) and "output.weight" not in im
    assert sorted(im.entries) == sorted(stats.entries) and len(im) == 3 * 7
    for name, d in stats.entries.items():
        assert im.ncall(name) == 2 * N_CHUNK
        np.testing.assert_allclose(im.entries[name].values, d.sums / d.counts[0] * 2 * N_CHUNK, rtol=1e-5)
    for k in range(1, N_CHUNK + 1):
        copy = read_imatrix_dat(f"{out}.at_{k}")
        assert copy.chunks == k and copy.ncall("blk.0.attn_q.weight") == 2 * k


def test_moe_experts_count_only_their_routed_tokens(tmp_path, text, capsys):
    hf, path = make_tiny_moe_model("qwen3moe", tmp_path)
    out, fused = tmp_path / "nofmoe.gguf", tmp_path / "fmoe.gguf"
    base = ["imatrix", "-m", str(path), "-f", str(text), *EXACT, "--no-ppl"]
    assert main([*base, "-no-fmoe", "-o", str(out)]) == 0
    assert main([*base, "-o", str(fused)]) == 0
    cap = Capture()
    n_expert = hf.config.num_experts
    for i, layer in enumerate(hf.model.layers):
        for attr, kind in ATTN.items():
            cap.linear(getattr(layer.self_attn, attr), f"blk.{i}.{kind}.weight")
        cap.linear(layer.mlp.gate, f"blk.{i}.ffn_gate_inp.weight")
        layer.mlp.experts.register_forward_pre_hook(_expert_hook(cap, layer.mlp.experts, i), with_kwargs=True)
    run_hf(hf, chunks_of(path, text))
    stats = read_imatrix_gguf(out)
    assert sorted(stats.entries) == sorted({name for name, _ in cap.sums})
    for name in stats.entries:
        assert_entry(stats, cap, name, n_expert if "_exps" in name else 1)
    d = stats.entries["blk.0.ffn_up_exps.weight"]
    assert d.counts.sum() == N_CHUNK * N_CTX * hf.config.num_experts_per_tok
    # -fmoe: the fused product is recorded under ffn_up_exps only, as ik_llama.cpp does
    fused_stats = read_imatrix_gguf(fused)
    assert set(fused_stats.entries) == set(stats.entries) - {f"blk.{i}.ffn_gate_exps.weight" for i in range(3)}
    np.testing.assert_array_equal(fused_stats.entries["blk.1.ffn_up_exps.weight"].counts,
                                  stats.entries["blk.1.ffn_up_exps.weight"].counts)
    # passes of 8 tokens: matrix products under 16 tokens are skipped, expert products never
    small = tmp_path / "ub8.gguf"
    assert main([*base, "-ub", "8", "-o", str(small)]) == 0
    assert sorted(read_imatrix_gguf(small).entries) == sorted(n for n in fused_stats.entries if "_exps" in n)


def _expert_hook(cap: Capture, experts, layer: int):
    def hook(_module, args, kwargs):
        values = list(args) + [kwargs[k] for k in ("hidden_states", "top_k_index", "top_k_weights") if k in kwargs]
        hidden, index = values[0], values[1]
        for e in range(experts.num_experts):
            rows = (index == e).any(dim=-1)
            if not rows.any():
                continue
            x = hidden[rows]
            gate, up = F.linear(x, experts.gate_up_proj[e]).chunk(2, dim=-1)
            cap.add(f"blk.{layer}.ffn_gate_exps.weight", x, e)
            cap.add(f"blk.{layer}.ffn_up_exps.weight", x, e)
            cap.add(f"blk.{layer}.ffn_down_exps.weight", experts.act_fn(gate) * up, e)

    return hook


@pytest.mark.parametrize("convention", ["ik", "mainline-new", "mainline-old"])
def test_deepseek_mla_entries(tmp_path, text, capsys, convention):
    """-mla 1: attn_k_b sees q_nope per head, attn_v_b the latent attention output, and no
    attn_kv_b; one slice per head, or one for all heads where the file holds the tensor 2D
    (ik's convention); -mla 0: attn_kv_b sees the normalized latent kv."""
    hf, path = make_tiny_moe_model("deepseek-v3", tmp_path, mla_convention=convention)
    cfg = hf.config
    n_head, nope, rope = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
    modes = (1, 0) if convention == "ik" else (1,)
    outs = {mla: tmp_path / f"mla{mla}.gguf" for mla in modes}
    for mla, out in outs.items():
        assert main(["imatrix", "-m", str(path), "-f", str(text), *EXACT, "--no-ppl", "-mla", str(mla),
                     "-o", str(out)]) == 0
    cap = Capture()
    for i, layer in enumerate(hf.model.layers):
        attn = layer.self_attn
        cap.linear(attn.kv_b_proj, f"blk.{i}.attn_kv_b.weight")
        cap.linear(attn.q_b_proj, f"blk.{i}.attn_q_b.weight")

        def q_nope(_m, _args, q, i=i):
            heads = q.reshape(-1, n_head, nope + rope)[..., :nope]
            for h in range(n_head):
                cap.add(f"blk.{i}.attn_k_b.weight", heads[:, h], h)

        attn.q_b_proj.register_forward_hook(q_nope)
    run_hf(hf, chunks_of(path, text))
    with GGUFFile(path) as f:
        shapes = {n: t.shape for n, t in f.tensors.items()}
    kv_lora = cfg.kv_lora_rank
    one = read_imatrix_gguf(outs[1])
    for i in range(cfg.num_hidden_layers):
        assert f"blk.{i}.attn_kv_b.weight" not in one.entries
        assert_entry(one, cap, f"blk.{i}.attn_q_b.weight")
        k_b, v_b = one.entries[f"blk.{i}.attn_k_b.weight"], one.entries[f"blk.{i}.attn_v_b.weight"]
        per_head = [cap.sums[(f"blk.{i}.attn_k_b.weight", h)].numpy() for h in range(n_head)]
        if len(shapes.get(f"blk.{i}.attn_k_b.weight", (0, 0, 0))) == 2:  # ik's 2D layout: heads summed
            assert k_b.counts.tolist() == [N_CHUNK * N_CTX * n_head] and v_b.sums.size == kv_lora
            np.testing.assert_allclose(k_b.sums, np.sum(per_head, axis=0), rtol=1e-4)
        else:  # 3D in the file, or derived at load: one slice per head, as ik_llama.cpp
            assert k_b.counts.tolist() == [N_CHUNK * N_CTX] * n_head and v_b.sums.size == kv_lora * n_head
            np.testing.assert_allclose(k_b.sums, np.concatenate(per_head), rtol=1e-4)
        assert (v_b.sums > 0).all() and (v_b.counts == v_b.counts[0]).all()
    # the entries fit the model, derived MLA tensors included: merging them back is accepted
    assert main(["imatrix", "-m", str(path), "--in-file", str(outs[1]), "-o", str(tmp_path / "back.dat")]) == 0
    if convention == "ik":
        zero = read_imatrix_gguf(outs[0])
        for i in range(cfg.num_hidden_layers):
            assert f"blk.{i}.attn_k_b.weight" not in zero.entries
            assert_entry(zero, cap, f"blk.{i}.attn_kv_b.weight")


@pytest.mark.slow
def test_default_model_close_to_ik_llama(smollm2, tmp_path, capsys):
    out = tmp_path / "smol.dat"
    assert main(["imatrix", "-f", str(WIKI), "--chunks", "1", "-t", "2", "--no-ppl", "-o", str(out)]) == 0
    ours, ik = read_imatrix_dat(out), read_imatrix_dat(IK_REFERENCE)
    assert len(ours) == 30 * 7 and ours.chunks == 1
    for name, entry in ik.entries.items():
        assert ours.ncall(name) == entry.ncall == 1
        np.testing.assert_allclose(ours.weights(name), ik.weights(name), rtol=3e-3, err_msg=name)


def test_merge_in_files(llama, text, tmp_path, capsys):
    _, path = llama
    a, b = tmp_path / "a.dat", tmp_path / "b.gguf"
    base = ["imatrix", "-m", str(path), "-f", str(text), "-c", str(N_CTX), "--no-ppl"]
    assert main([*base, "--chunks", "1", "-o", str(a)]) == 0
    assert main([*base, "--chunks", "2", "--chunk", "1", "-o", str(b)]) == 0
    merged = tmp_path / "ab.dat"
    # -c: a .dat file does not record its tokens per call, the GGUF one has row counts
    assert main(["imatrix", "-m", str(path), "-c", str(N_CTX), "--in-file", str(a), "--in-file", str(b),
                 "-o", str(merged)]) == 0
    assert f"saving combined imatrix to '{merged}'" in capsys.readouterr().err
    whole = tmp_path / "whole.dat"
    assert main([*base, "--chunks", "3", "-o", str(whole)]) == 0
    m, w = read_imatrix_dat(merged), read_imatrix_dat(whole)
    assert m.chunks == w.chunks == 3 and sorted(m.entries) == sorted(w.entries)
    for name in w.entries:
        assert m.ncall(name) == 3
        np.testing.assert_allclose(m.weights(name), w.weights(name), rtol=1e-4)
    # continue from a file: the text's chunks add to it
    cont = tmp_path / "cont.dat"
    assert main([*base, "--chunks", "2", "--chunk", "1", "--in-file", str(a), "-o", str(cont)]) == 0
    c = read_imatrix_dat(cont)
    assert c.chunks == 3
    np.testing.assert_allclose(c.weights("blk.1.ffn_down.weight"), w.weights("blk.1.ffn_down.weight"), rtol=1e-4)


def test_bad_input(llama, text, tmp_path, capsys):
    _, path = llama
    short = tmp_path / "short.txt"
    short.write_text("Just a few words.", encoding="utf-8")
    out = tmp_path / "x.dat"
    cases = [
        (["-f", str(short)], "short.txt tokenizes to only"),
        (["-f", str(tmp_path / "missing.txt")], "no such text file"),
        ([], "no text: give the calibration text with -f"),
        (["-f", str(text), "--chunk", "500"], "not enough tokens left after removing 500 chunks"),
        (["-f", str(text), "-ofreq", "0"], "--output-frequency 0"),
        (["-f", str(text), "-ub", "8"], "no weight product saw 16 tokens or more"),
        (["-f", str(text), "--output-format", "csv"], None),
    ]
    for extra, message in cases:
        if message is None:
            with pytest.raises(SystemExit):
                main(["imatrix", "-m", str(path), "-c", str(N_CTX), *extra, "-o", str(out)])
            continue
        assert main(["imatrix", "-m", str(path), "-c", str(N_CTX), *extra, "-o", str(out)]) == 1
        assert message in capsys.readouterr().err, message
    assert not out.exists()
    # imatrices of another model: a size that does not fit, a tensor the model lacks, a model file
    wrong_size, wrong_name = tmp_path / "size.dat", tmp_path / "name.dat"
    write_imatrix_dat(wrong_size, [("blk.0.attn_q.weight", 1, np.ones(576, np.float32))], 1, "")
    write_imatrix_dat(wrong_name, [("blk.7.attn_q.weight", 1, np.ones(64, np.float32))], 1, "")
    for bad, message in [
        (wrong_size, "entry blk.0.attn_q.weight has 576 values where tensor blk.0.attn_q.weight [64, 64]"),
        (wrong_name, "entry blk.7.attn_q.weight names no tensor"),
        (path, "not a valid GGUF imatrix file"),
    ]:
        assert main(["imatrix", "-m", str(path), "-f", str(text), "-c", str(N_CTX), "--in-file", str(bad),
                     "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert message in err and "kiln imatrix: error:" in err, err
    assert not out.exists()


def test_output_frequency():
    saved = []

    class Recorder(ImatrixOutput):
        def save(self, stats, at_chunk=None):
            saved.append((stats.chunks, at_chunk))

    out = Recorder("x.dat", "dat", output_frequency=2, save_frequency=3)
    for k in range(1, 8):  # the final write after chunk 7 is the caller's
        out.after_chunk(SimpleNamespace(chunks=k), k, last=k == 7)
    assert saved == [(2, None), (3, 3), (4, None), (6, None), (6, 6)]
