"""Reading the sweep-bench runs of `kiln plot sweep`.

One file is one run, in any of the shapes sweep-bench writes:
- `kiln sweep-bench --json`: a JSON list of rows (or an object with the list under "rows");
- llama-sweep-bench `--output-format jsonl`: one JSON object per line (other lines, such as
  log lines, are skipped);
- the markdown table that both print (`| PP | TG | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s |`).
Rows carry llama-sweep-bench's keys: pp, tg, n_kv, t_pp, speed_pp, t_tg, speed_tg. Rows of the
same n_kv (repetitions, several runs pasted together) are averaged, their spread kept as
the standard deviation.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plot_data import PlotDataError, number, read_text

# markdown table header -> JSON key
_TABLE_COLUMNS = {"PP": "pp", "TG": "tg", "N_KV": "n_kv", "T_PP s": "t_pp", "S_PP t/s": "speed_pp", "T_TG s": "t_tg", "S_TG t/s": "speed_tg"}
_SHAPES = "a JSON list of rows (kiln sweep-bench --json), JSON lines (llama-sweep-bench --output-format jsonl) or the sweep-bench markdown table"


@dataclass(frozen=True)
class SweepRun:
    label: str
    n_kv: list[int]
    speed_pp: list[float]  # mean over the rows of each n_kv
    speed_pp_std: list[float]  # 0 where there is one row
    speed_tg: list[float]
    speed_tg_std: list[float]
    n_rows: int


def _speed(row: dict, where: str, kind: str) -> float:
    key = f"speed_{kind}"
    if row.get(key) is not None:
        return number(row[key], where, key, positive=True)
    if row.get(kind) is not None and row.get(f"t_{kind}") is not None:
        n = number(row[kind], where, kind, positive=True)
        return n / number(row[f"t_{kind}"], where, f"t_{kind}", positive=True)
    raise PlotDataError(f'{where}: has no "{key}" (nor "{kind}" and "t_{kind}")')


def _rows_json(path: Path, data: Any) -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        data = data["rows"] if isinstance(data.get("rows"), list) else [data]
    if not isinstance(data, list):
        raise PlotDataError(f"{path}: is {type(data).__name__}, expected {_SHAPES}")
    return [(f"{path}: row {i + 1}", row) for i, row in enumerate(data)]


def _rows_lines(path: Path, text: str) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    header: list[str] | None = None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        where = f"{path}: line {n}"
        if line.startswith("{"):
            try:
                rows.append((where, json.loads(line)))
            except json.JSONDecodeError as e:
                raise PlotDataError(f"{where}: not valid JSON: {e.msg} at column {e.colno}") from None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if header is None or "N_KV" in cells:
                header = [_TABLE_COLUMNS.get(c, c) for c in cells]
            elif not all(set(c) <= set("-: ") for c in cells):
                rows.append((where, _table_row(header, cells, where)))
    return rows


def _table_row(header: list[str], cells: list[str], where: str) -> dict:
    row: dict[str, Any] = {}
    for key, cell in zip(header, cells, strict=False):
        if key in _TABLE_COLUMNS.values():
            try:
                row[key] = float(cell)
            except ValueError:
                raise PlotDataError(f'{where}: column "{key}" is "{cell}", expected a number') from None
    return row


def read_sweep_file(path: Path, label: str | None = None) -> SweepRun:
    text = read_text(path)
    head = text.lstrip()[:1]
    data = None
    if head in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if head == "[" or e.msg != "Extra data":  # "Extra data": several objects, JSON lines
                raise PlotDataError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    rows = _rows_json(path, data) if data is not None else _rows_lines(path, text)
    if not rows:
        raise PlotDataError(f"{path}: no sweep-bench rows found; expected {_SHAPES}")
    by_kv: dict[int, list[tuple[float, float]]] = {}
    for where, row in rows:
        if not isinstance(row, dict):
            raise PlotDataError(f"{where}: is {json.dumps(row)[:40]}, expected an object with n_kv, speed_pp, speed_tg")
        if row.get("n_kv") is None:
            raise PlotDataError(f'{where}: has no "n_kv"')
        n_kv = number(row["n_kv"], where, "n_kv")
        if n_kv < 0 or n_kv != int(n_kv):
            raise PlotDataError(f'{where}: "n_kv" is {row["n_kv"]}, expected a whole number of tokens >= 0')
        by_kv.setdefault(int(n_kv), []).append((_speed(row, where, "pp"), _speed(row, where, "tg")))
    kvs = sorted(by_kv)

    def mean_std(k: int, j: int) -> tuple[float, float]:
        xs = [r[j] for r in by_kv[k]]
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    pp = [mean_std(k, 0) for k in kvs]
    tg = [mean_std(k, 1) for k in kvs]
    return SweepRun(
        label=label if label is not None else path.stem,
        n_kv=kvs,
        speed_pp=[m for m, _ in pp],
        speed_pp_std=[s for _, s in pp],
        speed_tg=[m for m, _ in tg],
        speed_tg_std=[s for _, s in tg],
        n_rows=len(rows),
    )


def read_sweep_files(paths: list[Path], labels: list[str] | None = None) -> list[SweepRun]:
    if labels and len(labels) != len(paths):
        raise PlotDataError(f"{len(labels)} --label for {len(paths)} files: give one --label per file, in order")
    runs = [read_sweep_file(p, labels[k] if labels else None) for k, p in enumerate(paths)]
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
    if not labels and any(c > 1 for c in seen.values()):  # same file name in two folders: use the paths
        runs = [SweepRun(**{**run.__dict__, "label": str(p)}) for run, p in zip(runs, paths, strict=True)]
    return runs
