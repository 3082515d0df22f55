"""`kiln bench`: the table, CSV and JSON against ik_llama.cpp's llama-bench (output recorded by
running it on the default model), every combination of the comma lists, the timed window of
each test (driven by a clock that counts the tokens the engine evaluated), and bad input."""

from __future__ import annotations

import csv
import io
import itertools
import json
from types import SimpleNamespace

import pytest

from kiln.cli import main
from kiln.tools import bench
from kiln.tools.bench_info import model_info, size_label
from kiln.tools.bench_params import expand, parse_params
from kiln.tools.bench_table import FIELDS, MarkdownPrinter, Result, values

# ik_llama.cpp's llama-bench -m SmolLM2-135M-Instruct.Q4_1.gguf -p 8 -n 4 -pg 8,4 -r 3 -t 2 -o md -oe json
# (its markdown on stdout; from the JSON on stderr of the same run: samples_ns, avg_ns, stddev_ns, avg_ts, stddev_ts)
IK_MD = """\
| model                          |       size |     params | backend    | threads |          test |              t/s |
| ------------------------------ | ---------: | ---------: | ---------- | ------: | ------------: | ---------------: |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       2 |           pp8 |    254.97 ± 3.69 |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       2 |           tg4 |    116.34 ± 3.61 |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       2 |       pp8+tg4 |    183.15 ± 2.35 |
""".splitlines()
IK_SAMPLES = {
    "pp8": ([31894280, 31018968, 31229500], 31380916, 456878, "254.967811", "3.688505"),
    "tg4": ([35522097, 33386885, 34302492], 34403824, 1071238, "116.341031", "3.608284"),
    "pp8+tg4": ([65100638, 64976937, 66503375], 65526983, 847877, "183.150958", "2.352604"),
}
IK_MODEL_SIZE, IK_MODEL_N_PARAMS = 126657792, 162826560
# llama-bench -p 8 -n 4 -pg 8,4 -gp 8,4 -r 2 -t 1,2 -ub 128,256 -ctk f16,q8_0 -fmoe 0 -rtr 1 -mla 2 -amb 512
#             -ser 6,0.5 -fa 0 -b 512 -mmp 0 -ot exps=CPU --print-overrides 1: the header and the first rows
IK_SWEPT_ARGV = ("-p 8 -n 4 -pg 8,4 -gp 8,4 -r 2 -t 1,2 -ub 128,256 -ctk f16,q8_0 -fmoe 0 -rtr 1 -mla 2 -amb 512 "
                 "-ser 6,0.5 -fa 0 -b 512 -mmp 0 -ot exps=CPU --print-overrides 1").split()
IK_SWEPT_MD = """\
| model                          |       size |     params | backend    | threads | n_batch | n_ubatch | type_k | fa | mla |   amb |        ser | mmap | ot              | rtr | fmoe |          test |              t/s |
| ------------------------------ | ---------: | ---------: | ---------- | ------: | ------: | -------: | -----: | -: | --: | ----: | ---------: | ---: | --------------- | --: | ---: | ------------: | ---------------: |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       1 |     512 |      128 |    f16 |  0 |   2 |   512 |      6,0.5 |    0 | exps=CPU        |   1 |    0 |           pp8 |    244.14 ± 9.29 |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       1 |     512 |      128 |    f16 |  0 |   2 |   512 |      6,0.5 |    0 | exps=CPU        |   1 |    0 |           tg4 |    114.27 ± 2.95 |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       1 |     512 |      128 |    f16 |  0 |   2 |   512 |      6,0.5 |    0 | exps=CPU        |   1 |    0 |       pp8+tg4 |    173.44 ± 0.33 |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       1 |     512 |      128 |    f16 |  0 |   2 |   512 |      6,0.5 |    0 | exps=CPU        |   1 |    0 |       tg4@pp8 |     71.90 ± 0.49 |
| llama ?B Q4_1                  | 120.79 MiB |   162.83 M | CPU        |       2 |     512 |      128 |    f16 |  0 |   2 |   512 |      6,0.5 |    0 | exps=CPU        |   1 |    0 |           pp8 |  150.63 ± 113.58 |
""".splitlines()
# llama-bench -o csv: its header line (kiln adds n_depth, mainline llama-bench's field, after n_gen)
IK_CSV_HEADER = (
    "build_commit,build_number,cuda,vulkan,metal,sycl,rpc,gpu_blas,blas,cpu_info,gpu_info,model_filename,model_type,"
    "model_size,model_n_params,n_batch,n_ubatch,n_threads,type_k,type_v,n_gpu_layers,split_mode,main_gpu,no_kv_offload,"
    "flash_attn,mla_attn,attn_max_batch,ser,reuse,tensor_split,use_mmap,embeddings,repack,mqkv,muge,defer_experts,"
    "fused_moe,grouped_er,no_fused_up_gate,use_thp,no_ooae,rcache,sas,max_gpu,cuda_params,override_tensor,n_prompt,"
    "n_gen,test_time,avg_ns,stddev_ns,avg_ts,stddev_ts,test"
)
IK_MODEL_DESC, KILN_MODEL_DESC = "llama ?B Q4_1", "llama 135M Q4_1"  # ik: its per-arch table; kiln: general.size_label


