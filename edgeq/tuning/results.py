"""What ``edgeq tune`` leaves behind: ``pareto.json``, the front as an 80-column table, ``report.html`` with one
Pareto plot per device (the bench report's scatter), and ``best/<device>/`` — a normal export directory.

Best per device: among trials that meet the budget, the lowest latency on that device (devices that are emulated,
or searches without the latency objective, use the first other objective: size, then memory, then the metric);
ties go to the better metric. When no trial meets the budget, the closest trial (smallest constraint violation)
is saved instead and the exit code is 3.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeq.tuning.space import OPTION_CHOICES
from edgeq.workdirs import atomic_write_text, replace_dir

Confirm = Callable[[str, list[dict[str, Any]]], dict[str, float]]
"""``confirm(device, candidate rows) -> {recipe key: median p50 ms}`` (side-by-side re-measurement)."""

TABLE_WIDTH = 80

EXIT_BUDGET_NOT_MET = 3
"""Exit code when no trial meets --max-drop / --min-fidelity (the closest artifacts are still saved)."""


@dataclass
class TuneResult:
    """What ``edgeq.tune`` returns: the study, where results went, and whether the budget was met."""

    out: Path
    study: Any
    objectives: list[Any]
    """The study's objectives (``edgeq.tuning.study.Objective``)."""
    trials: list[dict[str, Any]]
    front: list[int]
    best: dict[str, int | None]
    budget_met: bool
    wall_s: float
    executor: str
    total_wall_s: float = 0.0
    """Search wall time summed over every run of this DIR (a resumed search adds up)."""

    @property
    def exit_code(self) -> int:
        if not any(t["state"] == "COMPLETE" for t in self.trials):
            return 1
        return 0 if self.budget_met else EXIT_BUDGET_NOT_MET



def _trial_rows(study: Any, objectives: list[Any]) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING or trial.state == TrialState.WAITING:
            continue
        build = trial.user_attrs.get("build") or {}
        constraint = trial.user_attrs.get("constraint")
        row: dict[str, Any] = {
            "number": trial.number, "state": trial.state.name, "key": trial.user_attrs.get("key"),
            "params": trial.params, "recipe": _recipe_of(trial), "backend": build.get("backend"),
            "precision": build.get("precision"), "seed_recipe": bool(trial.user_attrs.get("seed_recipe")),
            "objectives": dict(zip([o.name for o in objectives], trial.values)) if trial.values else None,
            "metric": build.get("metric"), "fidelity": build.get("fidelity"), "size_bytes": build.get("size_bytes"),
            "cells": trial.user_attrs.get("cells") or {}, "layers_to_float": build.get("layers_to_float"),
            "constraint": constraint[0] if constraint else None,
            "constraint_met": bool(constraint) and constraint[0] <= 0 and trial.state != TrialState.FAIL,
            "error": trial.user_attrs.get("error") or trial.user_attrs.get("pruned"),
            "manifest_dir": build.get("manifest_dir"), "on_front": False, "on_front_by_device": {},
        }
        rows.append(row)
    return rows


def _recipe_of(trial: Any) -> dict[str, Any]:
    backend = trial.params.get("backend")
    recipe: dict[str, Any] = {"backend": backend}
    for name, value in trial.params.items():
        if name.startswith(f"{backend}."):
            recipe[name.split(".", 1)[1]] = value
    return recipe


def dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, direction in zip(a, b, directions):
        x, y = (x, y) if direction == "minimize" else (-x, -y)
        if x > y:
            return False
        better = better or x < y
    return better


def front_of(rows: list[dict[str, Any]], names: list[str], directions: list[str]) -> list[int]:
    """Trial numbers on the Pareto front of ``rows`` (one trial per recipe: repeats of a recipe are left out)."""
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(str(row["key"]), row)
    values = {r["number"]: [r["objectives"][n] for n in names] for r in unique.values()}
    return sorted(n for n, v in values.items()
                  if not any(dominates(w, v, directions) for m, w in values.items() if m != n))


