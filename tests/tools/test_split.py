"""`kiln split`: llama-gguf-split's command line, plan lines and errors; kiln runs the shards.

Oracles: the plan lines llama-gguf-split --dry-run printed for SmolLM2 (recorded
below), the unsplit file's bytes and logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kiln.cli import main
from kiln.errors import OptionError
from kiln.gguf import GGUFWriter, ValueType
from kiln.runtime import Options
from kiln.runtime.engine import Engine
from kiln.tools.split_options import parse_size

# llama-gguf-split --dry-run SmolLM2-135M-Instruct.Q4_1.gguf (ik_llama.cpp, 2026-11-25)
IK_DRY_RUN = {
    ("--split-max-size", "40M"): [
        "n_split: 3",
        "split 00001: n_tensors = 39, total_size = 41M",
        "split 00002: n_tensors = 162, total_size = 39M",
        "split 00003: n_tensors = 71, total_size = 17M",
    ],
    ("--split-max-tensors", "100", "--no-tensor-first-split"): [
        "n_split: 4",
        "split 00001: n_tensors = 0, total_size = 1M",
        "split 00002: n_tensors = 100, total_size = 54M",
        "split 00003: n_tensors = 100, total_size = 24M",
        "split 00004: n_tensors = 72, total_size = 17M",
    ],
}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out.strip().splitlines(), out.err.strip().splitlines()


def _tiny_llama(path, seed=0):
    """A two-layer random llama in F32, written by hand (no transformers needed)."""
    rng = np.random.default_rng(seed)
    e, f, v = 32, 64, 50
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama")
        for key, value in [
            ("block_count", 2),
            ("context_length", 64),
            ("embedding_length", e),
            ("feed_forward_length", f),
            ("attention.head_count", 4),
            ("attention.head_count_kv", 2),
            ("rope.dimension_count", 8),
            ("vocab_size", v),
        ]:
            w.add(f"llama.{key}", value, ValueType.UINT32)
        w.add("llama.attention.layer_norm_rms_epsilon", 1e-5, ValueType.FLOAT32)

        def tensor(name, *shape):
            w.add_tensor(name, shape, 0, (rng.standard_normal(shape[::-1]) * 0.2).astype(np.float32))

        tensor("token_embd.weight", e, v)
        for i in range(2):
            tensor(f"blk.{i}.attn_norm.weight", e)
            tensor(f"blk.{i}.attn_q.weight", e, e)
            tensor(f"blk.{i}.attn_k.weight", e, 16)
            tensor(f"blk.{i}.attn_v.weight", e, 16)
            tensor(f"blk.{i}.attn_output.weight", e, e)
            tensor(f"blk.{i}.ffn_norm.weight", e)
            tensor(f"blk.{i}.ffn_gate.weight", e, f)
            tensor(f"blk.{i}.ffn_up.weight", e, f)
            tensor(f"blk.{i}.ffn_down.weight", f, e)
        tensor("output_norm.weight", e)
        tensor("output.weight", e, v)
    return path


@pytest.mark.parametrize("flags", list(IK_DRY_RUN))
def test_dry_run_prints_llama_gguf_splits_plan_and_writes_nothing(smollm2, tmp_path, capsys, flags):
    code, out, _ = _run(capsys, "split", "--dry-run", *flags, smollm2, tmp_path / "out")
    assert code == 0
    assert out == IK_DRY_RUN[flags]
    assert list(tmp_path.iterdir()) == []


def test_split_merge_round_trip_and_kiln_runs_the_shards(tmp_path, capsys):
    model = _tiny_llama(tmp_path / "m.gguf")
    code, out, _ = _run(capsys, "split", "--split-max-tensors", "8", model, tmp_path / "parts" / "m.gguf")
    assert code == 0
    shards = sorted((tmp_path / "parts").iterdir())
    assert [p.name for p in shards] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert out[0] == "n_split: 3" and out[-1] == "kiln split: 3 shards written with a total of 21 tensors."
    options = Options(ctx_size=16, cache_type_k="f32", cache_type_v="f32")
    tokens = [1, 7, 3, 49, 0, 12]
    whole, split = Engine.load(model, options), Engine.load(shards[0], options)
    try:
        assert torch.equal(whole.eval(tokens), split.eval(tokens))
    finally:
        whole.close()
        split.close()
    code, out, _ = _run(capsys, "split", "--merge", "--dry-run", shards[1], tmp_path / "merged.gguf")
    assert code == 0 and not (tmp_path / "merged.gguf").exists()
    assert out == [
        f"kiln split: would merge 3 splits with 21 tensors into {tmp_path / 'merged.gguf'} ({model.stat().st_size} bytes)."
    ]
    code, out, _ = _run(capsys, "split", "--merge", shards[0], tmp_path / "merged.gguf")
    assert code == 0 and "merged from 3 splits with 21 tensors" in out[-1]
    assert (tmp_path / "merged.gguf").read_bytes() == model.read_bytes()


def test_json_plan(tmp_path, capsys):
    model = _tiny_llama(tmp_path / "m.gguf")
    code, out, _ = _run(
        capsys, "split", "--json", "--dry-run", "--split-max-size", "1M", model, tmp_path / "s"
    )
    plan = json.loads("\n".join(out))
    assert code == 0 and plan["operation"] == "split"
    assert [s["path"] for s in plan["shards"]] == [str(tmp_path / "s-00001-of-00001.gguf")]
    assert not (tmp_path / "s-00001-of-00001.gguf").exists()
    assert _run(capsys, "split", "--split-max-size", "1M", model, tmp_path / "s")[0] == 0
    assert (tmp_path / "s-00001-of-00001.gguf").stat().st_size == plan["shards"][0]["size"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("500M", 500_000_000),
        ("50G", 50_000_000_000),
        ("1.5G", 1_500_000_000),
        ("2g", 2_000_000_000),
        ("750MB", 750_000_000),
    ],
)
def test_sizes_are_parsed_in_powers_of_ten(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["50", "50X", "-5G", "0M", "G", "5 T", "1e3M"])
def test_bad_sizes_are_named(text):
    with pytest.raises(OptionError, match=rf"--split-max-size '{text}': "):
        parse_size(text)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--split-max-size", "50X"], "--split-max-size '50X': give a size with its unit, like 500M or 50G"),
        (
            ["--split-max-size", "1G", "--split-max-tensors", "4"],
            "either --split-max-size or --split-max-tensors",
        ),
        (["--split-max-tensors", "0"], "--split-max-tensors 0: give a positive number"),
        (["--merge", "--split-max-size", "1G"], "apply to --split, not --merge"),
        (["--merge"], "m.gguf: not a split GGUF (no split.count key)"),
        (["--split-max-size", "1M", "--no-tensor-first-split"], None),
    ],
)
def test_bad_command_lines(tmp_path, capsys, argv, message):
    model = _tiny_llama(tmp_path / "m.gguf")
    code, _, err = _run(capsys, "split", *argv, model, tmp_path / "out")
    if message is None:  # a valid one, for contrast
        assert code == 0 and (tmp_path / "out-00002-of-00002.gguf").exists()
        return
    assert code == 1 and len(err) == 1
    assert err[0].startswith("kiln split: error: ") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]


def test_existing_outputs_and_missing_parts(tmp_path, capsys):
    model = _tiny_llama(tmp_path / "m.gguf")
    assert _run(capsys, "split", "--split-max-tensors", "10", model, tmp_path / "s")[0] == 0
    code, _, err = _run(capsys, "split", "--split-max-tensors", "10", model, tmp_path / "s")
    assert (
        code == 1
        and "s-00001-of-00003.gguf: already exists (and 2 more); remove it or pass --force" in err[0]
    )
    assert _run(capsys, "split", "--force", "--split-max-tensors", "10", model, tmp_path / "s")[0] == 0
    (tmp_path / "s-00003-of-00003.gguf").unlink()
    code, _, err = _run(
        capsys, "split", "--merge", tmp_path / "s-00001-of-00003.gguf", tmp_path / "merged.gguf"
    )
    assert code == 1 and "s-00003-of-00003.gguf: split file missing" in err[0]
    assert not (tmp_path / "merged.gguf").exists()
    code, _, err = _run(
        capsys, "split", "--split-max-tensors", "5", tmp_path / "s-00001-of-00003.gguf", tmp_path / "s"
    )
    assert code == 1 and "split file missing" in err[0]
