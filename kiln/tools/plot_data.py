"""Reading and checking the perplexity data of `kiln plot ppl`.

The format is the one the community shares: a JSON list of quants of one model,
`[{"name": "IQ2_KS", "bpw": 2.56, "ppl": 3.82, "size": 190.1, "url": "https://..."}]`
(`size` in GiB; `size` and `url` may be missing; extra keys are ignored), or an object
mapping model names to such lists. A list names its model by a "model" key in the entries,
else by `--label`, else by the file name. Every problem is a `PlotDataError` naming the
file, the entry and the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import KilnError


class PlotDataError(KilnError):
    """A data file of `kiln plot` is missing, not JSON, or has a bad entry."""


@dataclass(frozen=True)
class Quant:
    model: str
    name: str
    ppl: float
    bpw: float | None = None
    size: float | None = None
    url: str | None = None
    where: str = field(default="", compare=False)  # "FILE: entry 3 (NAME)", for errors


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def load_json(path: Path) -> Any:
    """The parsed JSON of `path`, or a PlotDataError naming the file and the place of the fault."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise PlotDataError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlotDataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise PlotDataError(f"{path}: is a directory, expected a file") from None
    except UnicodeDecodeError as e:
        raise PlotDataError(f"{path}: not UTF-8 text (byte {e.start}): expected a JSON or text file") from None
    except OSError as e:
        raise PlotDataError(f"{path}: cannot read: {e.strerror}") from None


def number(value: Any, where: str, field: str, *, positive: bool = False) -> float:
    """`value` as a finite float; `where` names the entry in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlotDataError(f'{where}: "{field}" is {json.dumps(value)}, expected a number')
    x = float(value)
    if not math.isfinite(x):
        raise PlotDataError(f'{where}: "{field}" is {json.dumps(value)}, expected a finite number')
    if positive and x <= 0:
        raise PlotDataError(f'{where}: "{field}" is {value}, expected a number above 0')
    return x


def _quant(entry: Any, where: str, model: str | None) -> Quant:
    if not isinstance(entry, dict):
        raise PlotDataError(f'{where}: is {json.dumps(entry)[:40]}, expected an object like {{"name": ..., "bpw": ..., "ppl": ...}}')
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        problem = "has no" if name is None else f"has {json.dumps(name)[:40]} as"
        raise PlotDataError(f'{where}: {problem} "name", expected the quant\'s name as a string')
    where = f"{where} ({name})"
    if "ppl" not in entry:
        raise PlotDataError(f'{where}: has no "ppl"')
    ppl = number(entry["ppl"], where, "ppl", positive=True)
    bpw = None if entry.get("bpw") is None else number(entry["bpw"], where, "bpw", positive=True)
    size = None if entry.get("size") is None else number(entry["size"], where, "size", positive=True)
    if bpw is None and size is None:
        raise PlotDataError(f'{where}: has neither "bpw" nor "size"; give at least the one plotted (--x)')
    url = entry.get("url")
    if url is not None:
        if not isinstance(url, str):
            raise PlotDataError(f'{where}: "url" is {json.dumps(url)[:40]}, expected a string')
        scheme = _SCHEME.match(url)
        if scheme and scheme.group(1).lower() not in ("http", "https"):
            raise PlotDataError(f'{where}: "url" {url[:60]} is not an http(s) link')
        url = url or None
    own_model = entry.get("model")
    if own_model is not None and not isinstance(own_model, str):
        raise PlotDataError(f'{where}: "model" is {json.dumps(own_model)[:40]}, expected a string')
    return Quant(model=model or own_model or "", name=name, ppl=ppl, bpw=bpw, size=size, url=url, where=where)


def read_ppl_file(path: Path, label: str | None = None) -> list[Quant]:
    """The quants of one file (list or {model: list}), each with its model's name."""
    data = load_json(path)
    quants: list[Quant] = []
    if isinstance(data, list):
        if not data:
            raise PlotDataError(f"{path}: the list is empty, expected quants")
        quants = [_quant(e, f"{path}: entry {i + 1}", None) for i, e in enumerate(data)]
        models = {q.model for q in quants}
        if label is not None:
            if len(models - {""}) > 1:
                raise PlotDataError(f"{path}: holds several models ({', '.join(sorted(models - {''}))}); --label names a file of one model")
            quants = [replace(q, model=label) for q in quants]
        else:
            quants = [q if q.model else replace(q, model=path.stem) for q in quants]
    elif isinstance(data, dict):
        if not data:
            raise PlotDataError(f"{path}: the object is empty, expected {{model: [quants]}}")
        if label is not None and len(data) > 1:
            raise PlotDataError(f"{path}: holds several models ({', '.join(data)}); --label names a file of one model")
        for model, entries in data.items():
            if not isinstance(entries, list) or not entries:
                raise PlotDataError(f'{path}: model "{model}" is {json.dumps(entries)[:40]}, expected a non-empty list of quants')
            name = label if label is not None else model
            quants += [_quant(e, f'{path}: model "{model}" entry {i + 1}', name) for i, e in enumerate(entries)]
    else:
        raise PlotDataError(f'{path}: is {type(data).__name__}, expected a list of quants [{{"name", "bpw", "ppl", "size", "url"}}] or {{model: [quants]}}')
    return quants


def read_ppl_files(paths: list[Path], labels: list[str] | None = None) -> dict[str, list[Quant]]:
    """Quants grouped by model, in the order they first appear; `labels`: one per file."""
    if labels and len(labels) != len(paths):
        raise PlotDataError(f"{len(labels)} --label for {len(paths)} files: give one --label per file, in order")
    models: dict[str, list[Quant]] = {}
    for k, path in enumerate(paths):
        for q in read_ppl_file(path, labels[k] if labels else None):
            models.setdefault(q.model, []).append(q)
    return models


def check_axis(models: dict[str, list[Quant]], x: str) -> None:
    """Every quant has the value plotted on x (`bpw` or `size`); all values are above 0 (checked on reading)."""
    for quants in models.values():
        for q in quants:
            if getattr(q, x) is None:
                other = "size" if x == "bpw" else "bpw"
                raise PlotDataError(f'{q.where}: has no "{x}", which --x {x} plots; add it or use --x {other}')
