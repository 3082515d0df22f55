"""What `kiln plot` draws, independent of the renderer.

A `Chart` (panels of series of markers and lines) is built once from the data and then
drawn twice: as interactive plotly HTML (plot_html.py) and as static SVG (plot_svg.py),
so both show the same points, fronts and labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plot_data import Quant
from .plot_pareto import dominator, pareto_front
from .plot_sweep_data import SweepRun

# Tableau 10: distinct on screen and in print
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


@dataclass
class Marker:
    x: float
    y: float
    name: str  # the quant (or row) this marker stands for
    hover: list[str]  # lines of the tooltip
    url: str | None = None
    hollow: bool = False  # a dominated quant
    y_err: float = 0.0  # standard deviation drawn as an error bar


@dataclass
class Series:
    name: str
    color: str
    markers: list[Marker]
    line: list[tuple[float, float]] = field(default_factory=list)  # drawn under the markers
    dashed: bool = False
    line_name: str = ""  # what the line is, for tooltips


@dataclass
class Panel:
    title: str
    x_title: str
    y_title: str
    series: list[Series]
    log_x: bool = False
    log_y: bool = False


@dataclass
class Chart:
    title: str
    panels: list[Panel]
    width: int
    height: int
    labels: bool = False  # write each marker's name beside it
    note: str = ""  # one line under the title (the marker key)


@dataclass
class Front:
    """One model's quants with their Pareto status on the chosen axis."""

    model: str
    quants: list[Quant]
    on_front: list[bool]
    dominated_by: list[Quant | None]


def fronts(models: dict[str, list[Quant]], x: str) -> list[Front]:
    result = []
    for model, quants in models.items():
        costs = [getattr(q, x) for q in quants]
        ppls = [q.ppl for q in quants]
        on = pareto_front(costs, ppls)
        by = [None if on[i] else quants[dominator(costs, ppls, i)] for i in range(len(quants))]
        result.append(Front(model, quants, on, by))
    return result


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def ppl_chart(found: list[Front], x: str, *, title: str | None, log_x: bool, log_y: bool, labels: bool, size_unit: str, width: int, height: int) -> Chart:
    x_title = "bits per weight" if x == "bpw" else f"size ({size_unit})"
    series = []
    for k, front in enumerate(found):
        markers = []
        for q, on, by in zip(front.quants, front.on_front, front.dominated_by, strict=True):
            hover = [q.name, front.model]
            if q.bpw is not None:
                hover.append(f"bpw {_fmt(q.bpw)}")
            if q.size is not None:
                hover.append(f"size {_fmt(q.size)} {size_unit}")
            hover.append(f"PPL {q.ppl:.4f}")
            hover.append("on the Pareto front" if on else f"dominated by {by.name}")
            if q.url:
                hover.append("click to open " + q.url)
            markers.append(Marker(getattr(q, x), q.ppl, q.name, hover, q.url, hollow=not on))
        line = sorted((getattr(q, x), q.ppl) for q, on in zip(front.quants, front.on_front, strict=True) if on)
        series.append(Series(front.model, PALETTE[k % len(PALETTE)], markers, line, dashed=True, line_name="Pareto front"))
    default = "Perplexity vs " + ("bits per weight" if x == "bpw" else "size")
    panel = Panel("", x_title, "perplexity (PPL)", series, log_x, log_y)
    return Chart(title or default, [panel], width, height, labels, note="filled: on the Pareto front, open: dominated by a smaller quant at least as good; dashed: the front")


def sweep_chart(runs: list[SweepRun], *, title: str | None, log_x: bool, log_y: bool, labels: bool, width: int, height: int) -> Chart:
    panels = []
    for kind, long in (("pp", "prompt processing"), ("tg", "token generation")):
        series = []
        for k, run in enumerate(runs):
            means = getattr(run, f"speed_{kind}")
            stds = getattr(run, f"speed_{kind}_std")
            markers = []
            for n_kv, m, s in zip(run.n_kv, means, stds, strict=True):
                if log_x and n_kv == 0:  # no place on a log axis (plot.py says so)
                    continue
                hover = [run.label, f"N_KV {n_kv}", f"S_{kind.upper()} {m:.2f} t/s" + (f" ± {s:.2f}" if s else "")]
                markers.append(Marker(float(n_kv), m, f"{m:.1f}", hover, y_err=s))
            series.append(Series(run.label, PALETTE[k % len(PALETTE)], markers, [(mk.x, mk.y) for mk in markers]))
        panels.append(Panel(f"S_{kind.upper()}: {long}", "N_KV (tokens in the KV cache)", f"S_{kind.upper()} (t/s)", series, log_x, log_y))
    return Chart(title or "sweep-bench: speed as the KV cache fills", panels, width, height, labels)
