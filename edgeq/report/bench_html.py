"""The HTML report: ONE self-contained file (plotly.js inlined, no network) with the table and, per device and
model, a latency-vs-accuracy scatter (fidelity when there is no metric) with the Pareto front highlighted."""

from __future__ import annotations

import html
from datetime import datetime, timezone

from edgeq.report.bench_columns import _footnotes, visible_columns
from edgeq.report.bench_report import Report, ReportRow, is_fraction_metric, pareto_front
from edgeq.runtimes.precision import REFERENCE_PRECISION, precision_info

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 24px; color: #1d2330; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border: 1px solid #d6dae3; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #eef1f6; } td.l, th.l { text-align: left; }
tr.failed td { color: #b00020; background: #fff3f3; } tr.emulated td { color: #6a7080; }
.badge { background: #f2b705; color: #1d2330; border-radius: 4px; padding: 1px 6px; font-size: 12px; }
.note { color: #555; font-size: 12px; } ul.findings li { margin: 3px 0; }
.scroll { overflow-x: auto; } .plot { width: 100%; max-width: 1100px; height: 460px; }
"""

_LEFT = ("model", "backend", "precision", "status")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _y_axis(rows: list[ReportRow]) -> tuple[str, str, bool]:
    """(what, axis title, higher is better) for a group's scatter."""
    if any(r.metric is not None for r in rows):
        name = next(r.metric_name for r in rows if r.metric is not None)
        return "metric", (f"{name} (%)" if is_fraction_metric(name) else str(name)), True
    if any(r.cosine_min is not None for r in rows):
        return "fidelity", "fidelity: cosine min vs FP32", True
    return "size", "size (MB)", False


def _y_value(row: ReportRow, what: str) -> float | None:
    if what == "metric":
        if row.metric is None:
            return None
        return 100 * row.metric if is_fraction_metric(row.metric_name) else row.metric
    if what == "fidelity":
        return row.cosine_min
    return row.size_mb


def scatter_figure(device: str, model: str, rows: list[ReportRow]):  # type: ignore[no-untyped-def]
    """Plotly figure: p50 latency vs accuracy/fidelity of the ok cells of one (device, model)."""
    import plotly.graph_objects as go

    emulated = any(r.emulated for r in rows)
    what, y_title, higher_better = _y_axis(rows)
    points = [(r, r.p50_ms, _y_value(r, what)) for r in rows if r.status == "ok" and r.p50_ms is not None]
    points = [(r, x, y) for r, x, y in points if y is not None]
    fig = go.Figure()
    for precision in sorted({r.precision for r, _, _ in points}, key=lambda p: (p != REFERENCE_PRECISION, p)):
        info = precision_info(precision)
        mine = [(r, x, y) for r, x, y in points if r.precision == precision]
        fig.add_trace(go.Scatter(
            x=[x for _, x, _ in mine], y=[y for _, _, y in mine], mode="markers+text",
            text=[f"{r.backend} ×{r.threads}" for r, _, _ in mine], textposition="top center",
            name=info.label + (" (emulated timing)" if emulated else ""),
            marker={"size": 13, "symbol": "diamond" if emulated else "circle",
                    "color": info.color, "line": {"width": 1, "color": "#333"}},
            hovertemplate="%{text}<br>p50 %{x:.4g} ms<br>" + y_title + " %{y:.4g}<extra></extra>",
        ))
    title = f"{device} · {model}: p50 latency vs {y_title}"
    if emulated:
        title += " — EMULATED device: latency not meaningful, no Pareto front"
    elif points:
        coords = [(x, y if higher_better else -y) for _, x, y in points]
        front = sorted(pareto_front(coords), key=lambda i: points[i][1])
        fig.add_trace(go.Scatter(
            x=[points[i][1] for i in front], y=[points[i][2] for i in front], mode="lines+markers",
            name="Pareto front", line={"color": "#d62728", "width": 3, "dash": "dot"},
            marker={"size": 20, "color": "rgba(214,39,40,0.25)", "line": {"width": 2, "color": "#d62728"}},
            hoverinfo="skip",
        ))
    fig.update_layout(title={"text": title, "font": {"size": 15}}, xaxis_title="p50 latency (ms)",
                      yaxis_title=y_title, template="plotly_white", height=460,
                      margin={"l": 60, "r": 30, "t": 60, "b": 50},
                      legend={"orientation": "h", "y": -0.18})
    return fig, len(points)


def _table_html(report: Report, rows: list[ReportRow]) -> str:
    cols = visible_columns(report)
    head = "".join(f'<th class="{"l" if k in _LEFT else ""}">{_e(h)}</th>' for k, h, _ in cols)
    body = []
    for row in rows:
        css = "failed" if row.status != "ok" else ("emulated" if row.emulated else "")
        cells = "".join(f'<td class="{"l" if k in _LEFT else ""}">{_e(fmt(row))}</td>' for k, _, fmt in cols)
        body.append(f'<tr class="{css}">{cells}</tr>')
    return (f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table></div>")


def render_html(report: Report) -> str:
    """The whole report page; plotly.js is embedded once, inline (works offline, no CDN)."""
    import plotly.io as pio

    parts: list[str] = []
    js_included = False
    for device in report.devices():
        device_rows = [r for r in report.rows if r.device == device]
        emulated = device_rows[0].emulated
        badge = ' <span class="badge">emulated — timings not meaningful</span>' if emulated else ""
        parts.append(f"<h2>{_e(device)} <span class='note'>({_e(device_rows[0].device_kind)})</span>{badge}</h2>")
        parts.append(_table_html(report, device_rows))
        for model in sorted({r.model for r in device_rows}):
            fig, count = scatter_figure(device, model, [r for r in device_rows if r.model == model])
            if not count:
                parts.append(f"<p class='note'>{_e(model)}: no successful timed cells to plot.</p>")
                continue
            parts.append(pio.to_html(fig, include_plotlyjs=not js_included, full_html=False,
                                     config={"displaylogo": False, "responsive": True},
                                     default_height="460px", default_width="100%"))
            js_included = True
    findings = "".join(f"<li>{_e(n)}</li>" for n in report.anomalies)
    problems = "".join(f"<li>{_e(p)}</li>" for p in report.problems)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>edgeq benchmark report</title><style>{_CSS}</style></head><body>"
        f"<h1>edgeq benchmark report</h1><p class='note'>results: {_e(report.source)} · generated {created}</p>"
        + "".join(parts)
        + (f"<h2>Findings</h2><ul class='findings'>{findings}</ul>" if findings else "")
        + (f"<h2>Unreadable results</h2><ul>{problems}</ul>" if problems else "")
        + "".join(f"<p class='note'>{_e(n)}</p>" for n in _footnotes(report))
        + "</body></html>\n"
    )
