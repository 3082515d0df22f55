"""`kiln sweep-bench`'s output, llama-sweep-bench's: the `main: n_kv_max = ...` line, then the
table `| PP | TG | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s |` (times in seconds to 3
decimals, speeds in t/s to 2); or JSON lines (`--output-format jsonl`, one object per row with
the settings repeated, ik_llama.cpp's keys); or one JSON document (`--json`): the settings and
a list "rows" of {pp, tg, n_kv, t_pp, speed_pp, t_tg, speed_tg}, which `kiln plot sweep` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .sweep_bench_run import SweepRow

COLUMNS = ("PP", "TG", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s")
_WIDTHS = (6, 6, 6, 8, 8, 8, 8)


@dataclass(frozen=True)
class SweepSettings:
    n_kv_max: int
    n_batch: int
    n_ubatch: int
    flash_attn: int
    n_gpu_layers: int
    n_threads: int
    n_threads_batch: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def header_line(s: SweepSettings) -> str:
    return (f"main: n_kv_max = {s.n_kv_max}, n_batch = {s.n_batch}, n_ubatch = {s.n_ubatch}, "
            f"flash_attn = {s.flash_attn}, n_gpu_layers = {s.n_gpu_layers}, n_threads = {s.n_threads}, "
            f"n_threads_batch = {s.n_threads_batch}")


def table_header() -> str:
    """The two header lines of the table."""
    titles = "|" + " | ".join(f"{c:>{w}}" for c, w in zip(COLUMNS, _WIDTHS, strict=True)) + " |"
    rule = "|" + "-|-".join("-" * w for w in _WIDTHS) + "-|"
    return f"{titles}\n{rule}"


def table_row(r: SweepRow) -> str:
    return (f"|{r.pp:6d} | {r.tg:6d} | {r.n_kv:6d} | {r.t_pp:8.3f} | {r.speed_pp:8.2f} | "
            f"{r.t_tg:8.3f} | {r.speed_tg:8.2f} |")


def row_dict(r: SweepRow) -> dict:
    return {"pp": r.pp, "tg": r.tg, "n_kv": r.n_kv, "t_pp": r.t_pp, "speed_pp": r.speed_pp,
            "t_tg": r.t_tg, "speed_tg": r.speed_tg}


def jsonl_row(s: SweepSettings, r: SweepRow) -> str:
    """One line as llama-sweep-bench --output-format jsonl writes it."""
    settings = ", ".join(f'"{k}": {v}' for k, v in s.as_dict().items())
    return (f'{{{settings}, "pp": {r.pp}, "tg": {r.tg}, "n_kv": {r.n_kv}, "t_pp": {r.t_pp:f}, '
            f'"speed_pp": {r.speed_pp:f}, "t_tg": {r.t_tg:f}, "speed_tg": {r.speed_tg:f} }}')


def json_document(s: SweepSettings, model: str, rows: list[SweepRow]) -> str:
    return json.dumps({"model": model, **s.as_dict(), "rows": [row_dict(r) for r in rows]}, indent=2) + "\n"
