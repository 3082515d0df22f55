"""`kiln perplexity`: the reference figures of the default model, the KL-divergence base file
(format, round trip, ik_llama.cpp's packing), KLD against an independent numpy computation,
and the errors."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
import torch

from kiln.cli import main
from kiln.runtime import Engine, Options
from kiln.tools.perplexity_kld_file import read_kld_base
from kiln.tools.perplexity_stats import pack_log_probs, packed_row_length, unpack_log_probs
from tests.conftest import WIKI, reference_value
from tests.gguf_rewrite import requantize_matrices, rewrite_gguf
from tests.tiny_models import make_tiny_model

N_CTX = 64


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny llama in f32, the same model with its matrices in Q4_0, and a text for them."""
    d = tmp_path_factory.mktemp("ppl")
    _, f32 = make_tiny_model("llama", d)
    q4 = requantize_matrices(f32, d / "llama-q4_0.gguf", "Q4_0")
    text = d / "text.txt"
    text.write_text(WIKI.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    return f32, q4, text


def chunk_logits(model, tokens: np.ndarray, n_chunk: int) -> torch.Tensor:
    """Logits of the scored positions of each chunk, straight from the engine (no tool code);
    the chunk's first token becomes BOS, as llama-perplexity does for models that add one."""
    engine = Engine.load(model, Options(ctx_size=N_CTX))
    bos = engine.metadata["tokenizer.ggml.bos_token_id"]
    assert engine.metadata["tokenizer.ggml.add_bos_token"]
    rows = []
    for i in range(n_chunk):
        engine.reset(0)
        logits = engine.eval([bos] + [int(t) for t in tokens[i * N_CTX + 1 : (i + 1) * N_CTX]])
        rows.append(logits[N_CTX // 2 : N_CTX - 1])
    engine.close()
    return torch.cat(rows)


@pytest.mark.slow
def test_default_model_matches_the_exact_math_reference(smollm2, capsys):
    expected = [float(v) for v in re.findall(r"\[\d+\]([\d.]+)", reference_value("ppl_first20"))][:10]
    result = run_json(capsys, ["perplexity", "-f", str(WIKI), "-c", "512", "--chunks", "10", "--json"])
    assert result["n_chunk"] == 10
    assert result["n_chunk_max"] == 589  # the reference's chunk count for the whole file
    for got, want in zip(result["chunks"], expected, strict=True):
        assert abs(got / want - 1) < 0.003


@pytest.mark.slow
def test_generation_kernels_keep_the_exact_math_perplexity(smollm2, capsys):
    """-ub 8: every product takes the generation kernels (16-bit activations), attention the
    flash-style kernel; the figures stay on the exact-math reference (issue 8: within 0.3%)."""
    expected = [float(v) for v in re.findall(r"\[\d+\]([\d.]+)", reference_value("ppl_first20"))][:2]
    result = run_json(capsys, ["perplexity", "-f", str(WIKI), "-c", "512", "-b", "512", "-ub", "8",
                               "--chunks", "2", "--json"])
    for got, want in zip(result["chunks"], expected, strict=True):
        assert abs(got / want - 1) < 0.003


def test_progress_and_final_estimate_lines(tiny, capsys):
    f32, _, text = tiny
    assert main(["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"\[1\][\d.]+,\[2\][\d.]+,\[3\][\d.]+,", out[0])
    assert re.fullmatch(rf"Final estimate: PPL over 3 chunks for n_ctx={N_CTX} = [\d.]+ \+/- [\d.]+", out[1])


def test_perplexity_equals_numpy_on_the_engines_logits(tiny, capsys):
    f32, _, text = tiny
    result = run_json(capsys, ["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "4", "--json"])
    from kiln.tokenizer import Tokenizer

    engine = Engine.load(f32, Options(ctx_size=N_CTX))
    tokens = np.array(Tokenizer.from_metadata(engine.metadata).encode(text.read_text(encoding="utf-8")))
    engine.close()
    logits = chunk_logits(f32, tokens, 4).double().numpy()
    targets = np.concatenate([tokens[i * N_CTX + N_CTX // 2 + 1 : (i + 1) * N_CTX] for i in range(4)])
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    nll = lse - logits[np.arange(len(targets)), targets]
    assert result["ppl"] == pytest.approx(float(np.exp(nll.mean())), rel=1e-5)
    sd = np.sqrt((np.mean(nll**2) - nll.mean() ** 2) / (nll.size - 1))
    assert result["ppl_err"] == pytest.approx(float(np.exp(nll.mean()) * sd), rel=1e-4)


def test_base_file_layout(tiny, tmp_path, capsys):
    f32, _, text = tiny
    base = tmp_path / "base.kld"
    assert main(["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "2",
                 "--kl-divergence-base", str(base)]) == 0
    capsys.readouterr()
    raw = base.read_bytes()
    magic, n_ctx, n_vocab, n_chunk = struct.unpack_from("<8sIii", raw)
    assert (magic, n_ctx, n_chunk) == (b"_logits_", N_CTX, 2)
    rows = N_CTX - 1 - N_CTX // 2
    nv = 2 * ((n_vocab + 1) // 2) + 4
    assert len(raw) == 20 + 4 * n_chunk * n_ctx + 2 * n_chunk * rows * nv
    tokens = np.frombuffer(raw, dtype="<i4", count=n_chunk * n_ctx, offset=20)
    packed = np.frombuffer(raw, dtype="<u2", offset=20 + 4 * n_chunk * n_ctx).reshape(n_chunk * rows, nv)
    logits = chunk_logits(f32, tokens, 2).double().numpy()
    exact = logits - (np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1))[:, None]
    header = packed[:, :4].copy().view(np.float32)
    scale, min_log_prob = header[:, 0], header[:, 1]
    assert np.allclose(scale, (exact.max(1) - np.maximum(exact.min(1), exact.max(1) - 24)) / 65535, rtol=1e-4)
    decoded = scale[:, None] * packed[:, 4 : 4 + n_vocab] + min_log_prob[:, None]
    kept = exact > min_log_prob[:, None] + 1e-3
    assert np.abs(decoded - exact)[kept].max() <= 0.51 * scale.max() + 1e-5


def test_packing_round_trip_on_awkward_rows():
    g = torch.Generator().manual_seed(5)
    for n_vocab in (7, 50, 1001):
        logits = torch.randn(5, n_vocab, generator=g) * 8
        logits[1] = 0.5  # a flat row: scale 0
        packed = pack_log_probs(logits)
        assert packed.shape == (5, packed_row_length(n_vocab))
        back = unpack_log_probs(packed, n_vocab).double()
        exact = torch.log_softmax(logits.double(), dim=-1)
        kept = exact > exact.max(dim=-1, keepdim=True).values - 24
        assert (back - exact).abs()[kept].max() < 24 / 65535
        assert torch.allclose(back[1], exact[1], atol=1e-6)


def test_kld_of_a_model_against_itself_is_zero(tiny, tmp_path, capsys):
    f32, _, text = tiny
    base = tmp_path / "self.kld"
    assert main(["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "5",
                 "--kl-divergence-base", str(base)]) == 0
    capsys.readouterr()
    r = run_json(capsys, ["perplexity", "-m", str(f32), "--kl-divergence-base", str(base), "--kl-divergence", "--json"])
    assert r["n_tokens_scored"] == 5 * (N_CTX - 1 - N_CTX // 2)
    assert abs(r["kld"]["mean"]) < 1e-5
    assert r["same_top"] == 1.0
    assert r["ppl"] == pytest.approx(r["ppl_base"], rel=1e-4)


def test_kld_of_two_quantizations_equals_numpy(tiny, tmp_path, capsys):
    f32, q4, text = tiny
    base = tmp_path / "f32.kld"
    assert main(["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "5",
                 "--kl-divergence-base", str(base)]) == 0
    capsys.readouterr()
    assert main(["perplexity", "-m", str(q4), "--kl-divergence-base", str(base), "--kl-divergence"]) == 0
    printed = capsys.readouterr().out
    assert "====== KL divergence statistics ======" in printed and "Same top p:" in printed
    r = run_json(capsys, ["perplexity", "-m", str(q4), "--kl-divergence-base", str(base), "--kl-divergence", "--json"])
    tokens = read_kld_base(base).tokens
    p = torch.log_softmax(chunk_logits(f32, tokens, 5).double(), -1).numpy()
    q = torch.log_softmax(chunk_logits(q4, tokens, 5).double(), -1).numpy()
    kld = (np.exp(p) * (p - q)).sum(1)
    assert kld.mean() > 1e-4  # Q4_0 really differs
    assert r["kld"]["mean"] == pytest.approx(float(kld.mean()), rel=0.02)
    assert r["kld"]["Maximum"] == pytest.approx(float(kld.max()), rel=0.02)
    assert r["kld"]["Median"] == pytest.approx(float(np.median(kld)), rel=0.05, abs=1e-5)
    assert r["same_top"] == pytest.approx(float((p.argmax(1) == q.argmax(1)).mean()), abs=1.5 / len(kld))
    targets = np.concatenate([tokens[i * N_CTX + N_CTX // 2 + 1 : (i + 1) * N_CTX] for i in range(5)])
    p_diff = np.exp(q[np.arange(len(targets)), targets]) - np.exp(p[np.arange(len(targets)), targets])
    assert r["p_diff"]["rms"] == pytest.approx(float(np.sqrt((p_diff**2).mean())), rel=0.01)


def test_text_shorter_than_two_chunks(tiny, tmp_path, capsys):
    f32, _, _ = tiny
    short = tmp_path / "short.txt"
    short.write_text("Just a few words.", encoding="utf-8")
    assert main(["perplexity", "-m", str(f32), "-f", str(short), "-c", str(N_CTX)]) == 1
    err = capsys.readouterr().err
    assert "tokenizes to only" in err and f"needs at least {2 * N_CTX}" in err


def test_base_file_from_another_vocabulary(tiny, tmp_path, capsys):
    f32, _, text = tiny
    _, qwen = make_tiny_model("qwen2", tmp_path)
    base = tmp_path / "qwen.kld"
    assert main(["perplexity", "-m", str(qwen), "-f", str(text), "-c", str(N_CTX), "--chunks", "2",
                 "--kl-divergence-base", str(base)]) == 0
    capsys.readouterr()
    assert main(["perplexity", "-m", str(f32), "--kl-divergence-base", str(base), "--kl-divergence"]) == 1
    assert "vocabulary of" in capsys.readouterr().err


def test_bad_base_files(tiny, tmp_path, capsys):
    f32, _, text = tiny
    not_logits = tmp_path / "x.kld"
    not_logits.write_bytes(b"GGUF" + b"\0" * 64)
    assert main(["perplexity", "-m", str(f32), "--kl-divergence-base", str(not_logits), "--kl-divergence"]) == 1
    assert "does not look like a file of log-probabilities" in capsys.readouterr().err
    base = tmp_path / "cut.kld"
    assert main(["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "2",
                 "--kl-divergence-base", str(base)]) == 0
    base.write_bytes(base.read_bytes()[:-100])
    capsys.readouterr()
    assert main(["perplexity", "-m", str(f32), "--kl-divergence-base", str(base), "--kl-divergence"]) == 1
    assert "truncated" in capsys.readouterr().err
    assert main(["perplexity", "-m", str(f32), "--kl-divergence"]) == 1
    assert "needs --kl-divergence-base" in capsys.readouterr().err


def test_nan_is_reported_with_chunk_and_layer(tiny, tmp_path, capsys):
    f32, _, text = tiny

    def poison(name, values):
        if name == "blk.1.attn_norm.weight":
            return np.full_like(values, np.inf), "F32"
        return None

    bad = rewrite_gguf(f32, tmp_path / "nan.gguf", poison)
    assert main(["perplexity", "-m", str(bad), "-f", str(text), "-c", str(N_CTX), "--chunks", "2"]) == 1
    err = capsys.readouterr().err
    assert "chunk 1" in err and "layer 1" in err


def test_interrupted_base_file_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    f32, _, text = tiny
    base = tmp_path / "never.kld"
    import kiln.tools.perplexity as tool

    def fail(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tool, "token_nll", fail)
    assert main(["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--kl-divergence-base", str(base)]) == 130
    assert list(tmp_path.iterdir()) == []


def test_chunks_batched_together_give_the_same_figures(tiny, capsys):
    f32, _, text = tiny
    base = ["perplexity", "-m", str(f32), "-f", str(text), "-c", str(N_CTX), "--chunks", "5", "--json"]
    one = run_json(capsys, [*base, "-b", str(N_CTX)])
    fused = run_json(capsys, [*base, "-b", str(4 * N_CTX), "-ub", str(4 * N_CTX)])  # 4 chunks per forward pass
    assert fused["chunks"] == pytest.approx(one["chunks"], rel=1e-5)
    assert main([*base, "-b", str(N_CTX + 3)]) == 1
    assert "multiple" in capsys.readouterr().err
