"""Bad input on the command line: one line naming the file or tensor and the fix, exit 1, no traceback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kiln.cli import main
from kiln.gguf import GGUFWriter, ValueType


def _run(capsys, *argv):
    code = main(list(argv))
    # log lines of a model that did load (the KV cache size) are not part of the error
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("llama_")]
    return code, err


def _model(path, arch="llama"):
    with GGUFWriter(path) as w:
        w.add("general.architecture", arch)
        w.add(f"{arch}.block_count", 1, ValueType.UINT32)
        w.add(f"{arch}.context_length", 64, ValueType.UINT32)
        w.add(f"{arch}.embedding_length", 32, ValueType.UINT32)
        w.add(f"{arch}.attention.head_count", 2, ValueType.UINT32)
        w.add_tensor("token_embd.weight", (32, 4), 0, np.zeros((4, 32), np.float32))
    return path


def test_missing_file(tmp_path, capsys):
    code, err = _run(capsys, "run", "-m", str(tmp_path / "none.gguf"), "-p", "x")
    assert code == 1 and len(err) == 1
    assert "none.gguf: no such file" in err[0]


def test_not_gguf(tmp_path, capsys):
    p = tmp_path / "model.bin"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    code, err = _run(capsys, "run", "-m", str(p), "-p", "x")
    assert code == 1 and len(err) == 1
    assert "model.bin: not a GGUF file" in err[0] and "kiln convert" in err[0]


def test_truncated_header(tmp_path, capsys):
    p = _model(tmp_path / "m.gguf")
    (tmp_path / "t.gguf").write_bytes(p.read_bytes()[:100])
    code, err = _run(capsys, "dump", str(tmp_path / "t.gguf"))
    assert code == 1 and len(err) == 1 and "t.gguf: truncated GGUF header" in err[0]


def test_tensor_past_end(tmp_path, capsys):
    p = _model(tmp_path / "m.gguf")
    (tmp_path / "short.gguf").write_bytes(p.read_bytes()[:-64])
    code, err = _run(capsys, "run", "-m", str(tmp_path / "short.gguf"), "-p", "x")
    assert code == 1 and len(err) == 1
    assert "tensor token_embd.weight" in err[0] and "past the end of the file" in err[0] and "download it again" in err[0]


def test_split_part_missing(tmp_path, capsys):
    for no in (1, 3):
        _model(tmp_path / f"big-{no:05d}-of-00003.gguf")
    code, err = _run(capsys, "run", "-m", str(tmp_path / "big-00001-of-00003.gguf"), "-p", "x")
    assert code == 1 and len(err) == 1
    assert "big-00002-of-00003.gguf: split file missing" in err[0]


def test_unknown_architecture(tmp_path, capsys):
    p = _model(tmp_path / "m.gguf", arch="mamba9")
    code, err = _run(capsys, "run", "-m", str(p), "-p", "x")
    assert code == 1 and len(err) == 1
    assert "unknown architecture 'mamba9'" in err[0] and "llama" in err[0]


def test_bad_flag_value(capsys):
    code, err = _run(capsys, "run", "-ctk", "q9_0", "-p", "x")
    assert code == 1 and len(err) == 1 and "-ctk q9_0" in err[0] and "f16" in err[0]


def test_prompt_longer_than_context(smollm2, capsys):
    code, err = _run(capsys, "run", "-m", str(smollm2), "-c", "8", "-p", "one two three four five six seven eight nine ten")
    assert code == 1 and len(err) == 1
    assert "context of 8" in err[0] and "raise -c" in err[0]


def test_no_traceback_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "kiln.cli", "run", "-m", str(tmp_path / "gone.gguf"), "-p", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "gone.gguf: no such file" in proc.stderr


@pytest.mark.parametrize("flags", [["-ngl", "99", "-fmoe", "-fa", "-mla", "3"], ["-ot", "exps=CPU", "-amb", "512"]])
def test_ik_flags_accepted(flags):
    from kiln.cli import parse_options

    command, options = parse_options(["run", "-p", "x", *flags])
    assert command == "run" and options.ignored_flags()


def test_dash_values_and_cpu_flags_parse():
    from kiln.cli import parse_options

    _, options = parse_options(["run", "-p", "x", "-ser", "-1,0", "-rtr", "--numa", "isolate", "-t", "3", "-tb", "5"])
    assert options.ser_values() == (-1, 0.0)
    assert options.run_time_repack and options.numa == "isolate"
    assert (options.threads, options.threads_batch) == (3, 5)
    assert options.ignored_flags() == []
    _, options = parse_options(["perplexity", "-ser", "6,0.5", "-f", "x.txt"])
    assert options.ser_values() == (6, 0.5)
