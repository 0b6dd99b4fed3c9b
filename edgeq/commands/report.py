"""``edgeq report``: the benchmark results as a table, Markdown, CSV, JSON or a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    results_dir: Path = typer.Argument(..., help="An `edgeq bench` results directory (cells/*.json, results.json)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | md | csv | json | html"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to FILE (atomically) instead of stdout. "
                                    "html without --out goes to RESULTS_DIR/report.html."),
) -> None:
    """Compare every benchmark cell: latency, size, accuracy, fidelity and speed-up vs FP32, with findings."""
    from edgeq.errors import EdgeqError
    from edgeq.report.bench_render import FORMATS, render
    from edgeq.report.bench_report import build_report
    from edgeq.ui import console
    from edgeq.workdirs import atomic_write_text

    if fmt not in FORMATS:
        raise EdgeqError(f"unknown --format {fmt!r}; choose from: {', '.join(FORMATS)}")
    built = build_report(results_dir)
    if fmt == "html" and out is None:
        out = (results_dir if results_dir.is_dir() else results_dir.parent) / "report.html"
    if out is None:
        if fmt == "table":
            print_table(built)
        else:
            typer.echo(render(built, fmt), nl=False)
        return
    try:
        atomic_write_text(out, render(built, fmt))
    except OSError as exc:
        raise EdgeqError(f"cannot write {out}: {exc.strerror or exc}") from None
    for problem in built.problems:
        console.print(f"[yellow]warning:[/yellow] {problem}")
    console.print(f"report ({fmt}, {len(built.rows)} cells) → {out}")


def print_table(built) -> None:  # built: edgeq.report.bench_report.Report
    """The terminal table (also printed at the end of ``edgeq bench``); 160 columns when not a terminal."""
    from edgeq.report.bench_render import render_table
    from edgeq.ui import console

    typer.echo(render_table(built, width=console.width if console.is_terminal else 160, color=console.is_terminal),
               nl=False)
