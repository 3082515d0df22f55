"""`kiln plot ppl|sweep`: perplexity against size with its Pareto front, or sweep-bench runs.

`kiln plot ppl A.json [B.json ...]` reads the community's quant lists (plot_data.py), marks each
model's Pareto front (plot_pareto.py) and writes OUT.html (interactive, offline) plus a static
OUT.png and/or OUT.svg. `kiln plot sweep A.json B.json ...` draws S_PP and S_TG against N_KV,
one line per run (plot_sweep_data.py). Both charts are described once (plot_chart.py) and
drawn by plot_html.py (plotly) and plot_svg.py; plot_png.py turns the SVG into a PNG with
headless Chromium. See docs/plot.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import OptionError
from .plot_chart import Chart, Front, fronts, ppl_chart, sweep_chart
from .plot_data import check_axis, read_ppl_files
from .plot_sweep_data import read_sweep_files

PARSES_OWN_FLAGS = True  # no model flags: nothing is loaded

_SIZES = {"ppl": (1000, 650), "sweep": (1300, 560)}


def add_arguments(parser: argparse.ArgumentParser, add_model_flags) -> None:
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    ppl = kinds.add_parser("ppl", help="perplexity against bpw or size, each model's Pareto front marked", allow_abbrev=False)
    ppl.add_argument("data", nargs="+", metavar="DATA.json", help='[{"name", "bpw", "ppl", "size", "url"}, ...] or {model: [...]}; one file per model or several')
    ppl.add_argument("--x", dest="x", choices=["bpw", "size"], default="bpw", help="x axis: bits per weight (default) or size")
    ppl.add_argument("--size-unit", dest="size_unit", default="GiB", help="the unit of the files' size values, for the axis title (default GiB)")
    _add_common(ppl, "ppl")
    sweep = kinds.add_parser("sweep", help="S_PP and S_TG against N_KV for sweep-bench runs", allow_abbrev=False)
    sweep.add_argument("data", nargs="+", metavar="RUN.json", help="kiln sweep-bench --json output, llama-sweep-bench jsonl, or its markdown table; one file per run")
    _add_common(sweep, "sweep")


def _add_common(p: argparse.ArgumentParser, kind: str) -> None:
    w, h = _SIZES[kind]
    p.add_argument("-o", "--output", dest="output", default=kind, help=f"OUT: writes OUT.html and OUT.png/OUT.svg (default: {kind})")
    p.add_argument("--format", dest="format", choices=["png", "svg", "both"], default="png", help="static image beside the HTML (default png; svg needs no browser)")
    p.add_argument("--title", dest="title", help="chart title")
    p.add_argument("--log-x", dest="log_x", action="store_true", help="logarithmic x axis")
    p.add_argument("--log-y", dest="log_y", action="store_true", help="logarithmic y axis")
    p.add_argument("--label", dest="label", action="append", help="name of the model (ppl) or run (sweep) of each file, in order; default: the file name")
    p.add_argument("--show-names", dest="show_names", action="store_true", help="write each point's name beside it")
    p.add_argument("--width", dest="width", type=int, default=w, help=f"image width in pixels (default {w})")
    p.add_argument("--height", dest="height", type=int, default=h, help=f"image height in pixels (default {h})")
    p.add_argument("--scale", dest="scale", type=float, default=1.0, help="PNG pixels per image pixel (default 1; 2 for sharp slides)")


def main(options, args: argparse.Namespace) -> int:
    if not (200 <= args.width <= 10000 and 200 <= args.height <= 10000):
        raise OptionError(f"--width {args.width} --height {args.height}: give sizes between 200 and 10000 pixels")
    if not 0.25 <= args.scale <= 8:
        raise OptionError(f"--scale {args.scale}: give a factor between 0.25 and 8")
    base = _output_base(args.output)
    paths = [Path(p) for p in args.data]
    size = dict(width=args.width, height=args.height)
    if args.kind == "ppl":
        models = read_ppl_files(paths, args.label)
        check_axis(models, args.x)
        found = fronts(models, args.x)
        chart = ppl_chart(found, args.x, title=args.title, log_x=args.log_x, log_y=args.log_y, labels=args.show_names, size_unit=args.size_unit, **size)
        _print_fronts(found, args.x)
    else:
        runs = read_sweep_files(paths, args.label)
        chart = sweep_chart(runs, title=args.title, log_x=args.log_x, log_y=args.log_y, labels=args.show_names, **size)
        for run in runs:
            print(f"{run.label}: {run.n_rows} rows, N_KV {run.n_kv[0]}..{run.n_kv[-1]}")
        if args.log_x and any(run.n_kv[0] == 0 for run in runs):
            print("note: the N_KV 0 rows have no place on the log x axis (--log-x) and are left out")
            if all(run.n_kv == [0] for run in runs):
                raise OptionError("--log-x: every row has N_KV 0; drop --log-x")
    for path, data in _render(chart, base, args.format, args.scale).items():
        _write_atomic(path, data)
        print(f"wrote {path}")
    return 0


def _output_base(output: str) -> Path:
    base = Path(output)
    if base.suffix.lower() in (".html", ".png", ".svg"):
        base = base.with_suffix("")
    if not base.parent.is_dir():
        raise OptionError(f"-o {output}: folder {base.parent} does not exist; create it or choose another -o")
    if not os.access(base.parent, os.W_OK):
        raise OptionError(f"-o {output}: folder {base.parent} is not writable; choose another -o")
    return base


def _render(chart: Chart, base: Path, fmt: str, scale: float) -> dict[Path, bytes]:
    """Every output file's bytes, all made before any is written (a missing Chromium writes nothing)."""
    from .plot_html import render_html
    from .plot_png import require_chromium, svg_to_png
    from .plot_svg import render_svg

    if fmt in ("png", "both"):
        require_chromium()
    svg = render_svg(chart)
    files = {_beside(base, ".html"): render_html(chart, base.name).encode("utf-8")}
    if fmt in ("svg", "both"):
        files[_beside(base, ".svg")] = svg.encode("utf-8")
    if fmt in ("png", "both"):
        files[_beside(base, ".png")] = svg_to_png(svg, chart.width, chart.height, scale, workdir=base.parent)
    return files


def _beside(base: Path, ending: str) -> Path:
    return base.with_name(base.name + ending)  # not with_suffix: -o r1.v2 must give r1.v2.html


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OptionError(f"{path}: cannot write ({e.strerror}); choose another -o") from None


def _print_fronts(found: list[Front], x: str) -> None:
    for front in found:
        on = sorted((q for q, o in zip(front.quants, front.on_front, strict=True) if o), key=lambda q: (getattr(q, x), q.ppl))
        print(f"{front.model}: Pareto front by {x}: " + ", ".join(f"{q.name} ({getattr(q, x):g}, PPL {q.ppl:g})" for q in on))
        dominated = [f"{q.name} by {by.name}" for q, by in zip(front.quants, front.dominated_by, strict=True) if by is not None]
        if dominated:
            print(f"{front.model}: dominated: " + ", ".join(dominated))
