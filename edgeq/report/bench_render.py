"""Renderers of the benchmark report: rich table (grouped by device), Markdown, CSV, JSON; HTML is in bench_html."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from edgeq.report.bench_columns import _footnotes, visible_columns
from edgeq.report.bench_report import Report

FORMATS = ("table", "md", "csv", "json", "html")


# ---------------------------------------------------------------------------------------------------------------
def render_table(report: Report, width: int | None = None, color: bool = True) -> str:
    """The rich table, one per device, as text (ANSI colours when ``color``)."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 200, force_terminal=color, color_system="standard" if color else None,
                      highlight=False)
    cols = visible_columns(report)
    show_model = len({r.model for r in report.rows}) > 1
    for device in report.devices():
        rows = [r for r in report.rows if r.device == device]
        emulated = rows[0].emulated
        title = f"{device} ({rows[0].device_kind})" + (" · EMULATED: timings not meaningful, not ranked" if emulated else "")
        table = Table(title=title, title_justify="left")
        for key, header, _ in cols:
            table.add_column(header, justify="left" if key in ("model", "backend", "precision", "status") else "right",
                             no_wrap=key in ("backend", "precision"), overflow="fold")
        for row in rows:
            style = "red" if row.status != "ok" else ("dim" if emulated else None)
            table.add_row(*[("FAILED ↓" if key == "status" and row.status != "ok" else fmt(row)) for key, _, fmt in cols],
                          style=style)
        console.print(table)
        for row in rows:
            if row.status != "ok":
                console.print(f"  [red]FAILED[/red] {row.backend} ×{row.threads}"
                              f"{' (' + row.model + ')' if show_model else ''}: {row.error or 'no reason recorded'}",
                              highlight=False, markup=True)
    for line in profile_lines(report):
        console.print(line, markup=False, highlight=False)
    if report.anomalies:
        console.print("[bold]Findings[/bold]")
        for note in report.anomalies:
            console.print(f" • {note}", markup=False)
    for problem in report.problems:
        console.print(f"[yellow]warning:[/yellow] {problem}")
    for note in _footnotes(report):
        console.print(f"[dim]{note}[/dim]")
    return buffer.getvalue()


def profile_lines(report: Report) -> list[str]:
    """Per profiled cell: its slowest layers (mean ms per run, share of the profiled total, executed precision)."""
    lines = []
    for profile in report.profiles:
        total = f" (all layers: {profile.total_ms:.4g} ms per run)" if profile.total_ms else ""
        lines.append(f"Top layers by time: {profile.label}" + ("" if profile.error else total))
        if profile.error:
            lines.append(f"  no per-layer profile: {profile.error}")
        for layer in profile.layers:
            ms = float(layer.get("ms") or 0.0)  # type: ignore[arg-type]
            share = f"{100 * ms / profile.total_ms:5.1f} %" if profile.total_ms else ""
            lines.append(f"  {ms:9.4f} ms {share}  {str(layer.get('precision', '')):5}  "
                         f"{str(layer.get('type', ''))[:28]:28}  {str(layer.get('name', ''))[:60]}")
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """A Markdown section per device, then findings and footnotes."""
    cols = visible_columns(report)
    lines = ["# edgeq benchmark report", ""]
    for device in report.devices():
        rows = [r for r in report.rows if r.device == device]
        heading = f"## {device} ({rows[0].device_kind})"
        if rows[0].emulated:
            heading += " — emulated: timings not meaningful, not ranked"
        lines += [heading, "", "| " + " | ".join(h for _, h, _ in cols) + " |",
                  "|" + "|".join("---" if k in ("model", "backend", "precision", "status") else "---:"
                                 for k, _, _ in cols) + "|"]
        lines += ["| " + " | ".join(_md_escape(fmt(r)) for _, _, fmt in cols) + " |" for r in rows]
        lines.append("")
    if report.profiles:
        lines += ["## Top layers by time (--profile)", ""] + [f"    {line}" for line in profile_lines(report)] + [""]
    if report.anomalies:
        lines += ["## Findings", ""] + [f"- {_md_escape(n)}" for n in report.anomalies] + [""]
    if report.problems:
        lines += ["## Unreadable results", ""] + [f"- {_md_escape(p)}" for p in report.problems] + [""]
    lines += [f"_{n}_" for n in _footnotes(report)]
    return "\n".join(lines) + "\n"


def _clean(value: object) -> object:
    """Floats to 6 significant digits (no 3.9099999999999997 in machine-readable output)."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


def render_csv(report: Report) -> str:
    """Raw numbers, one row per cell (every ReportRow field)."""
    buffer = io.StringIO()
    fields = list(asdict(report.rows[0])) if report.rows else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in report.rows:
        writer.writerow({k: ("" if v is None else _clean(v)) for k, v in asdict(row).items()})
    return buffer.getvalue()


def render_json(report: Report) -> str:
    data = report.to_json()
    data["rows"] = [{k: _clean(v) for k, v in row.items()} for row in data["rows"]]  # type: ignore[attr-defined]
    return json.dumps(data, indent=2) + "\n"


def render(report: Report, fmt: str, color: bool = False) -> str:
    """The report in one of FORMATS."""
    if fmt == "table":
        return render_table(report, color=color)
    if fmt == "md":
        return render_markdown(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return render_json(report)
    if fmt == "html":
        from edgeq.report.bench_html import render_html

        return render_html(report)
    from edgeq.errors import EdgeqError

    raise EdgeqError(f"unknown report format {fmt!r}; choose from: {', '.join(FORMATS)}")
