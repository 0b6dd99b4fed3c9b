"""``edgeq tune``: search backends × recipes for the best artifact per device (Optuna, optionally on Ray)."""

from __future__ import annotations

import re
from pathlib import Path

import typer


def tune(
    model: str = typer.Argument(..., help="model.onnx | path/to/file.py:ClassName | program.pt2 | model.keras"),
    calib: str = typer.Option(..., "--calib", help="Calibration data (same forms as `edgeq export --calib`)."),
    eval_spec: str = typer.Option(..., "--eval", help="Eval set with labels/targets: the metric objective."),
    out: Path = typer.Option(..., "--out", "-o", help="Search directory: study.db, artifacts/, cells/, pareto.json, "
                             "report.html, best/<device>/ (re-run the same command to continue)."),
    devices: Path | None = typer.Option(None, "--devices", help="devices.yaml (default ./devices.yaml, else this "
                                        "machine as 'host')."),
    device: list[str] | None = typer.Option(None, "--device", "-d", help="Device to tune for (repeatable)."),
    metric: str | None = typer.Option(None, "--metric", help="top1 | top5 | cosine | mse | mae | module:function"),
    max_drop: float | None = typer.Option(None, "--max-drop", help="Budget: metric drop vs FP32 at most X."),
    min_fidelity: float | None = typer.Option(None, "--min-fidelity", help="Budget: cosine min vs FP32 on held-out "
                                              "data (manifest verification) at least C."),
    drop_type: str = typer.Option("absolute", "--drop-type", help="absolute | relative (for --max-drop)"),
    objective: list[str] | None = typer.Option(None, "--objective", help="latency | size | memory (repeatable; "
                                               "default latency); the metric is always an objective."),
    trials: int = typer.Option(20, "--trials", min=1, help="Trials in total (a resumed search counts the "
                               "finished ones)."),
    timeout: float | None = typer.Option(None, "--timeout", min=1.0, help="Stop starting trials after S seconds."),
    train: str | None = typer.Option(None, "--train", help="Labelled training data: adds QAT epochs to the "
                                     "search (PyTorch models)."),
    ray: str | None = typer.Option(None, "--ray", help="Run trials on Ray: `--ray local` (or bare --ray) starts a "
                                   "local runtime with 2 CPUs, `--ray HOST:PORT` joins a cluster.",
                                   flag_value="local", is_flag=False),
    backend: list[str] | None = typer.Option(None, "--backend", "-b", help="Restrict the search to these backends."),
    space: Path | None = typer.Option(None, "--space", help="YAML space file restricting backends and choices."),
    weights: Path | None = typer.Option(None, "--weights", help="PyTorch weights (.safetensors / .pt state dict)"),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", help="name=1x3x224x224 (repeatable)"),
    eval_samples: int | None = typer.Option(None, "--eval-samples", min=1, help="Use the first N eval samples."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler and of the calibration split."),
    batch: int = typer.Option(2, "--batch", min=1, help="Trials asked per round (run side by side on Ray)."),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (multi-objective TPE) | nsga2"),
    runs: int = typer.Option(20, "--runs", min=1, help="Minimum timed runs per cell."),
    min_seconds: float = typer.Option(1.0, "--min-seconds", min=0.0, help="Minimum timed seconds per cell."),
) -> None:
    """Search backends, calibration, per-layer fallback and options for the fastest artifact per device within
    the budget; exit 3 when no trial meets it (the closest ones are saved in best/)."""
    from edgeq.tuning.study import TuneRequest, run_tune
    from edgeq.ui import console

    request = TuneRequest(
        model=model, calib=calib, eval_spec=eval_spec, out=out, devices_file=devices, device_names=device or [],
        weights=str(weights) if weights else None, input_shapes=input_shape, metric=metric,
        eval_samples=eval_samples, max_drop=max_drop, min_fidelity=min_fidelity, drop_type=drop_type,
        objectives=objective or ["latency"], trials=trials, timeout_s=timeout, train=train, ray=ray is not None,
        ray_address=None if ray in (None, "local") else ray, backends=backend, space_file=space, seed=seed,
        batch=batch, sampler=sampler, runs=runs, min_seconds=min_seconds)

    def on_step(message: str) -> None:
        console.print(message)

    result = run_tune(request, on_step=on_step)
    text = (result.out / "front.txt").read_text()
    console.print(f"Pareto front ({len(result.front)} of {len(result.trials)} trials; * = best for a device):")
    console.print(text, markup=False, soft_wrap=True)
    for name, number in result.best.items():
        where = result.out / "best" / name
        console.print(f"best for {name}: trial {number} → {where}" if number is not None else
                      f"best for {name}: none (no trial completed)")
    distinct = len({t["key"] for t in result.trials})
    console.print(f"search wall time {result.wall_s:g} s (all runs {result.total_wall_s:g} s), {len(result.trials)} "
                  f"trials ({distinct} distinct recipes), executor {result.executor}; "
                  f"{result.out / 'pareto.json'}, {result.out / 'report.html'}")
    if result.exit_code == 3:
        console.print("[red]no trial met the budget: the closest artifacts were saved in best/ (exit 3)[/red]")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


_RAY_ADDRESS = re.compile(r"^(local|auto|ray://\S+|[\w.\-]+:\d+)$")


def fill_optional_ray(args: list[str]) -> list[str]:
    """``--ray [ADDRESS]``: Typer has no options with an optional value, so a bare ``--ray`` (followed by another
    option, the model, or nothing) becomes ``--ray local`` before parsing. ADDRESS is HOST:PORT, ray://…, auto."""
    command = next((a for a in args if not a.startswith("-")), None)
    if command != "tune":
        return args
    out: list[str] = []
    for index, arg in enumerate(args):
        out.append(arg)
        following = args[index + 1] if index + 1 < len(args) else ""
        if arg == "--ray" and not _RAY_ADDRESS.match(following):
            out.append("local")
    return out
