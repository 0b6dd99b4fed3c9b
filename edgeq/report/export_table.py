"""The table printed after ``edgeq export``: size, ratios and fidelity against FP32 per artifact."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgeq.manifest import Manifest
from edgeq.ui import console


def _mb(size: int) -> str:
    return f"{size / 1e6:.3f}" if size < 10e6 else f"{size / 1e6:.1f}"


def export_rows(manifest: Manifest) -> list[dict[str, str]]:
    """One dict per artifact with display strings (also used by the markdown/CSV reports)."""
    fp32 = {a.runtime: a.size_bytes for a in manifest.artifacts if a.precision == "fp32" and a.status == "ok"}
    rows = []
    for art in manifest.artifacts:
        ver = art.verification
        base = fp32.get(art.runtime)
        rows.append({
            "backend": art.backend,
            "precision": art.precision,
            "status": art.status,
            "size_mb": _mb(art.size_bytes) if art.status == "ok" else "",
            "size_ratio": f"{art.size_bytes / base:.3f}" if base and art.status == "ok" else "",
            "cosine_min": f"{ver.cosine_min:.4f}" if ver else "",
            "top1_agreement": f"{100 * ver.top1_agreement:.1f}%" if ver and ver.top1_agreement is not None else "",
            "max_abs_error": f"{ver.max_abs_error:.3g}" if ver else "",
            "export_s": f"{art.export_seconds:.1f}" if art.export_seconds is not None else "",
            "detail": (art.error or "") if art.status != "ok" else "; ".join(art.notes[:1]),
        })
    return rows


def print_export_table(manifest: Manifest, model_dir: Path) -> None:
    held = manifest.calibration.holdout_samples if manifest.calibration else 0
    table = Table(title=f"edgeq export · {manifest.model.name} ({manifest.model.framework}) · fidelity vs FP32 on "
                        f"{held} held-out samples", title_justify="left")
    for col, justify in [("backend", "left"), ("prec.", "left"), ("size MB", "right"), ("× FP32", "right"),
                         ("cos min", "right"), ("top-1 agree", "right"), ("max |err|", "right"), ("export s", "right")]:
        table.add_column(col, justify=justify, no_wrap=col == "backend")  # type: ignore[arg-type]
    notes = []
    for row in export_rows(manifest):
        style = {"failed": "red", "skipped": "yellow"}.get(row["status"])
        if row["status"] != "ok":
            table.add_row(row["backend"], row["precision"], f"{row['status'].upper()}", style=style)
            notes.append(f"[{style}]{row['backend']}: {row['detail']}[/{style}]")
            continue
        table.add_row(row["backend"], row["precision"], row["size_mb"], row["size_ratio"], row["cosine_min"],
                      row["top1_agreement"], row["max_abs_error"], row["export_s"])
        if row["detail"]:
            notes.append(f"{row['backend']}: {row['detail']}")
    console.print(table)
    for note in notes:
        console.print(f"  {note}")
    console.print(f"manifest: {model_dir / 'manifest.json'}")