def _label(row: dict[str, Any]) -> str:
    recipe = dict(row["recipe"])
    parts = [str(recipe.pop("backend"))]
    if "calib_method" in recipe:
        parts.append(f"{recipe.pop('calib_method')}/{recipe.pop('calib_samples', '')}")
    defaults = {k: v[0] for k, v in OPTION_CHOICES.get(str(parts[0]), {}).items()}
    for name, value in recipe.items():
        if (value in (0, False) and name in ("fallback", "accuracy_control", "qat_epochs")) or (
                defaults.get(name, object()) == value):
            continue
        short = {"fallback": "fb", "accuracy_control": "ac", "qat_epochs": "qat"}.get(name, name.split("_")[-1])
        parts.append(f"{short}{value}" if name in ("fallback", "qat_epochs") else f"{short}={value}")
    return " ".join(parts)


def _ranking_key(row: dict[str, Any], device: str, objectives: list[Any], higher: bool) -> tuple[float, ...]:
    metric = float((row.get("metric") or {}).get("value", 0.0))
    metric_key = -metric if higher else metric
    objs = row.get("objectives") or {}
    latency = f"latency_ms@{device}"
    if latency in objs:
        return (objs[latency], metric_key, row.get("size_bytes") or 0)
    for name in ("size_mb", "memory_mb"):
        if name in objs:
            return (objs[name], metric_key)
    return (metric_key, row.get("size_bytes") or 0)


CONFIRM_CANDIDATES = 3
"""Before a device's best is chosen by latency, its fastest distinct candidates are timed again side by side,
together with the default recipes whose search latency is within ``SEED_WITHIN`` × the fastest (at most
``CONFIRM_MAX`` artifacts): one search cell per artifact is noisy on a busy host."""
SEED_WITHIN = 2.0
CONFIRM_MAX = 8


def choose_best(rows: list[dict[str, Any]], devices: list[Any], objectives: list[Any], higher: bool,
                confirm: Confirm | None = None) -> tuple[dict[str, int | None], bool, dict[str, Any]]:
    """Trial number of the best artifact per device, whether it meets the budget (else: the closest), and the
    side-by-side re-measurement of the fastest candidates (one search cell per artifact is noisy on a busy host).
    """
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    feasible = [r for r in complete if r["constraint_met"]]
    best: dict[str, int | None] = {}
    confirmed: dict[str, Any] = {}
    for device in devices:
        if feasible:
            pool = sorted(feasible, key=lambda r: _ranking_key(r, device.name, objectives, higher))
        else:
            closest = [r for r in rows if r["state"] in ("COMPLETE", "PRUNED") and r["constraint"] is not None]
            pool = sorted(closest, key=lambda r: (r["constraint"], _ranking_key(r, device.name, objectives, higher)
                                                  if r["objectives"] else ()))
        latency = f"latency_ms@{device.name}"
        if confirm is not None and feasible and pool and latency in (pool[0].get("objectives") or {}):
            fastest = pool[0]["objectives"][latency]
            distinct: list[dict[str, Any]] = []
            for row in pool:  # the fastest few, and the default recipes (the baselines) within 2× of the fastest
                wanted = len(distinct) < CONFIRM_CANDIDATES or (
                    row["seed_recipe"] and row["objectives"][latency] <= SEED_WITHIN * fastest)
                if wanted and all(row["key"] != kept["key"] for kept in distinct) and len(distinct) < CONFIRM_MAX:
                    distinct.append(row)
            if len(distinct) > 1:
                medians = confirm(device.name, distinct)
                confirmed[device.name] = {str(r["number"]): medians.get(str(r["key"])) for r in distinct}
                timed = [r for r in distinct if medians.get(str(r["key"])) is not None]
                if timed:
                    pool = sorted(timed, key=lambda r: (medians[str(r["key"])],
                                                        *_ranking_key(r, device.name, objectives, higher)[1:]))
        best[device.name] = pool[0]["number"] if pool else None
    return best, bool(feasible), confirmed


