"""The columns of the benchmark report (key, header, formatter) and its footnotes, shared by every renderer
(``bench_render`` for table / Markdown / CSV / JSON, ``bench_html``, ``model_card``)."""

from __future__ import annotations

from collections.abc import Callable

from edgeq.report.bench_report import Report, ReportRow, is_fraction_metric


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}" if digits <= 2 else f"{value:.1f}"
    return f"{value:.{digits}f}" if abs(value) >= 1 else f"{value:.{digits + 1}g}"


def _metric(row: ReportRow) -> str:
    if row.metric is None:
        return ""
    return f"{100 * row.metric:.1f}" if is_fraction_metric(row.metric_name) else f"{row.metric:.4g}"


def _delta(row: ReportRow) -> str:
    if row.metric_delta is None:
        return ""
    unit = " pt" if is_fraction_metric(row.metric_name) else ""
    mark = "" if row.delta_same_runtime else "*"
    return f"{row.metric_delta:+.1f}{unit}{mark}"


def _cosine(row: ReportRow) -> str:
    return f"{row.cosine_min:.4f}" if row.cosine_min is not None else ""


def _agreement(row: ReportRow) -> str:
    return f"{100 * row.top1_agreement:.1f}" if row.top1_agreement is not None else ""


def _speedup(row: ReportRow) -> str:
    return f"{row.speedup:.2f}×" if row.speedup is not None else ""


def _executed(row: ReportRow) -> str:
    """The executed precision; "≠" marks one that is not what the artifact's name says."""
    if not row.executed_precision:
        return ""
    return row.executed_precision + (" ≠" if row.precision_match is False else "")


def _status(row: ReportRow) -> str:
    if row.status != "ok":
        return f"FAILED: {row.error or 'no reason recorded'}"
    return "ok (emulated timing)" if row.emulated else "ok"


def metric_header(report: Report) -> str:
    name = next((r.metric_name for r in report.rows if r.metric_name), None)
    if name is None:
        return "metric"
    label = name.replace("top", "top-") if name.startswith("top") else name
    return f"{label} %" if is_fraction_metric(name) else label


Column = tuple[str, str, Callable[[ReportRow], str]]


def columns(report: Report) -> list[Column]:
    """(key, header, formatter) of every displayed column, in order."""
    return [
        ("device", "device", lambda r: r.device + (" (emulated)" if r.emulated else "")),
        ("model", "model", lambda r: r.model),
        ("backend", "backend", lambda r: r.backend),
        ("precision", "prec.", lambda r: r.precision),
        ("executed_precision", "ran", _executed),
        ("threads", "thr", lambda r: str(r.threads)),
        ("size_mb", "size MB", lambda r: _num(r.size_mb, 3)),
        ("p50_ms", "p50 ms", lambda r: _num(r.p50_ms, 3)),
        ("p90_ms", "p90 ms", lambda r: _num(r.p90_ms, 3)),
        ("p99_ms", "p99 ms", lambda r: _num(r.p99_ms, 3)),
        ("speedup", "speed-up vs FP32", _speedup),
        ("throughput", "inf/s", lambda r: _num(r.throughput, 1)),
        ("load_ms", "load ms", lambda r: _num(r.load_ms, 1)),
        ("peak_rss_mb", "RSS MB", lambda r: _num(r.peak_rss_mb, 0)),
        ("model_peak_mb", "model MB", lambda r: _num(r.model_peak_mb, 1)),
        ("metric", metric_header(report), _metric),
        ("metric_delta", "Δ vs FP32", _delta),
        ("cosine_min", "cos min vs FP32", _cosine),
        ("top1_agreement", "top-1 agree %", _agreement),
        ("status", "status", _status),
    ]


_ALWAYS = ("backend", "precision", "threads", "status")


def visible_columns(report: Report) -> list[Column]:
    """Columns for the per-device views: no device column, model only with several models, no all-empty columns."""
    several_models = len({r.model for r in report.rows}) > 1
    return [c for c in columns(report)
            if c[0] != "device" and (c[0] != "model" or several_models)
            and (c[0] in _ALWAYS or any(c[2](r) for r in report.rows))]


def _footnotes(report: Report) -> list[str]:
    notes = ["speed-up: p50 of the FP32 artifact of the same runtime, device and threads ÷ this p50 "
             "(> 1 is faster); not computed on emulated devices."]
    if any(r.executed_precision for r in report.rows):
        notes.append("ran: the precision the runtime executed (its heavy ops), as it reports it; ≠ marks a "
                     "precision other than the artifact's name. model MB: the runner's peak RSS (during load or "
                     "inference, the larger) − its RSS before the runtime was imported (runtime libraries + model "
                     "+ arena).")
    if any(not r.delta_same_runtime for r in report.rows if r.metric_delta is not None):
        notes.append("Δ marked * is against the FP32 artifact of another runtime (no FP32 of the same runtime).")
    return notes
