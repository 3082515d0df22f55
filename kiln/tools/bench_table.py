"""`kiln bench`'s output in llama-bench's formats: the markdown table (`-o md`), CSV, JSON and
JSON lines, with ik_llama.cpp's field names, order, types and number formats.

The markdown table has the columns model | size | params | backend | threads, then each swept
or non-default flag in llama-bench's order (ngl, n_batch, n_ubatch, type_k, type_v, main_gpu,
sm, nkvo, fa, mla, amb, ser, ts, mmap, ot, rtr, fmoe), then test | t/s (`mean ± stddev`).
The `ot` column appears when -ot is swept or with --print-overrides 1, as llama-bench shows
it only with the latter. CSV and JSON carry every field, plus `n_depth` (mainline
llama-bench's) after n_gen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TextIO

from .. import __version__
from .bench_info import ModelInfo
from .bench_params import BenchParams, Instance
from .bench_timing import mean, stdev, stdev_ns, tokens_per_second

BUILD_COMMIT = f"kiln-{__version__}"
BUILD_NUMBER = 0
BACKEND = "CPU"

FIELDS = (
    "build_commit", "build_number",
    "cuda", "vulkan", "metal", "sycl", "rpc", "gpu_blas", "blas",
    "cpu_info", "gpu_info",
    "model_filename", "model_type", "model_size", "model_n_params",
    "n_batch", "n_ubatch",
    "n_threads", "type_k", "type_v",
    "n_gpu_layers", "split_mode",
    "main_gpu", "no_kv_offload", "flash_attn", "mla_attn", "attn_max_batch", "ser", "reuse",
    "tensor_split", "use_mmap", "embeddings", "repack", "mqkv", "muge", "defer_experts", "fused_moe", "grouped_er",
    "no_fused_up_gate", "use_thp", "no_ooae", "rcache", "sas", "max_gpu", "cuda_params", "override_tensor",
    "n_prompt", "n_gen", "n_depth", "test_time",
    "avg_ns", "stddev_ns",
    "avg_ts", "stddev_ts", "test",
)
INT_FIELDS = frozenset({
    "build_number", "n_batch", "n_ubatch", "n_threads", "model_size", "model_n_params", "n_gpu_layers",
    "main_gpu", "n_prompt", "n_gen", "n_depth", "mla_attn", "attn_max_batch", "avg_ns", "stddev_ns", "max_gpu",
})
BOOL_FIELDS = frozenset({
    "cuda", "vulkan", "metal", "gpu_blas", "blas", "sycl", "no_kv_offload", "flash_attn", "use_mmap",
    "embeddings", "repack", "use_thp", "fused_moe", "grouped_er", "no_fused_up_gate", "no_ooae", "mqkv",
    "rcache", "reuse", "muge", "defer_experts", "sas",
})
FLOAT_FIELDS = frozenset({"avg_ts", "stddev_ts"})  # the rest are strings (rpc too, as in ik_llama.cpp)

# markdown: width (negative: left-aligned) and column title, where not the defaults
_WIDTHS = {
    "model": -30, "t/s": 16, "size": 10, "params": 10, "n_gpu_layers": 3, "n_threads": 7, "n_batch": 7,
    "n_ubatch": 8, "type_k": 6, "type_v": 6, "split_mode": 5, "flash_attn": 2, "mla_attn": 3,
    "attn_max_batch": 5, "reuse": 2, "ser": 10, "use_mmap": 4, "repack": 3, "fused_moe": 4, "test": 13,
}
_TITLES = {
    "n_gpu_layers": "ngl", "split_mode": "sm", "n_threads": "threads", "no_kv_offload": "nkvo", "flash_attn": "fa",
    "mla_attn": "mla", "attn_max_batch": "amb", "use_mmap": "mmap", "repack": "rtr", "fused_moe": "fmoe",
    "tensor_split": "ts", "override_tensor": "ot",
}
# columns shown when swept or not the default, in llama-bench's order
_OPTIONAL_COLUMNS = (
    "n_gpu_layers", "n_threads", "n_batch", "n_ubatch", "type_k", "type_v", "main_gpu", "split_mode",
    "no_kv_offload", "flash_attn", "mla_attn", "attn_max_batch", "ser", "tensor_split", "use_mmap",
    "override_tensor", "repack", "fused_moe",
)


@dataclass
class Result:
    """One test's measurement: a row of the table."""

    inst: Instance
    model: ModelInfo
    samples_ns: list[int]
    test_time: str  # RFC 3339, UTC
    cpu_info: str = ""

    @property
    def samples_ts(self) -> list[float]:
        return tokens_per_second(self.samples_ns, self.inst.test.n_tokens)

    @property
    def avg_ts(self) -> float:
        return mean(self.samples_ts)

    @property
    def stddev_ts(self) -> float:
        return stdev(self.samples_ts)


