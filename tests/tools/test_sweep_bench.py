"""`kiln sweep-bench`: the header line and table against ik_llama.cpp's llama-sweep-bench
(output recorded by running it on the default model), the cache filling chunk by chunk (a
clock that counts evaluated tokens gives the exact T and S columns), JSON, and bad input."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from kiln.cli import main
from kiln.tools import sweep_bench
from kiln.tools.sweep_bench_format import SweepSettings, header_line, table_header, table_row
from kiln.tools.sweep_bench_run import SweepRow, run_sweep, sweep_config

# llama-sweep-bench -m SmolLM2-135M-Instruct.Q4_1.gguf -c 512 -ub 128 -t 2 (printed on its stderr)
IK_OUTPUT = """\

main: n_kv_max = 512, n_batch = 2048, n_ubatch = 128, flash_attn = 1, n_gpu_layers = -1, n_threads = 2, n_threads_batch = 2

|    PP |     TG |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |
|-------|--------|--------|----------|----------|----------|----------|
|   128 |     32 |      0 |    0.184 |   694.81 |    0.234 |   136.85 |
|   128 |     32 |    128 |    0.169 |   758.91 |    0.233 |   137.53 |
|   128 |     32 |    256 |    0.280 |   457.33 |    0.230 |   139.31 |
|   128 |     32 |    384 |    0.253 |   505.88 |    0.285 |   112.44 |
""".splitlines()


class FakeEngine:
    """Records the cache depth at each call; evaluates nothing."""

    def __init__(self, n_ctx: int = 4096):
        self.n_ctx, self.n_past, self.evaluated = n_ctx, 0, 0
        self.hparams = SimpleNamespace(n_vocab=50)
        self.calls: list[tuple[int, int]] = []  # (n_past before, number of tokens)
        self.closed = False

    def eval(self, tokens, seq=0, all_logits=True):
        assert self.n_past + len(tokens) <= self.n_ctx
        self.calls.append((self.n_past, len(tokens)))
        self.n_past += len(tokens)
        self.evaluated += len(tokens)

    def reset(self, seq=0):
        self.n_past = 0

    def truncate(self, n, seq=0):
        assert n <= self.n_past
        self.n_past = n

    def close(self):
        self.closed = True


def test_header_and_rows_have_llama_sweep_benchs_format():
    s = SweepSettings(512, 2048, 128, 1, -1, 2, 2)
    assert header_line(s) == IK_OUTPUT[1]
    assert table_header().splitlines() == IK_OUTPUT[3:5]
    ik_row = IK_OUTPUT[5]
    row = table_row(SweepRow(128, 32, 0, 0.184, 0.234))
    assert row.split("|")[1:4] == ik_row.split("|")[1:4]
    assert [i for i, c in enumerate(row) if c in "|."] == [i for i, c in enumerate(ik_row) if c in "|."]
    assert row.split("|")[4:8] == ["    0.184 ", "   695.65 ", "    0.234 ", "   136.75 "]


def test_the_cache_fills_chunk_by_chunk_and_the_times_are_the_clocks():
    engine = FakeEngine()
    cfg = sweep_config(n_ctx=100, n_batch=16, n_ubatch=24, n_predict=-1)  # TG = 24 / 4; 100 // 24 = 4 rows
    rows = list(run_sweep(engine, cfg, 50, bos=1, clock=lambda: float(engine.evaluated)))
    assert [r.n_kv for r in rows] == [0, 24, 48, 72]
    assert all((r.pp, r.tg, r.t_pp, r.t_tg, r.speed_pp, r.speed_tg) == (24, 6, 24.0, 6.0, 1.0, 1.0) for r in rows)
    calls = engine.calls[1:]  # after the one-token warm-up
    assert engine.calls[0] == (0, 1)
    for i, n_kv in enumerate([0, 24, 48, 72]):
        step = calls[i * 8 : (i + 1) * 8]  # 6 generated tokens, then the prompt in -b chunks of 16 + 8
        assert step == [(n_kv + j, 1) for j in range(6)] + [(n_kv, 16), (n_kv + 16, 8)]


def test_stride_and_repetitions():
    engine = FakeEngine()
    cfg = sweep_config(n_ctx=64, n_batch=64, n_ubatch=8, n_predict=2, n_rep=3, stride=3)
    rows = list(run_sweep(engine, cfg, 50, bos=1, clock=lambda: float(engine.evaluated)))
    assert [r.n_kv for r in rows] == [0, 24, 48]
    assert [(r.t_pp, r.t_tg) for r in rows] == [(8.0, 2.0)] * 3  # the first row's 3 repetitions averaged
    assert engine.n_past == 64


def test_fake_timer_table_on_the_default_model(smollm2, monkeypatch, capsys):
    clock = iter(float(i) * 0.25 for i in range(10_000))
    monkeypatch.setattr(sweep_bench, "CLOCK", lambda: next(clock))
    assert main(["sweep-bench", "-m", str(smollm2), "-c", "48", "-ub", "16", "-n", "2", "-t", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "",
        "main: n_kv_max = 48, n_batch = 2048, n_ubatch = 16, flash_attn = 1, n_gpu_layers = 0, n_threads = 2, n_threads_batch = 2",
        "",
        *IK_OUTPUT[3:5],
        "|    16 |      2 |      0 |    0.250 |    64.00 |    0.250 |     8.00 |",
        "|    16 |      2 |     16 |    0.250 |    64.00 |    0.250 |     8.00 |",
        "|    16 |      2 |     32 |    0.250 |    64.00 |    0.250 |     8.00 |",
    ]


@pytest.fixture
def fake_engines(monkeypatch) -> list[FakeEngine]:
    """sweep_bench.main loads FakeEngines (of the -c context) and times with a clock that counts
    the tokens they evaluated."""
    engines: list[FakeEngine] = []

    def load(options):
        engines.append(FakeEngine(options.ctx_size))
        return engines[-1], SimpleNamespace(bos_id=1)

    monkeypatch.setattr(sweep_bench, "load_engine", load)
    monkeypatch.setattr(sweep_bench, "CLOCK", lambda: float(sum(e.evaluated for e in engines)))
    return engines


@pytest.mark.parametrize("fmt", ["--json", "jsonl"])
def test_json_outputs(fmt, fake_engines, capsys):
    argv = ["sweep-bench", "-c", "40", "-ub", "8", "-t", "2"] + (["--json"] if fmt == "--json" else ["--output-format", "jsonl"])
    assert main(argv) == 0
    out = capsys.readouterr().out
    if fmt == "--json":
        doc = json.loads(out)
        assert (doc["n_kv_max"], doc["n_ubatch"], doc["n_threads"]) == (40, 8, 2)
        rows = doc["rows"]
    else:
        rows = [json.loads(line) for line in out.splitlines()]
        assert all(r["n_kv_max"] == 40 and r["n_threads_batch"] == 2 for r in rows)
    assert [r["n_kv"] for r in rows] == [0, 8, 16, 24, 32]
    assert all((r["pp"], r["tg"], r["t_pp"], r["speed_pp"], r["t_tg"], r["speed_tg"]) == (8, 2, 8.0, 1.0, 2.0, 1.0)
               for r in rows)
    assert fake_engines[0].closed


def test_plot_reads_the_json_and_the_table(tmp_path, fake_engines, capsys):
    from kiln.tools.plot_sweep_data import read_sweep_file

    for fmt, name in ((["--json"], "run.json"), ([], "run.md")):
        assert main(["sweep-bench", "-c", "32", "-ub", "8", *fmt]) == 0
        (tmp_path / name).write_text(capsys.readouterr().out)
        run = read_sweep_file(tmp_path / name)
        assert run.n_kv == [0, 8, 16, 24] and run.speed_pp == [1.0] * 4


@pytest.mark.parametrize(("argv", "message"), [
    (["-c", "256", "-ub", "512"], "-c 256 is smaller than -ub 512"),
    (["-c", "64", "-ub", "2"], "-ub 2 leaves no tokens to generate"),
    (["-c", "64", "-ub", "16", "-nrep", "0"], "-nrep and --sweep-stride must be at least 1"),
    (["-c", "64", "--output-format", "xml"], "--output-format xml: use md or jsonl"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(["sweep-bench", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kiln sweep-bench: error: ") and message in err


def test_the_row_format_is_llama_sweep_benchs_for_large_figures():
    out = io.StringIO()
    sweep_bench.write(out, "md", SweepSettings(65536, 4096, 4096, 1, 99, 32, 32), "m",
                      [SweepRow(4096, 1024, 61440, 12.3456, 98.7654)])
    assert out.getvalue().splitlines()[-1] == "|  4096 |   1024 |  61440 |   12.346 |   331.78 |   98.765 |    10.37 |"