def install_best(out: Path, device: str, row: dict[str, Any], met: bool) -> Path:
    """Copy the trial's export directory to ``DIR/best/<device>/`` atomically, with ``tune.json`` beside it."""
    source = Path(row["manifest_dir"]).parent
    final = out / "best" / device
    tmp = final.with_name(f".{device}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("failed.json", "ranking.json", "logs"))
    atomic_write_text(tmp / "tune.json", json.dumps(
        {"device": device, "trial": row["number"], "recipe": row["recipe"], "objectives": row["objectives"],
         "metric": row["metric"], "fidelity": row["fidelity"], "constraint_met": met,
         "note": None if met else "no trial met the budget: this is the closest one"}, indent=2))
    replace_dir(tmp, final)
    return final


def render_front(rows: list[dict[str, Any]], front: list[int], objectives: list[Any], best: dict[str, int | None],
                 width: int = TABLE_WIDTH) -> str:
    """The front as plain text no wider than ``width`` columns (best-per-device marked with *)."""
    names = [o.name for o in objectives if not o.quality]
    heads = [n.replace("latency_ms@", "ms@")[:10] for n in names]
    by_number = {r["number"]: r for r in rows}
    metric_name = next((str(r["metric"]["name"]) for r in rows if r.get("metric")), "metric")
    fixed = 4 + 1 + 9 + 1 + 8 + 1 + 7 + 1 + 3 + sum(len(h) + 1 for h in heads)  # #, metric, drop, cos, ok
    recipe_width = max(12, width - fixed - len(heads))
    lines = [f"{'#':>4} {'recipe':<{recipe_width}} " + " ".join(f"{h:>{max(len(h), 7)}}" for h in heads)
             + f" {metric_name[:9]:>9} {'drop':>8} {'cos min':>7} ok"]
    starred = {n for n in best.values() if n is not None}
    for number in front:
        row = by_number[number]
        label = ("*" if number in starred else " ") + _label(row)
        if len(label) > recipe_width:
            label = label[:recipe_width - 1] + "…"
        values = [row["objectives"].get(n) for n in names]
        metric = row.get("metric") or {}
        value = metric.get("value")
        shown = f"{100 * value:.2f}%" if value is not None and metric.get("name") in ("top1", "top5") else (
            f"{value:.4g}" if value is not None else "")
        drop = f"{metric.get('drop'):+.4f}" if metric.get("drop") is not None else ""
        cosine = (row.get("fidelity") or {}).get("cosine_min")
        cos = f"{cosine:.5f}" if cosine is not None else ""
        lines.append(f"{number:>4} {label:<{recipe_width}} "
                     + " ".join(f"{v:>{max(len(h), 7)}.3g}" if v is not None else " " * max(len(h), 7)
                                for v, h in zip(values, heads))
                     + f" {shown:>9} {drop:>8} {cos:>7} {'yes' if row['constraint_met'] else 'no':>2}")
    return "\n".join(line[:width] for line in lines)


def _html(rows: list[dict[str, Any]], devices: list[Any], model: str, table: str, wall: float) -> str:
    """One self-contained page: per device, the bench report's latency-vs-metric scatter with its Pareto front."""
    import html

    import plotly.io as pio

    from edgeq.report.bench_html import _CSS, scatter_figure
    from edgeq.report.bench_report import ReportRow

    parts, js = [], False
    for device in devices:
        report_rows = []
        for row in rows:
            cell = row["cells"].get(device.name) or {}
            if row["state"] != "COMPLETE" or cell.get("p50_ms") is None:
                continue
            metric = row.get("metric") or {}
            report_rows.append(ReportRow(
                model=model, device=device.name, device_kind=device.kind, emulated=bool(cell.get("emulated")),
                backend=f"#{row['number']} {_label(row)}", runtime="", precision=str(row.get("precision")),
                threads=int(cell.get("best_threads") or 1), status="ok", error=None, cell_id="",
                size_mb=(row.get("size_bytes") or 0) / 1e6, load_ms=None, first_ms=None, p50_ms=cell["p50_ms"],
                p90_ms=None, p99_ms=None, throughput=None, peak_rss_mb=cell.get("peak_rss_mb"),
                metric_name=metric.get("name"), metric=metric.get("value"),
                cosine_min=(row.get("fidelity") or {}).get("cosine_min")))
        parts.append(f"<h2>{html.escape(device.name)}</h2>")
        if not report_rows:
            parts.append("<p class='note'>no completed trial was timed on this device.</p>")
            continue
        fig, _count = scatter_figure(device.name, model, report_rows)
        parts.append(pio.to_html(fig, include_plotlyjs=not js, full_html=False,
                                 config={"displaylogo": False, "responsive": True}))
        js = True
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>edgeq tune report</title>"
            f"<style>{_CSS}</style></head><body><h1>edgeq tune · {html.escape(model)}</h1>"
            f"<p class='note'>{len(rows)} trials, search wall time {wall:g} s · generated {created}</p>"
            f"<h2>Pareto front</h2><pre>{html.escape(table)}</pre>" + "".join(parts) + "</body></html>\n")


