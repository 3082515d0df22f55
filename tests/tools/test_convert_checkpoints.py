"""`kiln convert` on whole checkpoints: shards, --outtype q8_0, --split-max-size, memory.

Oracles: the single-file checkpoint's GGUF bytes (a sharded checkpoint must give the same
file), llama.cpp's own Q8_0 quantizer in the PyPI `gguf` package (each Q8_0 tensor's bytes),
the f32 file's logits, and `kiln split --merge` giving back the unsplit file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from kiln.errors import OptionError
from kiln.gguf import GGUFFile
from kiln.gguf.split import merge_split
from kiln.quants import dequantize
from kiln.runtime import Options
from kiln.runtime.engine import Engine
from kiln.tools import convert_cli
from kiln.tools.convert import convert
from tests.gguf_rewrite import rewrite_gguf
from tests.tiny_models import build_model, save_model
from tests.tiny_moe_models import build_moe_model, save_moe_model

gguf = pytest.importorskip("gguf")

F32, F16, Q8_0 = 0, 1, 8
TOKENS = [1, 17, 30, 2, 99, 45, 8, 63, 120, 5]


def _logits(path) -> torch.Tensor:
    e = Engine.load(path, Options(ctx_size=32, cache_type_k="f32", cache_type_v="f32"))
    try:
        return e.eval(TOKENS)
    finally:
        e.close()


def _values(f: GGUFFile, name: str) -> np.ndarray:
    info = f.tensors[name]
    return dequantize(info.type_id, np.array(f.tensor_bytes(name)), info.shape, name)


@pytest.mark.parametrize("family", ["llama", "qwen3moe"])
def test_sharded_checkpoint_gives_the_bytes_of_the_single_file(tmp_path, family):
    if family == "llama":
        model, save = build_model("llama"), lambda d, **kw: save_model(model, "llama", d, **kw)
    else:
        model, save = build_moe_model("qwen3moe"), lambda d, **kw: save_moe_model(model, "qwen3moe", d, **kw)
    one = save(tmp_path / "one" / "model")
    sharded = save(tmp_path / "sharded" / "model", max_shard_size="20KB")
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 3
    a = convert(one, tmp_path / "one.gguf", outtype="bf16")
    b = convert(sharded, tmp_path / "sharded.gguf", outtype="bf16")
    assert a.read_bytes() == b.read_bytes()


def test_q8_0_is_llama_cpps_q8_0_and_keeps_f32_where_llama_cpp_does(tmp_path):
    # intermediate 48: ffn_down's rows (48 values) do not fill Q8_0 blocks and fall back to F16
    hf = save_model(build_model("llama", {"intermediate_size": 48}), "llama", tmp_path / "hf")
    f32_path = convert(hf, tmp_path / "f32.gguf", outtype="f32")
    q8_path = convert(hf, tmp_path / "q8.gguf", outtype="q8_0")
    seen = set()
    with GGUFFile(f32_path) as ref, GGUFFile(q8_path) as q8:
        assert q8.metadata["general.file_type"] == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
        assert list(q8.tensors) == list(ref.tensors)
        for name, info in q8.tensors.items():
            values = _values(ref, name)
            raw = np.array(q8.tensor_bytes(name))
            if len(info.shape) == 1 or name.endswith("_norm.weight"):
                expected_type, expected = F32, values.astype(np.float32)
            elif info.shape[0] % 32:
                expected_type, expected = F16, values.astype(np.float16)
            else:
                expected_type = Q8_0
                expected = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            assert info.type_id == expected_type, name
            assert raw.tobytes() == expected.tobytes(), name
            seen.add(expected_type)
    assert seen == {F32, F16, Q8_0}
    # kiln runs the Q8_0 file as the same weights dequantized; the rounding of the weights moves
    # this random model's logits by a few percent
    dequantized = rewrite_gguf(q8_path, tmp_path / "dequantized.gguf", lambda name, v: (v, "F32"))
    ref, q8, deq = _logits(f32_path), _logits(q8_path), _logits(dequantized)
    assert (q8 - deq).norm() / deq.norm() < 1e-3
    assert 0.001 < (q8 - ref).norm() / ref.norm() < 0.05


def test_q8_0_of_a_moe_model(tmp_path):
    # F32 where an f16 conversion keeps F32 (router, norms, biases), Q8_0 (experts stacked) elsewhere
    hf = save_moe_model(build_moe_model("deepseek-v3"), "deepseek-v3", tmp_path / "hf")
    paths = {t: convert(hf, tmp_path / f"{t}.gguf", outtype=t) for t in ("f32", "f16", "q8_0")}
    with GGUFFile(paths["f32"]) as ref, GGUFFile(paths["f16"]) as f16, GGUFFile(paths["q8_0"]) as q8:
        assert list(q8.tensors) == list(ref.tensors)
        assert q8.tensors["blk.1.ffn_gate_inp.weight"].type_id == F32
        assert q8.tensors["blk.1.ffn_down_exps.weight"].type_id == Q8_0
        for name, info in q8.tensors.items():
            values = _values(ref, name)
            if f16.tensors[name].type_id == F32:
                expected_type, expected = F32, values
            elif info.shape[0] % 32:
                expected_type, expected = F16, values.astype(np.float16)
            else:
                expected_type = Q8_0
                expected = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            assert info.type_id == expected_type, name
            assert np.array(q8.tensor_bytes(name)).tobytes() == expected.tobytes(), name


def test_split_max_size_writes_shards_that_load_and_merge_back(tmp_path):
    hf = save_model(build_model("llama"), "llama", tmp_path / "hf")
    whole = convert(hf, tmp_path / "whole.gguf", outtype="f32")
    first = convert(hf, tmp_path / "split.gguf", outtype="f32", split_max_size=200_000)
    shards = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert first == shards[0] and len(shards) >= 3
    assert not (tmp_path / "split.gguf").exists()
    assert torch.equal(_logits(first), _logits(whole))
    merge_split(first, tmp_path / "merged.gguf")
    assert (tmp_path / "merged.gguf").read_bytes() == whole.read_bytes()
    # a model that fits in one shard is one plain file
    single = convert(hf, tmp_path / "single.gguf", outtype="f32", split_max_size=10**9)
    assert single == tmp_path / "single.gguf" and single.read_bytes() == whole.read_bytes()


def _cli(argv):
    parser = argparse.ArgumentParser()
    convert_cli.add_arguments(parser, None)
    args = parser.parse_args(argv)
    options = Options(inputs=args.inputs, outtype=args.outtype, mla_convention=args.mla_convention)
    return convert_cli.main(options, args)


def test_cli_flags(tmp_path, capsys):
    hf = save_model(build_model("llama"), "llama", tmp_path / "hf")
    with pytest.raises(OptionError, match="--split-max-size '200K': give a size with its unit"):
        _cli([str(hf), str(tmp_path / "x.gguf"), "--split-max-size", "200K"])
    assert _cli([str(hf), str(tmp_path / "x.gguf"), "--outtype", "q8_0", "--split-max-size", "1M"]) == 0
    assert "wrote" in capsys.readouterr().out
    with GGUFFile(tmp_path / "x.gguf") as f:
        assert f.tensors["blk.0.attn_q.weight"].type_id == Q8_0


MEMORY_PROBE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from kiln.tools.convert import convert

    def status(key):  # kB
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key + ":"))
        return int(line.split()[1])

    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    before = status("VmRSS")
    convert(sys.argv[1], sys.argv[2], outtype="f16")
    print(before, status("VmHWM"))
    """
)


