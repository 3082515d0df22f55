"""`kiln quantize`: the dry run's size is the written size, recipes give exactly their types,
the result runs like its dequantized self, imatrix metadata, streaming memory, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.cli import main
from kiln.gguf import GGUFFile
from kiln.runtime import Engine, Options
from tests.gguf_rewrite import rewrite_gguf
from tests.tiny_moe_models import make_tiny_moe_model

RECIPE = textwrap.dedent(r"""
    # IQ2_K_R4 recipe, model-card style
    # attention, the dense layer and the shared experts stay at 8 bits
    blk\..*\.attn_.*=q8_0
    blk\.0\.ffn_.*=q8_0
    blk\..*\.ffn_.*_shexp\.weight=q8_0

    # routed experts
    blk\..*\.ffn_down_exps\.weight=iq3_k_r4
    blk\..*\.ffn_(gate|up)_exps\.weight=iq2_k_r4

    token_embd\.weight=q8_0
    output\.weight=q8_0
""")


def dry_run(capsys, argv: list[str]) -> dict:
    assert main(["quantize", "--dry-run", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory) -> Path:
    """A tiny DeepSeek-V3 whose matrices have rows of 64..512 values, so k-quants fit most."""
    d = tmp_path_factory.mktemp("dsq")
    _, path = make_tiny_moe_model(
        "deepseek-v3", d, "f32", hidden_size=256, intermediate_size=512, moe_intermediate_size=256,
        q_lora_rank=64, kv_lora_rank=64, num_hidden_layers=3,
    )
    return path


@pytest.mark.parametrize(
    "flags",
    [
        ["Q4_K_M"],
        ["Q8_0", "--pure"],
        ["IQ4_KS"],
        ["Q6_K", "--custom-q", r"ffn_down=q4_0,attn_q=iq4_nl", "--output-tensor-type", "q8_0"],
        ["IQ2_K_R4", "--token-embedding-type", "Q4_K"],
    ],
    ids=lambda f: "_".join(f).replace("=", "").replace(",", "")[:40],
)
def test_dry_run_predicts_the_written_size(golden, tmp_path, capsys, flags):
    src = golden / "src.gguf"
    out = tmp_path / "out.gguf"
    plan = dry_run(capsys, [str(src), str(out), *flags])
    assert not out.exists()
    assert main(["quantize", *flags[1:], str(src), str(out), flags[0], "2"]) == 0
    capsys.readouterr()
    assert out.stat().st_size == plan["bytes"]
    with GGUFFile(out) as f:
        for t in plan["tensors"]:
            assert f.tensors[t["name"]].type_name == t["to"]


def test_recipe_gives_its_types_and_runs_like_its_dequantized_self(deepseek, tmp_path, capsys):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "ds-iq2_k_r4.gguf"
    plan = dry_run(capsys, [str(deepseek), str(out), "IQ2_K_R4", "--custom-q-file", str(recipe)])
    assert main(["quantize", str(deepseek), str(out), "IQ2_K_R4", "--custom-q-file", str(recipe)]) == 0
    capsys.readouterr()
    assert out.stat().st_size == plan["bytes"]
    with GGUFFile(out) as f:
        types = {name: t.type_name for name, t in f.tensors.items()}
        assert f.metadata["general.quantization_version"] == 2
    expected = {}
    for name in types:
        if name.endswith("_norm.weight") or name.endswith("ffn_gate_inp.weight") or name.endswith(".bias") \
                or "exp_probs_b" in name or len(f.tensors[name].shape) == 1:
            continue
        if "ffn_down_exps" in name:
            expected[name] = "IQ3_K_R4"
        elif "ffn_gate_exps" in name or "ffn_up_exps" in name:
            expected[name] = "IQ2_K_R4"
        else:
            expected[name] = "Q8_0"
    assert any(v == "IQ2_K_R4" for v in expected.values()) and any(v == "IQ3_K_R4" for v in expected.values())
    assert {n: types[n] for n in expected} == expected

    reference = rewrite_gguf(out, tmp_path / "dequantized.gguf", lambda name, values: (values, "F32"))
    tokens = list(range(3, 40))
    logits = []
    for path in (out, reference):
        engine = Engine.load(path, Options(ctx_size=64))
        logits.append(engine.eval(tokens))
        engine.close()
    scale = logits[1].abs().max()
    assert float((logits[0] - logits[1]).abs().max() / scale) < 1e-4
    # and the quantization did change the model (the comparison is not trivially equal)
    engine = Engine.load(deepseek, Options(ctx_size=64))
    f32_logits = engine.eval(tokens)
    engine.close()
    assert not torch.allclose(f32_logits, logits[0], rtol=1e-3, atol=1e-3)


def test_imatrix_metadata_and_rules(golden, tmp_path, capsys):
    src, imatrix = golden / "src.gguf", golden / "imatrix.dat"
    out = tmp_path / "iq2_xxs.gguf"
    assert main(["quantize", str(src), str(out), "IQ2_XXS", "--pure"]) == 1
    err = capsys.readouterr().err
    assert "needs an importance matrix" in err and "--imatrix" in err and not out.exists()
    assert main(["quantize", "--imatrix", str(imatrix), str(src), str(out), "IQ2_XXS", "--pure"]) == 0
    capsys.readouterr()
    with GGUFFile(out) as f:
        assert f.metadata["quantize.imatrix.file"] == str(imatrix)
        assert f.metadata["quantize.imatrix.entries_count"] > 0
        file_type = f.metadata["general.file_type"]
        got = {n: np.array(f.tensor_bytes(n)) for n, t in f.tensors.items() if t.type_name == "IQ2_XXS"}
    with GGUFFile(golden / "quant" / "IQ2_XXS.gguf") as g:  # ik_llama.cpp's own file, same flags
        assert file_type == g.metadata["general.file_type"]
        assert got and all(np.array_equal(b, np.array(g.tensor_bytes(n))) for n, b in got.items())


def test_bad_input(golden, tmp_path, capsys):
    src = golden / "src.gguf"
    out = tmp_path / "x.gguf"
    assert main(["quantize", str(src), str(out), "Q4_K_N"]) == 1
    assert "Q4_K_M" in capsys.readouterr().err  # did you mean
    assert main(["quantize", str(src), str(out), "Q4_0", "--custom-q", "attn_q=q9_9"]) == 1
    assert "unknown tensor type 'q9_9'" in capsys.readouterr().err
    assert main(["quantize", "--dry-run", str(src), str(out), "Q4_0", "--custom-q", r"nothing\.like\.this=q8_0"]) == 0
    assert r"nothing\.like\.this=Q8_0 matches no tensor" in capsys.readouterr().err
    out.write_bytes(b"keep me")
    assert main(["quantize", str(src), str(out), "Q4_0"]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["quantize", str(src), str(out), "Q4_0", "--force"]) == 0
    capsys.readouterr()
    assert main(["quantize", str(out), str(tmp_path / "y.gguf"), "Q8_0"]) == 1
    assert "--allow-requantize" in capsys.readouterr().err


def test_imatrix_with_wrong_columns(golden, tmp_path, capsys):
    from kiln.quants.imatrix import read_imatrix_dat

    m = read_imatrix_dat(golden / "imatrix.dat")
    name = next(n for n in m.entries if n != "token_embd.weight")  # ik ignores token_embd mismatches
    bad = tmp_path / "bad.dat"
    with open(bad, "wb") as f:  # one entry with half the columns, legacy layout
        values = m.entries[name].values[: len(m.entries[name].values) // 2]
        f.write(np.int32(1).tobytes() + np.int32(len(name)).tobytes() + name.encode())
        f.write(np.int32(1).tobytes() + np.int32(values.size).tobytes() + values.astype("<f4").tobytes())
    assert main(["quantize", "--imatrix", str(bad), str(golden / "src.gguf"), str(tmp_path / "o.gguf"), "IQ4_KS"]) == 1
    err = capsys.readouterr().err
    assert name in err and "computed for another model" in err


@pytest.mark.slow
def test_peak_memory_while_quantizing_a_1gb_model(tmp_path):
    """A 1 GiB f32 llama-shaped file quantized in a subprocess: peak RSS stays under 400 MB."""
    from kiln.gguf.constants import ValueType
    from kiln.gguf.writer import GGUFWriter

    src = tmp_path / "big.gguf"
    n_embd, n_ff, n_layer = 2048, 8192, 6
    rng = np.random.default_rng(0)
    with GGUFWriter(src) as w:
        w.add("general.architecture", "llama")
        w.add("llama.block_count", n_layer, ValueType.UINT32)
        w.add("llama.embedding_length", n_embd, ValueType.UINT32)
        w.add("llama.feed_forward_length", n_ff, ValueType.UINT32)
        w.add("llama.attention.head_count", 16, ValueType.UINT32)
        w.add("llama.attention.head_count_kv", 16, ValueType.UINT32)
        w.add("general.file_type", 0, ValueType.UINT32)
        for il in range(n_layer):
            for name in ("ffn_up", "ffn_gate", "ffn_down"):
                shape = (n_embd, n_ff) if name != "ffn_down" else (n_ff, n_embd)
                w.add_tensor(f"blk.{il}.{name}.weight", shape, 0,
                             lambda shape=shape: rng.standard_normal(shape[0] * shape[1], dtype=np.float32))
            w.add_tensor(f"blk.{il}.attn_v.weight", (n_embd, 256), 0,
                         lambda: rng.standard_normal(n_embd * 256, dtype=np.float32))
    assert src.stat().st_size > 1 << 30
    out = tmp_path / "big-q4_k.gguf"
    argv = ["--pure", str(src), str(out), "Q4_K_M", "2"]
    # Linux carries a process's peak RSS over fork and exec, so the quantizing process is started
    # from a small launcher (not from this big pytest process), which reads its peak with resource
    launcher = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run([sys.executable, '-m', 'kiln.cli', 'quantize', *sys.argv[1:]],"
        " stdout=subprocess.DEVNULL).returncode\n"
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(rc)\n"
    )
    # Numba compiles the Q4_K kernels once and caches them; LLVM's compilation takes a few hundred MB,
    # which is not what this test measures: a first run on a small file warms the cache
    small = tmp_path / "small.gguf"
    with GGUFWriter(small) as w:
        w.add("general.architecture", "llama")
        w.add("llama.block_count", 1, ValueType.UINT32)
        w.add("llama.attention.head_count", 1, ValueType.UINT32)
        w.add("general.file_type", 0, ValueType.UINT32)
        w.add_tensor("blk.0.attn_v.weight", (256, 32), 0, np.ones(256 * 32, np.float32))
    warm = ["--pure", str(small), str(tmp_path / "small-q.gguf"), "Q4_K_M", "2"]
    subprocess.run([sys.executable, "-c", launcher, *warm], capture_output=True, text=True, check=True)
    r = subprocess.run([sys.executable, "-c", launcher, *argv], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0, r.stderr[-2000:]
    peak_kib = int(r.stdout.rsplit("MAXRSS", 1)[1])
    assert peak_kib < 400 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"
    assert out.stat().st_size < src.stat().st_size / 5


def test_keep_split_and_repack(golden, tmp_path, capsys):
    from kiln.quants import repack

    src = golden / "src.gguf"
    assert main(["split", "--split-max-tensors", "5", str(src), str(tmp_path / "src")]) == 0
    parts = sorted(tmp_path.glob("src-*-of-*.gguf"))
    assert len(parts) == 3
    out = tmp_path / "q4k.gguf"
    assert main(["quantize", "--keep-split", "--pure", str(parts[0]), str(out), "Q4_K"]) == 0
    shards = sorted(tmp_path.glob("q4k-*-of-*.gguf"))
    assert [p.name for p in shards] == [f"q4k-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with GGUFFile(shards[0]) as f:  # opens the whole set
        assert len(f.tensors) == 12 and f.metadata["split.count"] == 3
    engine = Engine.load(shards[0], Options(ctx_size=32))
    assert engine.eval([1, 2, 3]).shape[0] == 3
    engine.close()
    single = tmp_path / "single.gguf"
    assert main(["quantize", "--pure", str(src), str(single), "Q4_K"]) == 0
    repacked = tmp_path / "r4.gguf"
    assert main(["quantize", "--repack", str(single), str(repacked)]) == 0
    capsys.readouterr()
    with GGUFFile(single) as a, GGUFFile(repacked) as b:
        for name, t in a.tensors.items():
            if t.type_name == "Q4_K" and name != "token_embd.weight":
                assert b.tensors[name].type_name == "Q4_K_R4"
                want = repack(np.array(a.tensor_bytes(name)), t.shape, "Q4_K", "Q4_K_R4")
                assert np.array_equal(np.array(b.tensor_bytes(name)), want)
            else:
                assert b.tensors[name].type_name == t.type_name


def test_gguf_imatrix_quantizes_like_the_dat_file(golden, tmp_path, capsys):
    from kiln.quants.imatrix_files import read_imatrix_stats, write_imatrix

    dat = golden / "imatrix.dat"
    gguf_imatrix = tmp_path / "imatrix.gguf"
    write_imatrix(gguf_imatrix, read_imatrix_stats(dat, 512), "gguf")
    outs = []
    for i, m in enumerate((dat, gguf_imatrix)):
        out = tmp_path / f"iq4_ks-{i}.gguf"
        assert main(["quantize", "--imatrix", str(m), str(golden / "src.gguf"), str(out), "IQ4_KS"]) == 0
        outs.append(out)
    capsys.readouterr()
    with GGUFFile(outs[0]) as a, GGUFFile(outs[1]) as b:
        for name in a.tensors:
            x, y = np.array(a.tensor_bytes(name)), np.array(b.tensor_bytes(name))
            assert np.array_equal(x, y)  # same per-column weights, so the same bytes
