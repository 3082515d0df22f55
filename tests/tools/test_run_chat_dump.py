"""`kiln chat` with piped input, `kiln run -f`, and `kiln dump` against the PyPI gguf reader."""

from __future__ import annotations

import io
import json

import gguf as gguf_py

from kiln.cli import main
from kiln.runtime import Engine


def test_chat_two_turns_reuses_the_cache(smollm2, monkeypatch, capsys):
    evaluated = []
    real_eval = Engine.eval

    def counting_eval(self, tokens, seq=0, all_logits=True):
        evaluated.append(len(tokens))
        return real_eval(self, tokens, seq, all_logits)

    monkeypatch.setattr(Engine, "eval", counting_eval)
    monkeypatch.setattr("sys.stdin", io.StringIO("What is the capital of France?\nAnd of Italy?\n"))
    code = main(["chat", "-m", str(smollm2), "--temp", "0", "-n", "12", "-c", "512"])
    out = capsys.readouterr().out
    assert code == 0
    replies = [line for line in out.splitlines() if line.strip()]
    assert "Paris" in out and len(replies) >= 2
    # the second prompt is evaluated from where the first conversation's tokens end, not from 0
    prompts = [n for n in evaluated if n > 1]
    assert len(prompts) == 2 and prompts[1] < prompts[0] + 12


def test_run_prompt_from_file(smollm2, tmp_path, capsys):
    p = tmp_path / "prompt.txt"
    p.write_text("The capital of France is", encoding="utf-8")
    assert main(["run", "-m", str(smollm2), "-f", str(p), "-n", "2", "--temp", "0"]) == 0
    assert capsys.readouterr().out == " Paris.\n"


def test_dump_json_matches_gguf_package(smollm2, capsys):
    assert main(["dump", "--json", str(smollm2)]) == 0
    dumped = json.loads(capsys.readouterr().out)
    reader = gguf_py.GGUFReader(smollm2)
    assert [t["name"] for t in dumped["tensors"]] == [t.name for t in reader.tensors]
    for ours, theirs in zip(dumped["tensors"], reader.tensors, strict=True):
        assert ours["type"] == theirs.tensor_type.name
        assert ours["shape"] == [int(d) for d in theirs.shape]
        assert ours["bytes"] == int(theirs.n_bytes) and ours["offset"] == int(theirs.data_offset)
    assert dumped["metadata"]["llama.block_count"] == {"type": "UINT32", "value": 30}


def test_dump_text(smollm2, capsys):
    assert main(["dump", str(smollm2)]) == 0
    out = capsys.readouterr().out
    assert "GGUF v3, 33 key/value pairs, 272 tensors" in out
    assert "Q4_1       576x1536" in out and "blk.29.ffn_up.weight" in out
    assert 'tokenizer.ggml.pre = "smollm"' in out
