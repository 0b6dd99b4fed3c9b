"""``edgeq compress``: run a compression recipe (fuse, prune, finetune, distill, lowrank) on a PyTorch model."""

from __future__ import annotations

from pathlib import Path

import typer


def compress(
    model: str = typer.Argument(..., help="path/to/file.py:ClassName (+ --weights) or a .pt2 torch.export program"),
    recipe: Path = typer.Option(..., "--recipe", help="Recipe YAML: an ordered list of steps (see docs/compress.md)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory: model.pt2, model.py + model.safetensors, report, checkpoints/"),
    train: str | None = typer.Option(None, "--train", help="Training set: .npz with x and y, or sklearn-digits:train"),
    eval_set: str | None = typer.Option(None, "--eval", help="Evaluation set for top-1: .npz with x and y, or sklearn-digits:eval"),
    weights: Path | None = typer.Option(None, "--weights", help="PyTorch weights: .safetensors or a weights-only .pt state dict"),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", help="name=1x3x224x224 (repeatable)"),
    resume: bool = typer.Option(False, "--resume", help="Continue training loops from OUT/checkpoints/"),
) -> None:
    """Compress MODEL with RECIPE; print params/MACs/size/top-1 per step and write OUT/compress-report.json."""
    from edgeq.compress.report import print_report
    from edgeq.compress.runner import CompressRequest, run_compress
    from edgeq.ui import console

    request = CompressRequest(model=model, recipe=recipe, out=out, train=train, eval=eval_set, weights=weights,
                              input_shapes=input_shape, resume=resume, log=console.log)
    report = run_compress(request)
    print_report(report)
    console.print(f"report: {out / 'compress-report.json'}")
