"""The CI gate of ``edgeq bench``: ``--fail-under METRIC=VALUE`` (repeatable) and ``--max-drop X``.

A release pipeline stops on a regression: every ok cell that reports the metric is checked, and when any falls
short ``edgeq bench`` exits with :data:`GATE_EXIT_CODE`, naming each failing cell (and only those).

Metrics (as in ``edgeq report``): ``top1`` (or any metric of the eval set, e.g. ``top5``), ``fidelity`` (the
cosine minimum against the FP32 reference), ``agreement`` (top-1 agreement with it) and ``speedup`` (FP32 p50 ÷
this p50, same runtime/device/threads). A metric a cell does not have is not checked for that cell: FP32 cells
are their own reference (no fidelity, no speed-up) and emulated cells have no speed-up; a gate on a metric that no
cell has is a usage error. ``--max-drop X`` fails cells whose primary metric (e.g. top1, a fraction) is more than
X below the FP32 artifact's on the same device (0.01 = one percentage point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeq.errors import EdgeqError
from edgeq.report.bench_report import Report, ReportRow, is_fraction_metric

GATE_EXIT_CODE = 3
"""``edgeq bench`` exit status when a ``--fail-under`` / ``--max-drop`` check fails (1: every cell failed,
2: bad input)."""

_ALIASES: dict[str, Callable[[ReportRow], float | None]] = {
    "fidelity": lambda r: r.cosine_min,
    "cosine": lambda r: r.cosine_min,
    "agreement": lambda r: r.top1_agreement,
    "speedup": lambda r: r.speedup if r.speedup_reference != r.backend else None,  # FP32 rows: the reference
}


@dataclass(frozen=True)
class Threshold:
    metric: str
    minimum: float


def parse_thresholds(specs: list[str]) -> list[Threshold]:
    """``["top1=0.97", "speedup=1.5"]`` -> thresholds; one-line error for anything else."""
    thresholds = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        try:
            minimum = float(value)
        except ValueError:
            minimum = None
        if not sep or not name.strip() or minimum is None:
            raise EdgeqError(f"--fail-under wants METRIC=VALUE (e.g. top1=0.97, fidelity=0.99, speedup=1.5), got {spec!r}")
        thresholds.append(Threshold(name.strip().lower(), minimum))
    return thresholds


def _value(row: ReportRow, metric: str) -> float | None:
    if metric in _ALIASES:
        return _ALIASES[metric](row)
    return row.metric if row.metric_name == metric else None


def _label(row: ReportRow) -> str:
    return f"{row.model}/{row.backend} on {row.device} ×{row.threads}"


def check_gate(report: Report, fail_under: list[Threshold], max_drop: float | None) -> list[str]:
    """One line per failing (cell, check); empty when the gate passes. EdgeqError for a gate nothing can answer."""
    ok = [r for r in report.rows if r.status == "ok"]
    failures: list[str] = []
    for threshold in fail_under:
        measured = [(row, _value(row, threshold.metric)) for row in ok]
        measured = [(row, value) for row, value in measured if value is not None]
        if not measured:
            known = sorted({*_ALIASES, *(r.metric_name for r in ok if r.metric_name)})
            raise EdgeqError(f"--fail-under {threshold.metric}: no cell reports it (known here: {', '.join(known)}; "
                             f"top1 and fidelity need --eval)")
        for row, value in measured:
            if value < threshold.minimum:
                failures.append(f"{_label(row)}: {threshold.metric} {value:.4g} < {threshold.minimum:g}")
    if max_drop is not None:
        with_delta = [r for r in ok if r.metric_delta is not None]
        if not with_delta:
            raise EdgeqError("--max-drop: no cell has a metric and an FP32 reference to compare with (needs --eval "
                             "with labels and an FP32 artifact)")
        for row in with_delta:
            drop = -float(row.metric_delta) / (100.0 if is_fraction_metric(row.metric_name) else 1.0)  # type: ignore[arg-type]
            if drop > max_drop:
                failures.append(f"{_label(row)}: {row.metric_name} drops {drop:.4g} vs {row.delta_reference} "
                                f"(> --max-drop {max_drop:g})")
    return failures