def kiln_line(ik_line: str) -> str:
    """An ik_llama.cpp table line with kiln's model description in the (30 wide) model cell."""
    return ik_line.replace(f"{IK_MODEL_DESC:<30}", f"{KILN_MODEL_DESC:<30}")


def params(argv: list[str], threads: int = 2):
    """BenchParams from a command line, as bench.main builds them."""
    ns = bench_parser().parse_args(argv)
    raw = {k: v for k, v in vars(ns).items()}
    return parse_params(raw, reps=ns.reps, output=ns.output, warmup=ns.warmup, verbose=ns.verbose,
                        print_overrides=ns.print_overrides, default_threads=threads)


def bench_parser():
    import argparse

    p = argparse.ArgumentParser(allow_abbrev=False)
    bench.add_arguments(p, None)
    return p


class FakeEngine:
    """The engine calls the loop makes, recorded; nothing is computed."""

    def __init__(self, options):
        self.options = options
        self.hparams = SimpleNamespace(n_vocab=50)
        self.n_ctx = options.ctx_size
        self.n_past = 0
        self.evaluated = 0
        self.calls: list[tuple[int, list[int]]] = []  # (n_past before, tokens)
        self.closed = False

    def eval(self, tokens, seq=0, all_logits=True):
        assert 1 <= len(tokens) <= self.options.batch_size
        assert self.n_past + len(tokens) <= self.n_ctx
        self.calls.append((self.n_past, list(tokens)))
        self.n_past += len(tokens)
        self.evaluated += len(tokens)

    def reset(self, seq=0):
        self.n_past = 0

    def truncate(self, n, seq=0):
        assert n <= self.n_past
        self.n_past = n

    def close(self):
        self.closed = True


class FakeLoader:
    BOS = 1

    def __init__(self):
        self.engines: list[FakeEngine] = []

    def __call__(self, options):
        self.engines.append(FakeEngine(options))
        return self.engines[-1], SimpleNamespace(bos_id=self.BOS, add_bos=True)

    def tokens_evaluated(self) -> float:
        """A clock that reads the tokens evaluated so far as seconds."""
        return float(sum(e.evaluated for e in self.engines))


class StepClock:
    def __init__(self, step: float):
        self.t, self.step = 100.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_rows_and_statistics_match_llama_bench(smollm2):
    info = model_info(smollm2)
    assert (info.size, info.n_params, info.description) == (IK_MODEL_SIZE, IK_MODEL_N_PARAMS, KILN_MODEL_DESC)
    p = params(["-p", "8", "-n", "4", "-pg", "8,4", "-r", "3", "-t", "2"])
    out = io.StringIO()
    printer = MarkdownPrinter(out, p)
    printer.header()
    for inst in expand(p):
        samples, avg_ns, stddev_ns, avg_ts, stddev_ts = IK_SAMPLES[inst.test.label]
        r = Result(inst, info, samples, "2026-11-25T05:00:00Z")
        printer.row(r)
        v = values(r)
        assert (v["avg_ns"], v["stddev_ns"], v["avg_ts"], v["stddev_ts"]) == (str(avg_ns), str(stddev_ns), avg_ts, stddev_ts)
    assert out.getvalue().splitlines() == [kiln_line(line) for line in IK_MD]


def test_swept_header_and_order_match_llama_bench(smollm2):
    p = params(IK_SWEPT_ARGV)
    out = io.StringIO()
    printer = MarkdownPrinter(out, p)
    printer.header()
    info = model_info(smollm2)
    instances = expand(p)
    for inst in instances[:5]:
        printer.row(Result(inst, info, [1_000_000_000], ""))
    lines = out.getvalue().splitlines()
    assert lines[:2] == IK_SWEPT_MD[:2]
    cells = [line.split("|")[1:-2] for line in lines[2:]]  # all but t/s
    assert cells == [kiln_line(line).split("|")[1:-2] for line in IK_SWEPT_MD[2:]]
    assert len(instances) == 2 * 2 * 2 * 4  # -t x -ub x -ctk x the four tests