def _big_llama_checkpoint(
    hf_dir, hidden=1024, intermediate=4096, layers=4, heads=16, kv_heads=4, head_dim=64
):
    """The tiny llama's config and tokenizer with large random weights, in three safetensors shards."""
    from safetensors.torch import save_file

    save_model(build_model("llama"), "llama", hf_dir)
    (hf_dir / "model.safetensors").unlink()
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
    )
    (hf_dir / "config.json").write_text(json.dumps(config))
    vocab = config["vocab_size"]
    shapes = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
            p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": (intermediate, hidden),
            p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
        }
    g = torch.Generator().manual_seed(0)
    names = list(shapes)
    weight_map = {}
    for k, part in enumerate(np.array_split(np.arange(len(names)), 3)):
        file = f"model-{k + 1:05d}-of-00003.safetensors"
        save_file({names[i]: torch.randn(shapes[names[i]], generator=g) * 0.02 for i in part}, hf_dir / file)
        weight_map |= {names[i]: file for i in part}
    (hf_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return hf_dir


@pytest.mark.slow
def test_peak_memory_is_about_one_tensor_not_the_model(tmp_path):
    hf = _big_llama_checkpoint(tmp_path / "hf")
    checkpoint = sum(p.stat().st_size for p in hf.glob("*.safetensors"))
    assert checkpoint > 240e6  # f32; its largest tensors hold 17 MB
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(hf), str(tmp_path / "out.gguf")],
        capture_output=True,
        text=True,
        check=True,
    )
    before_kb, peak_kb = map(int, probe.stdout.split())
    growth = (peak_kb - before_kb) * 1024
    assert growth < 100e6, (
        f"converting a {checkpoint / 1e6:.0f} MB checkpoint grew the process by {growth / 1e6:.0f} MB"
    )
    assert (tmp_path / "out.gguf").stat().st_size > checkpoint / 2 - 1e6
