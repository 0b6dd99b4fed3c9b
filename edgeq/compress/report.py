"""The per-step rich table printed by ``edgeq compress`` (the JSON report is written by the runner)."""

from __future__ import annotations

from typing import Any


def _size(num: int) -> str:
    return f"{num / 1024:.1f} KiB" if num < 1 << 20 else f"{num / (1 << 20):.2f} MiB"


def print_report(report: dict[str, Any]) -> None:
    """One row per step: params (non-zero), MACs, weight size (zlib), top-1 and its change, time."""
    from rich.table import Table

    from edgeq.ui import console

    table = Table(title=f"edgeq compress: {report['model']}")
    for column in ("step", "params", "non-zero", "MACs", "weights", "zlib", "top-1", "Δ top-1", "s"):
        table.add_column(column, justify="left" if column == "step" else "right")
    base = report["steps"][0]
    for row in report["steps"]:
        top1 = row.get("top1")
        delta = f"{(top1 - base['top1']) * 100:+.2f} pt" if top1 is not None and base.get("top1") is not None else "-"
        table.add_row(
            row["step"], f"{row['params']:,} ({row['params'] / base['params']:.0%})", f"{row['nonzero_params']:,}",
            f"{row['macs']:,} ({row['macs'] / max(base['macs'], 1):.0%})", _size(row["weights_bytes"]),
            _size(row["weights_zlib_bytes"]), f"{top1:.2%}" if top1 is not None else "-", delta, f"{row['seconds']:.1f}",
        )
    console.print(table)
    artifacts = report.get("artifacts", {})
    if "pt2" in artifacts:
        console.print(f"model.pt2: {artifacts['pt2']['path']} (max abs diff after reload {artifacts['pt2']['max_abs_error']:.1e})")
    py = artifacts.get("py", {})
    if "spec" in py:
        console.print(f"model.py:  {py['spec']} --weights {py['weights']} (max abs diff {py['max_abs_error']:.1e})")
    elif "skipped" in py:
        console.print(f"[yellow]model.py not written[/yellow]: {py['skipped']}")