def test_every_combination_of_the_comma_lists():
    lists = {"-t": "1,2", "-ub": "64,128", "-ctk": "f16,q8_0", "-fmoe": "0,1", "-rtr": "0,1", "-mla": "2,3",
             "-amb": "0,512", "-ngl": "0,99", "-b": "256,512", "-ot": "exps=CPU;attn=CPU,exps=CPU", "-d": "0,16"}
    argv = [a for flag, value in lists.items() for a in (flag, value)] + ["-p", "8,16", "-n", "4"]
    p = params(argv)
    instances = expand(p)
    seen = [
        (i.settings["n_threads"][0], i.settings["n_ubatch"], i.settings["type_k"], i.settings["fused_moe"],
         i.settings["repack"], i.settings["mla_attn"], i.settings["attn_max_batch"], i.settings["n_gpu_layers"],
         i.settings["n_batch"], i.settings["override_tensor"], i.test.n_depth, i.test.label.split(" ")[0])
        for i in instances
    ]
    expected = itertools.product(
        [1, 2], [64, 128], ["f16", "q8_0"], [False, True], [False, True], [2, 3], [0, 512], [0, 99], [256, 512],
        [("exps=CPU",), ("attn=CPU", "exps=CPU")], [0, 16], ["pp8", "pp16", "tg4"],
    )
    assert sorted(seen, key=repr) == sorted(expected, key=repr)
    assert len(seen) == len(set(seen)) == 2**11 * 3


@pytest.mark.parametrize(("argv", "expected"), [
    (["-ot", "exps=CPU;attn=CPU,exps=CPU"], [("exps=CPU",), ("attn=CPU", "exps=CPU")]),
    (["-ot", "exps=CPU", "-ot", "attn=CPU;"], [("exps=CPU", "attn=CPU"), ("exps=CPU",)]),
    (["-ot", ";exps=CPU"], [(), ("exps=CPU",)]),
    (["-ot", "blk\\.[0-9]\\.ffn=CUDA0,exps=CPU"], [("blk\\.[0-9]\\.ffn=CUDA0", "exps=CPU")]),  # ik's form: one set
])
def test_override_tensor_alternatives(argv, expected):
    assert params(argv).values["override_tensor"] == expected


def test_timed_window_of_each_test_and_engine_reuse():
    """With a clock that counts evaluated tokens, every test's t/s is exactly 1 when the timed
    window holds exactly the tokens the test counts (warm-up, depth and gp's prompt untimed)."""
    load = FakeLoader()
    p = params(["-p", "8", "-n", "4", "-pg", "8,4", "-gp", "8,4", "-d", "0,5", "-b", "3", "-r", "2", "-t", "1,2",
                "-ub", "2,3", "-o", "json"])
    out = io.StringIO()
    results = bench.run_bench(p, out, clock=load.tokens_evaluated, load=load, err=io.StringIO())
    assert len(results) == 2 * 2 * 2 * 4
    for r in results:
        assert r.samples_ns == [r.inst.test.n_tokens * 1_000_000_000] * 2, r.inst.test.label
        assert (r.avg_ts, r.stddev_ts) == (1.0, 0.0)
    assert len(load.engines) == 2  # one per -ub; threads share the loaded model
    assert [e.options.ubatch_size for e in load.engines] == [2, 3]
    assert all(e.closed for e in load.engines)
    for e in load.engines:
        starts = [tokens for n_past, tokens in e.calls if n_past == 0]
        assert starts and all(t[0] == FakeLoader.BOS for t in starts)  # each prompt and generation starts with BOS
    doc = json.loads(out.getvalue())
    assert [d["test"] for d in doc[:4]] == ["pp8", "tg4", "pp8+tg4", "tg4@pp8"]
    assert [d["test"] for d in doc[4:8]] == ["pp8 @ d5", "tg4 @ d5", "pp8+tg4 @ d5", "tg4@pp8 @ d5"]
    assert [d["n_threads"] for d in doc[:16:4]] == [1, 1, 2, 2]


