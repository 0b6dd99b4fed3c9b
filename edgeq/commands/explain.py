"""``edgeq explain ARTIFACT``: what runs in INT8, per-layer quantization error, and a verdict."""

from __future__ import annotations

import json
from pathlib import Path

import typer

MODEL_FILES = ("model.onnx", "model.xml", "model.tflite")


def _artifact_file(path: Path) -> Path:
    if path.is_dir():
        for name in MODEL_FILES:
            if (path / name).is_file():
                return path / name
    return path


def explain(
    artifact: Path = typer.Argument(..., help="An artifact file or directory (model.onnx / model.xml / model.tflite)"),
    eval_set: str | None = typer.Option(None, "--eval", help="Inputs for per-layer error (default: 8 seeded random inputs)"),
    samples: int = typer.Option(16, "--samples", min=1, help="How many --eval samples to use"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """Explain which heavy ops run in INT8, where quantization error accumulates, and why."""
    from rich.table import Table

    from edgeq.errors import EdgeqError
    from edgeq.explain import explain as run_explain
    from edgeq.targets.runner import RunnerError, open_session, random_feeds
    from edgeq.ui import console

    path = _artifact_file(artifact)
    if not path.is_file():
        raise EdgeqError(f"artifact not found: {path}")
    try:
        session = open_session(str(path), threads=1)
    except RunnerError as exc:  # unknown file type or a file the runtime cannot load: one line, no traceback
        raise EdgeqError(f"cannot explain {path}: {exc}") from None
    if eval_set:
        from edgeq.calibration import open_dataset
        from edgeq.types import TensorSpec

        specs = [TensorSpec(d.name, tuple(d.concrete_shape()), "float32") for d in session.inputs]
        dataset = open_dataset(eval_set, specs)
        feeds = [dataset[i] for i in range(min(samples, len(dataset)))]
    else:
        feeds = [random_feeds(session, seed=i) for i in range(8)]
    if path.suffix == ".onnx":
        names = [d.name for d in session.inputs]
        feeds = [{n: v for n, v in zip(names, f.values())} for f in feeds]
    del session
    result = run_explain(path, feeds)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"edgeq explain · {path} ({result.runtime})", title_justify="left")
    for col in ("op", "type", "runs in", "why"):
        table.add_column(col)
    for op in result.heavy_ops:
        style = None if op.precision == "int8" else "yellow"
        table.add_row(op.name, op.op_type, op.precision.upper(), op.reason, style=style)
    console.print(table)
    if result.layer_sqnr_db:
        worst = sorted(result.layer_sqnr_db.items(), key=lambda kv: kv[1])[:8]
        console.print("lowest per-layer SQNR vs FP32 (dB; < 20 dB deserves a look): "
                      + ", ".join(f"{name} {value:.1f}" for name, value in worst))
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in result.cpu_features.items())
    console.print(f"CPU INT8 features: {flags}")
    console.print(f"[bold]verdict:[/bold] {result.verdict}")