def _b(value: bool) -> str:
    return "1" if value else "0"


def _ser(ser: tuple[int, float]) -> str:
    return f"{ser[0]},{ser[1]:g}"


def _tensor_split(ts: tuple[float, ...]) -> str:
    last = max((i for i, v in enumerate(ts) if v > 0), default=0)
    return "/".join(f"{v:.2f}" for v in (list(ts) or [0.0])[: last + 1])


def values(r: Result) -> dict[str, str]:
    """Every field as llama-bench's text (booleans as 0/1)."""
    s, t = r.inst.settings, r.inst.test
    ns = r.samples_ns
    flags = {name: "0" for name in ("cuda", "vulkan", "metal", "sycl", "rpc", "gpu_blas", "blas", "embeddings", "mqkv",
                                    "muge", "defer_experts", "grouped_er", "no_fused_up_gate", "use_thp", "no_ooae",
                                    "rcache", "sas", "max_gpu")}
    out = {
        **flags,
        "build_commit": BUILD_COMMIT, "build_number": str(BUILD_NUMBER),
        "cpu_info": r.cpu_info, "gpu_info": "",
        "model_filename": r.model.filename, "model_type": r.model.description,
        "model_size": str(r.model.size), "model_n_params": str(r.model.n_params),
        "n_batch": str(s["n_batch"]), "n_ubatch": str(s["n_ubatch"]), "n_threads": str(r.inst.threads),
        "type_k": s["type_k"], "type_v": s["type_v"], "n_gpu_layers": str(s["n_gpu_layers"]),
        "split_mode": s["split_mode"], "main_gpu": str(s["main_gpu"]), "no_kv_offload": _b(s["no_kv_offload"]),
        "flash_attn": _b(s["flash_attn"]), "mla_attn": str(s["mla_attn"]), "attn_max_batch": str(s["attn_max_batch"]),
        "ser": _ser(s["ser"]), "reuse": "1", "tensor_split": _tensor_split(s["tensor_split"]),
        "use_mmap": _b(s["use_mmap"]), "repack": _b(s["repack"]), "fused_moe": _b(s["fused_moe"]),
        "cuda_params": "", "override_tensor": ",".join(s["override_tensor"]),
        "n_prompt": str(t.n_prompt), "n_gen": str(t.n_gen), "n_depth": str(t.n_depth), "test_time": r.test_time,
        "avg_ns": str(sum(ns) // len(ns) if ns else 0), "stddev_ns": str(stdev_ns(ns)),
        "avg_ts": f"{r.avg_ts:f}", "stddev_ts": f"{r.stddev_ts:f}", "test": t.label,
    }
    return {name: out[name] for name in FIELDS}


def _typed(name: str, text: str) -> str:
    """A field's JSON text: a string, true/false, or the number as written."""
    if name in BOOL_FIELDS:
        return "false" if text == "0" else "true"
    if name in INT_FIELDS or name in FLOAT_FIELDS:
        return text
    return json.dumps(text, ensure_ascii=False)


def _samples(r: Result) -> tuple[str, str]:
    return ", ".join(str(v) for v in r.samples_ns), ", ".join(f"{v:g}" for v in r.samples_ts)


class Printer:
    def __init__(self, out: TextIO, params: BenchParams):
        self.out, self.params = out, params

    def header(self) -> None:
        pass

    def row(self, r: Result) -> None:
        raise NotImplementedError

    def footer(self) -> None:
        pass

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


class MarkdownPrinter(Printer):
    def __init__(self, out: TextIO, params: BenchParams):
        super().__init__(out, params)
        self.columns = markdown_columns(params)

    def header(self) -> None:
        titles = " |".join(f" {_TITLES.get(c, c):{_align(c)}{abs(width(c))}}" for c in self.columns)
        rules = " |".join(" " + "-" * (abs(width(c)) - 1) + (":" if width(c) > 0 else "-") for c in self.columns)
        self.write(f"|{titles} |\n|{rules} |\n")

    def row(self, r: Result) -> None:
        vmap = values(r)
        cells = []
        for c in self.columns:
            cells.append(f" {markdown_cell(c, r, vmap):{_align(c)}{abs(width(c))}}")
        self.write("|" + " |".join(cells) + " |\n")

    def footer(self) -> None:
        self.write(f"\nbuild: {BUILD_COMMIT} ({BUILD_NUMBER})\n")


def width(column: str) -> int:
    if column in _WIDTHS:
        return _WIDTHS[column]
    w = max(len(column), 10)
    return w if column in INT_FIELDS or column in BOOL_FIELDS or column in FLOAT_FIELDS else -w


def _align(column: str) -> str:
    return "<" if width(column) < 0 else ">"


def markdown_columns(params: BenchParams) -> list[str]:
    cols = ["model", "size", "params", "backend"]
    for c in _OPTIONAL_COLUMNS:
        if c == "n_threads":  # always shown on a CPU backend
            cols.append(c)
        elif params.swept_or_changed(c) and (
            c != "override_tensor" or params.print_overrides or len(params.values[c]) > 1
        ):
            cols.append(c)
    return cols + ["test", "t/s"]


def markdown_cell(column: str, r: Result, vmap: dict[str, str]) -> str:
    if column == "model":
        return r.model.description
    if column == "size":
        gib = r.model.size >= 1024**3
        return f"{r.model.size / 1024**(3 if gib else 2):.2f} {'GiB' if gib else 'MiB'}"
    if column == "params":
        b = r.model.n_params >= 1000**3
        return f"{r.model.n_params / (1e9 if b else 1e6):.2f} {'B' if b else 'M'}"
    if column == "backend":
        return BACKEND
    if column == "t/s":
        return f"{r.avg_ts:.2f} ± {r.stddev_ts:.2f}"
    if column == "override_tensor" and not vmap[column]:
        return "none"
    return vmap[column]


class CsvPrinter(Printer):
    def header(self) -> None:
        self.write(",".join(FIELDS) + "\n")

    def row(self, r: Result) -> None:
        self.write(",".join('"' + v.replace('"', '""') + '"' for v in values(r).values()) + "\n")


class JsonPrinter(Printer):
    first = True

    def header(self) -> None:
        self.write("[\n")

    def row(self, r: Result) -> None:
        ns, ts = _samples(r)
        lines = [f'    "{k}": {_typed(k, v)},' for k, v in values(r).items()]
        lines += [f'    "samples_ns": [ {ns} ],', f'    "samples_ts": [ {ts} ]']
        self.write(("" if self.first else ",\n") + "  {\n" + "\n".join(lines) + "\n  }")
        self.first = False

    def footer(self) -> None:
        self.write("\n]\n")


class JsonLinesPrinter(Printer):
    def row(self, r: Result) -> None:
        ns, ts = _samples(r)
        fields = [f'"{k}": {_typed(k, v)}' for k, v in values(r).items()]
        self.write("{" + ", ".join(fields + [f'"samples_ns": [{ns}]', f'"samples_ts": [{ts}]']) + "}\n")


PRINTERS = {"md": MarkdownPrinter, "csv": CsvPrinter, "json": JsonPrinter, "jsonl": JsonLinesPrinter}