def test_fake_timer_table_on_the_default_model(smollm2, monkeypatch, capsys):
    monkeypatch.setattr(bench, "CLOCK", StepClock(0.5))
    assert main(["bench", "-m", str(smollm2), "-p", "8", "-n", "4", "-r", "2", "-t", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = "| llama 135M Q4_1                | 120.79 MiB |   162.83 M | CPU        |       2 |"
    assert lines == IK_MD[:2] + [
        f"{row}           pp8 |     16.00 ± 0.00 |",
        f"{row}           tg4 |      8.00 ± 0.00 |",
        "",
        "build: kiln-0.1.0 (0)",
    ]


def test_csv_json_and_jsonl_carry_llama_benchs_fields():
    load = FakeLoader()
    runs = {}
    for fmt in ("csv", "json", "jsonl"):
        out = io.StringIO()
        p = params(["-p", "4", "-n", "2", "-r", "2", "-fmoe", "0,1", "-o", fmt])
        bench.run_bench(p, out, clock=StepClock(0.25), load=load, err=io.StringIO())
        runs[fmt] = out.getvalue()
    ik_fields = IK_CSV_HEADER.split(",")
    assert [f for f in FIELDS if f != "n_depth"] == ik_fields
    rows = list(csv.DictReader(io.StringIO(runs["csv"])))
    assert [(r["test"], r["fused_moe"], r["avg_ts"]) for r in rows] == [
        ("pp4", "0", "16.000000"), ("tg2", "0", "8.000000"), ("pp4", "1", "16.000000"), ("tg2", "1", "8.000000")]
    doc = json.loads(runs["json"])
    lines = [json.loads(line) for line in runs["jsonl"].splitlines()]
    for d in doc + lines:
        assert list(d) == list(FIELDS) + ["samples_ns", "samples_ts"]
        assert d["cuda"] is False and d["rpc"] == "0" and isinstance(d["n_batch"], int) and d["ser"] == "-1,0"
        assert d["samples_ns"] == [250_000_000, 250_000_000] and d["stddev_ts"] == 0.0
    assert [d["fused_moe"] for d in doc] == [False, False, True, True]
    assert [{k: v for k, v in d.items() if k != "test_time"} for d in doc] == [
        {k: v for k, v in d.items() if k != "test_time"} for d in lines]


def test_inert_flags_are_swept_shown_and_noted_once():
    load = FakeLoader()
    out, err = io.StringIO(), io.StringIO()
    p = params(["-p", "4", "-n", "0", "-r", "1", "-ngl", "0,99", "-rtr", "1", "-ot", "exps=CPU"])
    bench.run_bench(p, out, clock=StepClock(1.0), load=load, err=err)
    assert err.getvalue() == "kiln: note: -ngl -ot accepted but not used by this version (CPU only)\n"
    header, _, *rows = out.getvalue().splitlines()
    titles = [c.strip() for c in header.split("|")[1:-1]]
    assert titles == ["model", "size", "params", "backend", "ngl", "threads", "rtr", "test", "t/s"]  # ot: not swept
    assert [[c.strip() for c in r.split("|")[1:-1]][4] for r in rows[:2]] == ["0", "99"]
    assert [e.options.n_gpu_layers for e in load.engines] == [0, 99]


def test_size_labels_and_large_model_cells():
    assert [size_label(n) for n in (134_515_008, 1_711_376_384, 8_030_261_248, 671_026_419_200)] == [
        "135M", "1.7B", "8B", "671B"]
    p = params(["-p", "8", "-n", "0"])
    info = SimpleNamespace(filename="x", description="deepseek2 671B IQ2_K - 2.375 bpw", size=220 * 1024**3,
                           n_params=672_050_000_000)
    out = io.StringIO()
    MarkdownPrinter(out, p).row(Result(expand(p)[0], info, [2_000_000_000], ""))
    assert out.getvalue().split("|")[1:4] == [" deepseek2 671B IQ2_K - 2.375 bpw ", " 220.00 GiB ", "   672.05 B "]


@pytest.mark.parametrize(("argv", "message"), [
    (["-p", "abc"], "-p 'abc': not an integer"),
    (["-ctk", "q9"], "-ctk q9: unsupported KV cache type; use one of f32, f16, bf16, q8_0"),
    (["-ctv", "f16,q4_0"], "-ctv q4_0: unsupported KV cache type"),
    (["-o", "xml"], "-o xml: use one of md, csv, json, jsonl"),
    (["-r", "0"], "-r 0: must be at least 1"),
    (["-mla", "5"], "-mla 5: must be between 0 and 3"),
    (["-fmoe", "2"], "-fmoe '2': expected 0 or 1"),
    (["-pg", "512"], "-pg '512': expected PP,TG"),
    (["-ser", "6"], "-ser '6': expected K,T pairs"),
    (["-ot", "exps"], "-ot 'exps': expected REGEX=TYPE"),
    (["-ot", "(=CPU"], "-ot '(': not a valid regular expression"),
    (["-p", "0", "-n", "0"], "nothing to measure"),
    (["-m", "/no/such/model.gguf"], "-m /no/such/model.gguf: no such model file"),
])
def test_bad_input_is_a_clear_error(argv, message, capsys):
    assert main(["bench", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kiln bench: error: ") and message in err