def write_results(request: Any, out: Path, study: Any, objectives: list[Any], devices: list[Any], started: float,
                  executor: str, confirm: Confirm | None = None) -> TuneResult:
    """pareto.json, report.html, best/<device>/; returns the TuneResult. ``started``: ``time.perf_counter()`` at
    the start of this run (the wall time includes the side-by-side confirmation)."""
    import time

    rows = _trial_rows(study, objectives)
    names, directions = [o.name for o in objectives], [o.direction for o in objectives]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    feasible = [r for r in complete if r["constraint_met"]]
    front = front_of(feasible or complete, names, directions)
    higher = next((o.direction == "maximize" for o in objectives if o.kind == "metric"), True)
    for row in rows:
        row["on_front"] = row["number"] in front
    for device in devices:
        latency = f"latency_ms@{device.name}"
        if latency in names:
            per_device = front_of(feasible or complete, [latency, "metric", "fidelity"],
                                  ["minimize", "maximize" if higher else "minimize", "maximize"])
            for row in rows:
                row["on_front_by_device"][device.name] = row["number"] in per_device
    best, met, confirmed = choose_best(rows, devices, objectives, higher, confirm)
    wall = round(time.perf_counter() - started, 1)
    for device, number in best.items():
        row = next((r for r in rows if r["number"] == number), None)
        if row is not None and row.get("manifest_dir"):
            install_best(out, device, row, met)
    table = render_front(rows, front, objectives, best)
    model = next((Path(r["manifest_dir"]).name for r in rows if r.get("manifest_dir")), "model")
    previous = json.loads((out / "pareto.json").read_text()).get("runs", []) if (out / "pareto.json").is_file() else []
    runs = [*previous, {"wall_s": wall, "executor": executor}]
    pareto = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": request.model,
              "objectives": [{"name": o.name, "direction": o.direction} for o in objectives],
              "budget": {"max_drop": request.max_drop, "min_fidelity": request.min_fidelity,
                         "drop_type": request.drop_type},
              "devices": {d.name: {"kind": d.kind, "emulated": d.emulated} for d in devices},
              "budget_met": met, "front": front, "best": best, "confirmed_p50_ms": confirmed, "wall_s": wall,
              "executor": executor, "runs": runs,
              "total_wall_s": round(sum(r["wall_s"] for r in runs), 1),
              "trials": rows}
    atomic_write_text(out / "pareto.json", json.dumps(pareto, indent=2, default=str))
    atomic_write_text(out / "front.txt", table + "\n")
    with contextlib.suppress(ImportError):  # plotly is the report extra: the JSON and the table are still written
        atomic_write_text(out / "report.html", _html(rows, devices, model, table, wall))
    return TuneResult(out=out, study=study, objectives=objectives, trials=rows, front=front, best=best,
                      budget_met=met, wall_s=wall, executor=executor, total_wall_s=pareto["total_wall_s"])
