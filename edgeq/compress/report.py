"""The per-step rich table printed by ``edgeq compress`` (the JSON report is written by the runner)."""

from __future__ import annotations

from typing import Any


def print_report(report: dict[str, Any]) -> None:
    """One row per step: params (non-zero), MACs, weight size (zlib), top-1 and its change (points), time."""
    from rich import box
    from rich.table import Table

    from edgeq.ui import console

    table = Table(title=f"edgeq compress: {report['model']}", box=box.SIMPLE_HEAD)
    sparse = any(row["nonzero_params"] != row["params"] for row in report["steps"])
    columns = ["step", "params", *(["nonzero"] if sparse else []), "MACs", "MACs %", "KiB", "zlib KiB", "top-1",
               "Δ pt", "s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "step" else "right", no_wrap=column == "step")
    base = report["steps"][0]
    for row in report["steps"]:
        top1 = row.get("top1")
        delta = f"{(top1 - base['top1']) * 100:+.2f}" if top1 is not None and base.get("top1") is not None else "-"
        cells = [row["step"], f"{row['params'] / 1000:.1f}k", *([f"{row['nonzero_params'] / 1000:.1f}k"] if sparse else []),
                 f"{row['macs'] / 1e6:.2f}M", f"{row['macs'] / max(base['macs'], 1):.0%}", f"{row['weights_bytes'] / 1024:.0f}",
                 f"{row['weights_zlib_bytes'] / 1024:.0f}", f"{top1:.2%}" if top1 is not None else "-", delta,
                 f"{row['seconds']:.1f}"]
        table.add_row(*cells)
    console.print(table)
    artifacts = report.get("artifacts", {})
    if "pt2" in artifacts:
        pt2 = artifacts["pt2"]
        console.print(f"model.pt2: {pt2['path']} (max abs diff after reload {pt2['max_abs_error']:.1e})")
        if pt2.get("load_model_error"):
            console.print(f"[yellow]edgeq.models.load_model cannot load model.pt2[/yellow] ({pt2['load_model_error']}); "
                          "checked with torch.export.load instead — give edgeq export model.py")
    py = artifacts.get("py", {})
    if "spec" in py:
        console.print(f"model.py:  {py['spec']} --weights {py['weights']} (max abs diff {py['max_abs_error']:.1e})")
    elif "skipped" in py:
        console.print(f"[yellow]model.py not written[/yellow]: {py['skipped']}")
