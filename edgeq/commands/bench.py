"""``edgeq bench``: artifacts × devices × threads, resumable, one JSON file per cell."""

from __future__ import annotations

from pathlib import Path

import typer


def bench(
    artifacts_dir: Path = typer.Argument(..., help="An `edgeq export` output directory (manifests found below it)."),
    out: Path = typer.Option(..., "--out", "-o", help="Results directory: cells/<id>.json + results.json"),
    devices: Path | None = typer.Option(None, "--devices", help="devices.yaml (default ./devices.yaml, else this machine)"),
    device: list[str] | None = typer.Option(None, "--device", "-d", help="Only this device (repeatable)."),
    eval_spec: str | None = typer.Option(None, "--eval", help="Eval set (same forms as --calib); adds metrics + fidelity."),
    eval_samples: int | None = typer.Option(None, "--eval-samples", min=1, help="Use only the first N eval samples."),
    runs: int = typer.Option(50, "--runs", min=1, help="Minimum timed runs per cell."),
    min_seconds: float = typer.Option(2.0, "--min-seconds", min=0.0, help="Minimum timed duration per cell."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed runs before timing."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random timing inputs."),
    timeout: float = typer.Option(600.0, "--timeout", min=0.1, help="Seconds before a cell's runner is killed."),
    force: bool = typer.Option(False, "--force", help="Re-run every cell, finished or not."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-run cells that failed before."),
    profile: bool = typer.Option(False, "--profile", help="Add per-layer times + executed precision per op "
                                 "(OpenVINO perf counters, ONNX Runtime profiling) to each cell."),
    fail_under: list[str] | None = typer.Option(None, "--fail-under", help="CI gate METRIC=VALUE (repeatable): "
                                                "top1, fidelity, agreement, speedup …; exit 3 naming the cells "
                                                "below it."),
    max_drop: float | None = typer.Option(None, "--max-drop", min=0.0, help="CI gate: exit 3 when a cell's "
                                          "metric is more than X below FP32's (0.01 = 1 point of top-1)."),
) -> None:
    """Benchmark every exported artifact on every device (resumes: finished cells are skipped)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgeq.benchmark import BenchRequest, run_bench
    from edgeq.commands.report import print_table
    from edgeq.gate import GATE_EXIT_CODE, check_gate, parse_thresholds
    from edgeq.report.bench_report import build_report
    from edgeq.ui import console

    request = BenchRequest(artifacts_dir=artifacts_dir, out=out, devices_file=devices, device_names=device or [],
                           eval_spec=eval_spec, eval_samples=eval_samples, runs=runs, min_seconds=min_seconds,
                           warmup=warmup, seed=seed, timeout_s=timeout, force=force, retry_failed=retry_failed,
                           profile=profile)
    thresholds = parse_thresholds(fail_under or [])  # a malformed gate fails before any cell runs
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False)
    task = progress.add_task("cells", total=None)

    def on_plan(todo: int, skipped: int) -> None:
        progress.update(task, total=todo)
        if skipped:
            console.print(f"{skipped} cell(s) already done in {out} (skipped; --force re-runs them)")

    def on_cell(cell, result) -> None:  # type: ignore[no-untyped-def]
        label = f"{cell.model}/{cell.artifact.backend} on {cell.device.name} ×{cell.threads}"
        if result is not None and result.status == "failed":
            progress.console.print(f"[red]failed[/red] {label}: {result.error}")
        progress.update(task, advance=1, description=label)

    with progress:
        summary = run_bench(request, on_plan=on_plan, on_cell=on_cell)
    built = build_report(summary.out)
    print_table(built)
    failed = [r for r in summary.results if r.status == "failed"]
    console.print(f"{len(summary.executed)} cell(s) run, {len(summary.skipped)} skipped, {len(failed)} failed → "
                  f"{out / 'results.json'}")
    if summary.results and len(failed) == len(summary.results):
        raise typer.Exit(1)
    if thresholds or max_drop is not None:
        shortfalls = check_gate(built, thresholds, max_drop)
        for line in shortfalls:
            console.print(f"[red]gate failed[/red] {line}", highlight=False)
        if shortfalls:
            console.print(f"gate: {len(shortfalls)} check(s) failed (exit {GATE_EXIT_CODE})")
            raise typer.Exit(GATE_EXIT_CODE)
        console.print("gate: every cell passed")
