"""A `Chart` as one interactive HTML page (plotly), plotly.js embedded so that it works offline.

Hovering a marker names it; clicking a marker that has a url opens the url in a new tab.
"""

from __future__ import annotations

import html

from .plot_chart import Chart

DIV_ID = "kiln-plot"

# plotly has no link on points: open the clicked point's url (its customdata) ourselves
_CLICK_SCRIPT = """
var gd = document.getElementById('{plot_id}');
gd.on('plotly_click', function (event) {
  var point = event.points && event.points[0];
  var url = point && point.customdata;
  if (typeof url === 'string' && url.length > 0) { window.open(url, '_blank', 'noopener'); }
});
"""


def figure(chart: Chart):
    """The plotly Figure of `chart` (one subplot per panel, side by side)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(chart.panels), subplot_titles=[html.escape(p.title) for p in chart.panels] if len(chart.panels) > 1 else None)
    for col, panel in enumerate(chart.panels, 1):
        for series in panel.series:
            name = html.escape(series.name)
            if series.line:
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in series.line],
                        y=[p[1] for p in series.line],
                        mode="lines",
                        name=f"{name} {series.line_name}".strip(),
                        legendgroup=name,
                        showlegend=False,
                        hoverinfo="skip",
                        line=dict(color=series.color, width=1.5, dash="dash" if series.dashed else "solid"),
                    ),
                    row=1,
                    col=col,
                )
            errors = [m.y_err for m in series.markers]
            fig.add_trace(
                go.Scatter(
                    x=[m.x for m in series.markers],
                    y=[m.y for m in series.markers],
                    mode="markers+text" if chart.labels else "markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    text=[html.escape(m.name) for m in series.markers],
                    textposition="top right",
                    hovertext=["<br>".join(html.escape(line) for line in m.hover) for m in series.markers],
                    hoverinfo="text",
                    customdata=[m.url or "" for m in series.markers],
                    marker=dict(
                        color=series.color,
                        size=10,
                        symbol=["circle-open" if m.hollow else "circle" for m in series.markers],
                        line=dict(width=2, color=series.color),
                    ),
                    error_y=dict(type="data", array=errors, visible=True, thickness=1) if any(errors) else None,
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=html.escape(panel.x_title), type="log" if panel.log_x else "linear", row=1, col=col)
        fig.update_yaxes(title_text=html.escape(panel.y_title), type="log" if panel.log_y else "linear", row=1, col=col)
    fig.update_layout(title=dict(text=html.escape(chart.title)), template="plotly_white", hovermode="closest", legend=dict(itemclick="toggle"))
    if chart.note:
        fig.add_annotation(text=html.escape(chart.note), xref="paper", yref="paper", x=0, y=1.02, xanchor="left", yanchor="bottom", showarrow=False, font=dict(size=11, color="#555"))
    return fig


def render_html(chart: Chart, filename: str) -> str:
    """The whole page; `filename` names the images saved from the page's camera button."""
    fig = figure(chart)
    config = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg", "filename": filename}}
    return fig.to_html(
        include_plotlyjs=True,
        full_html=True,
        config=config,
        post_script=_CLICK_SCRIPT,
        div_id=DIV_ID,
        default_width="100%",
        default_height=f"{chart.height}px",
    )
