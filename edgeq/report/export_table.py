"""The table printed after ``edgeq export``: size, ratios and fidelity against FP32 per artifact."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from edgeq.manifest import Manifest
from edgeq.ui import console


def _mb(size: int) -> str:
    return f"{size / 1e6:.3f}" if size < 10e6 else f"{size / 1e6:.1f}"


def _value(value: float, metric: str) -> str:
    return f"{100 * value:.2f}%" if metric in ("top1", "top5") else f"{value:.4g}"


def _drop(drop: float, drop_type: str) -> str:
    return f"{100 * drop:+.2f}%" if drop_type == "relative" else f"{drop:+.4f}"


def export_rows(manifest: Manifest) -> list[dict[str, str]]:
    """One dict per artifact with display strings (also used by the markdown/CSV reports)."""
    fp32 = {a.runtime: a.size_bytes for a in manifest.artifacts if a.precision == "fp32" and a.status == "ok"}
    rows = []
    for art in manifest.artifacts:
        ver = art.verification
        worst = ver.worst() if ver else None
        shown = worst or ver  # the worst output (schema 1.0 manifests: output 0)
        base = fp32.get(art.runtime)
        agreements = [o.top1_agreement for o in ver.outputs if o.top1_agreement is not None] if ver else []
        agreement = min(agreements) if agreements else (ver.top1_agreement if ver and not ver.outputs else None)
        rows.append({
            "backend": art.backend,
            "precision": art.precision,
            "status": art.status,
            "size_mb": _mb(art.size_bytes) if art.status == "ok" else "",
            "size_ratio": f"{art.size_bytes / base:.3f}" if base and art.status == "ok" else "",
            "cosine_min": f"{shown.cosine_min:.4f}" if shown else "",
            "worst_output": worst.name if worst is not None and len(ver.outputs) > 1 else "",  # type: ignore[union-attr]
            "cosine_worst": (f"{shown.cosine_min:.4f} ({worst.name})" if worst is not None and len(ver.outputs) > 1
                             else f"{shown.cosine_min:.4f}" if shown else ""),  # type: ignore[union-attr]
            "top1_agreement": f"{100 * agreement:.1f}%" if agreement is not None else "",
            "max_abs_error": f"{shown.max_abs_error:.3g}" if shown else "",
            "export_s": f"{art.export_seconds:.1f}" if art.export_seconds is not None else "",
            "metric": _value(art.evaluation.value, art.evaluation.metric) if art.evaluation else "",
            "drop": _drop(art.evaluation.drop, art.evaluation.drop_type) if art.evaluation else "",
            "float_layers": (f"{len(art.accuracy_control.layers_to_float)} layers to float"
                             f"{'' if art.accuracy_control.met else ', budget NOT met'}"
                             if art.accuracy_control and (art.accuracy_control.layers_to_float
                                                          or not art.accuracy_control.met) else ""),
            "detail": (art.error or "") if art.status != "ok" else "; ".join(art.notes[:1]),
        })
    return rows


def print_export_table(manifest: Manifest, model_dir: Path) -> None:
    held = manifest.calibration.holdout_samples if manifest.calibration else 0
    table = Table(title=f"edgeq export · {manifest.model.name} ({manifest.model.framework}) · fidelity vs FP32 on "
                        f"{held} held-out samples", title_justify="left")
    ev = manifest.evaluation
    columns = [("backend", "left"), ("prec.", "left"), ("size MB", "right"), ("× FP32", "right"),
               ("cos min", "right"), ("top-1 agree", "right"), ("max |err|", "right"), ("export s", "right")]
    if ev is not None:
        columns += [(ev.metric, "right"), ("drop", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=col == "backend")  # type: ignore[arg-type]
    notes = []
    if ev is not None:
        table.add_row("FP32 source", "fp32", "", "", "", "", "", "", _value(ev.reference, ev.metric), "reference",
                      style="dim")
    for row in export_rows(manifest):
        style = {"failed": "red", "skipped": "yellow"}.get(row["status"])
        if row["status"] != "ok":
            table.add_row(row["backend"], row["precision"], f"{row['status'].upper()}", style=style)
            notes.append(f"[{style}]{row['backend']}: {row['detail']}[/{style}]")
            continue
        cells = [row["backend"], row["precision"], row["size_mb"], row["size_ratio"], row["cosine_worst"],
                 row["top1_agreement"], row["max_abs_error"], row["export_s"]]
        table.add_row(*(cells + ([row["metric"], row["drop"]] if ev is not None else [])))
        if row["detail"]:
            notes.append(f"{row['backend']}: {row['detail']}")
        if row["float_layers"]:
            art = manifest.artifact(row["backend"])
            control = art.accuracy_control
            assert control is not None
            floor = manifest.evaluation is not None and manifest.evaluation.metric == "fidelity" \
                and manifest.evaluation.note is not None and manifest.evaluation.note.startswith("--min-fidelity")
            budget = f"--min-fidelity {1 - control.budget:g}" if floor else f"--max-drop {control.budget:g}"
            notes.append(f"{row['backend']}: {budget}: drop {control.drop_before:+.4f} → "
                         f"{control.drop_after:+.4f}, {row['float_layers']}: {', '.join(control.layers_to_float)}"
                         + (f"; latency × {control.latency_ratio_vs_ptq:g} vs plain PTQ"
                            if control.latency_ratio_vs_ptq else ""))
    console.print(table)
    if len(manifest.model.outputs) > 1:
        notes.insert(0, f"{len(manifest.model.outputs)} outputs: cos min and max |err| of the worst output (named), "
                        "top-1 agree of class-score outputs; every output in the manifest (verification.outputs)")
    for note in notes:
        console.print(f"  {note}")
    if ev is not None:
        console.print(f"  eval: {ev.metric} on {ev.samples} samples of {ev.source} (ground truth: {ev.ground_truth})"
                      + (f"; {ev.note}" if ev.note else ""))
    console.print(f"manifest: {model_dir / 'manifest.json'}")
