"""A `Chart` as a static SVG image, written directly (no browser, no plotting library).

Each marker is one `<circle class="point">` with its tooltip as `<title>` and, when the quant
has a url, inside an `<a href>`; so the SVG keeps hover names and links in a browser too.
The same SVG is what plot_png.py turns into a PNG.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape, quoteattr

from .plot_chart import Chart, Panel, Series

FONT = "Liberation Sans, Arial, Helvetica, sans-serif"
_CHAR_WIDTH = 0.58  # of the font size: a fair average for the sans-serif fonts above


def linear_ticks(lo: float, hi: float, target: int = 6) -> list[tuple[float, str]]:
    """Round values (1, 2, 5 x 10^k steps) between lo and hi, with their labels."""
    span = hi - lo
    mag = 10 ** math.floor(math.log10(span / target))
    step = next(m * mag for m in (1, 2, 5, 10) if span / (m * mag) <= target)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + 1e-9 * step:
        value = k * step
        label = f"{value:.{decimals}f}"
        ticks.append((value, "0" if float(label) == 0 else label))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    """1, 2, 5 x 10^k between lo and hi (only 10^k over many decades); inside one decade, round linear values."""
    a, b = math.log10(lo), math.log10(hi)
    if b - a >= 1:
        multiples = (1,) if b - a > 4 else (1, 2, 5)
        values = [m * 10.0**k for k in range(math.floor(a), math.ceil(b) + 1) for m in multiples]
        values = [v for v in values if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9)]
        if len(values) >= 2:
            return [(v, f"{v:.{max(0, -math.floor(math.log10(v) + 1e-9))}f}") for v in values]
    return [(v, label) for v, label in linear_ticks(lo, hi) if v > 0]


class _Axis:
    """Data value -> pixel along one axis, linear or log10, with 5% room on both ends."""

    def __init__(self, values: list[float], log: bool, p0: float, p1: float):
        t = [math.log10(v) for v in values] if log else list(values)
        lo, hi = min(t), max(t)
        if hi == lo:
            pad = 0.1 if log else (abs(lo) * 0.1 or 1.0)
        else:
            pad = (hi - lo) * 0.05
        self.lo, self.hi, self.log, self.p0, self.p1 = lo - pad, hi + pad, log, p0, p1

    def pixel(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.p0 + (t - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[tuple[float, str]]:
        if self.log:
            return log_ticks(10**self.lo, 10**self.hi)
        return linear_ticks(self.lo, self.hi)


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>{escape(s)}</text>'


def _short(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def _panel(panel: Panel, k: int, x0: float, y0: float, x1: float, y1: float, labels: bool) -> list[str]:
    xs, ys = [], []
    for s in panel.series:
        xs += [m.x for m in s.markers] + [p[0] for p in s.line]
        ys += [m.y for m in s.markers] + [p[1] for p in s.line]
        ys += [m.y + m.y_err for m in s.markers] + [m.y - m.y_err for m in s.markers if m.y - m.y_err > 0 or not panel.log_y]
    ax, ay = _Axis(xs, panel.log_x, x0, x1), _Axis(ys, panel.log_y, y1, y0)
    out = [f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" fill="#fafafa" stroke="#888"/>']
    for v, label in ax.ticks():
        px = ax.pixel(v)
        out.append(f'<line x1="{px:.1f}" y1="{y0:.1f}" x2="{px:.1f}" y2="{y1:.1f}" stroke="#e3e3e3"/>')
        out.append(_text(px, y1 + 16, label, 11, "middle"))
    for v, label in ay.ticks():
        py = ay.pixel(v)
        out.append(f'<line x1="{x0:.1f}" y1="{py:.1f}" x2="{x1:.1f}" y2="{py:.1f}" stroke="#e3e3e3"/>')
        out.append(_text(x0 - 6, py + 4, label, 11, "end"))
    out.append(_text((x0 + x1) / 2, y1 + 38, panel.x_title, 13, "middle"))
    ym = (y0 + y1) / 2
    out.append(_text(x0 - 52, ym, panel.y_title, 13, "middle", f' transform="rotate(-90 {x0 - 52:.1f} {ym:.1f})"'))
    if panel.title:
        out.append(_text((x0 + x1) / 2, y0 - 8, panel.title, 14, "middle"))
    clip = f"plot-area-{k}"
    out.append(f'<clipPath id="{clip}"><rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}"/></clipPath>')
    out.append(f'<g clip-path="url(#{clip})">')
    for s in panel.series:
        out += _series(s, ax, ay, labels)
    out.append("</g>")
    return out


def _series(s: Series, ax: _Axis, ay: _Axis, labels: bool) -> list[str]:
    out = [f'<g class="series" data-name={quoteattr(s.name)}>']
    if len(s.line) > 1:
        points = " ".join(f"{ax.pixel(x):.1f},{ay.pixel(y):.1f}" for x, y in s.line)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<polyline class="line" points="{points}" fill="none" stroke="{s.color}" stroke-width="1.5"{dash}/>')
    for m in s.markers:
        cx, cy = ax.pixel(m.x), ay.pixel(m.y)
        if m.y_err:
            lo = m.y - m.y_err if m.y - m.y_err > 0 or not ay.log else m.y
            top, bottom = ay.pixel(m.y + m.y_err), ay.pixel(lo)
            out.append(f'<line class="error" x1="{cx:.1f}" y1="{top:.1f}" x2="{cx:.1f}" y2="{bottom:.1f}" stroke="{s.color}"/>')
        fill = "#ffffff" if m.hollow else s.color
        circle = f'<circle class="point" cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{fill}" stroke="{s.color}" stroke-width="2"><title>{escape(chr(10).join(m.hover))}</title></circle>'
        out.append(f'<a href={quoteattr(m.url)} target="_blank">{circle}</a>' if m.url else circle)
        if labels:
            out.append(_text(cx + 7, cy - 7, m.name, 10, extra=' class="label"'))
    out.append("</g>")
    return out


def _legend(chart: Chart, x: float, y: float) -> list[str]:
    out = []
    names: dict[str, Series] = {}
    for panel in chart.panels:
        for s in panel.series:
            names.setdefault(s.name, s)
    for i, s in enumerate(names.values()):
        ly = y + i * 20
        if s.line:
            dash = ' stroke-dasharray="6 4"' if s.dashed else ""
            out.append(f'<line x1="{x:.1f}" y1="{ly:.1f}" x2="{x + 24:.1f}" y2="{ly:.1f}" stroke="{s.color}" stroke-width="1.5"{dash}/>')
        out.append(f'<circle cx="{x + 12:.1f}" cy="{ly:.1f}" r="5" fill="{s.color}" stroke="{s.color}"/>')
        out.append(_text(x + 32, ly + 4, _short(s.name), 12))
    return out


def legend_width(chart: Chart) -> float:
    longest = max((len(_short(s.name)) for p in chart.panels for s in p.series), default=0)
    return min(320.0, 32 + longest * 12 * _CHAR_WIDTH + 20)


def render_svg(chart: Chart) -> str:
    w, h = chart.width, chart.height
    top = 62 + (18 if chart.note else 0) + (22 if any(p.title for p in chart.panels) else 0)
    right = w - legend_width(chart)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family={quoteattr(FONT)} fill="#222">',
        f'<rect class="background" width="{w}" height="{h}" fill="#ffffff"/>',
        _text(w / 2, 30, chart.title, 18, "middle", ' font-weight="bold"'),
    ]
    if chart.note:
        parts.append(_text(w / 2, 52, chart.note, 11, "middle", ' fill="#555"'))
    n = len(chart.panels)
    left_margin, gap, bottom = 78.0, 84.0, h - 58.0
    width_each = (right - left_margin - gap * (n - 1)) / n
    for k, panel in enumerate(chart.panels):
        x0 = left_margin + k * (width_each + gap)
        parts += _panel(panel, k, x0, top, x0 + width_each, bottom, chart.labels)
    parts += _legend(chart, right + 14, top + 10)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
