"""Run a recipe on a PyTorch model: measure before/after each step, save the result, write the report."""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.compress.base import StepContext
from edgeq.compress.data import LabelledData, load_labelled
from edgeq.compress.recipe import Recipe, load_recipe
from edgeq.errors import CalibrationError, ConfigError, ModelError
from edgeq.workdirs import atomic_write_text

REPORT_NAME = "compress-report.json"


@dataclass
class CompressRequest:
    """Everything ``edgeq compress`` was asked to do."""

    model: str
    recipe: Path | Recipe
    out: Path
    train: str | None = None
    eval: str | None = None
    weights: Path | None = None
    input_shapes: list[str] | None = None
    resume: bool = False
    show_progress: bool = True
    log: Callable[[str], None] = field(default=print)


def _check_data_fits(model: Any, data: LabelledData, expected: tuple[int, ...], role: str) -> None:
    import torch

    if tuple(data.x.shape[1:]) != tuple(expected[1:]):
        raise CalibrationError(f"{role} set {data.source} has samples of shape {tuple(data.x.shape[1:])}; "
                               f"the model takes {tuple(expected[1:])}")
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x[:2]))
    classes = logits.shape[-1] if getattr(logits, "dim", lambda: 0)() == 2 else None
    if classes is None:
        raise ModelError("edgeq compress needs a classifier: one (batch, classes) logits output")
    if int(data.y.max()) >= classes or int(data.y.min()) < 0:
        raise CalibrationError(f"{role} set {data.source} has labels outside 0..{classes - 1}")


def run_compress(request: CompressRequest) -> dict[str, Any]:
    """Execute the recipe; return the report (also written to OUT/compress-report.json)."""
    import torch

    from edgeq.compress.artifact import save_compressed
    from edgeq.compress.measure import measure
    from edgeq.models import load_model

    recipe = request.recipe if isinstance(request.recipe, Recipe) else load_recipe(request.recipe)
    steps = recipe.build()
    needs_train = [f"{i} ({s.name})" for i, s in enumerate(steps, start=1) if s.needs_train_data()]
    if needs_train and request.train is None:
        raise ConfigError(f"recipe step {', '.join(needs_train)} trains: give a training set with --train")
    torch.set_num_threads(recipe.threads)
    torch.manual_seed(recipe.seed)
    source = load_model(request.model, request.weights, request.input_shapes)
    if len(source.inputs) != 1:
        raise ModelError(f"edgeq compress handles single-input classifiers; {source.name} has {len(source.inputs)} inputs")
    model = source.torch_module().eval()
    example_inputs = tuple(source.example_inputs())
    input_names = [spec.name for spec in source.inputs]
    train = load_labelled(request.train) if request.train else None
    evaluation = load_labelled(request.eval) if request.eval else None
    for data, role in ((train, "training"), (evaluation, "evaluation")):
        if data is not None:
            _check_data_fits(model, data, source.inputs[0].shape, role)

    out = request.out
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = out / "checkpoints"
    if checkpoints.exists() and not request.resume:
        shutil.rmtree(checkpoints)
    fingerprint = _fingerprint(request, recipe)
    _check_resume_fingerprint(checkpoints, fingerprint, request.resume)

    teacher = copy.deepcopy(model).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    rows: list[dict[str, Any]] = [{"step": "original", **measure(model, example_inputs, evaluation), "seconds": 0.0}]
    request.log(f"original: {_describe(rows[0])}")
    for index, step in enumerate(steps, start=1):
        ctx = StepContext(example_inputs=example_inputs, teacher=teacher, train=train, eval=evaluation, out_dir=out,
                          resume=request.resume, seed=recipe.seed, step_index=index, log=request.log,
                          show_progress=request.show_progress)
        started = time.perf_counter()
        model = step.run(model, ctx).eval()
        row = {"step": f"{index}. {step.name}", **measure(model, example_inputs, evaluation),
               "seconds": round(time.perf_counter() - started, 2), "details": ctx.details,
               "config": step.config.model_dump(mode="json")}
        rows.append(row)
        request.log(f"{row['step']}: {_describe(row)}")

    probe = _probe_feeds(evaluation or train, example_inputs, input_names)
    artifacts = save_compressed(model, example_inputs, out, probe, input_names)
    original, final = rows[0], rows[-1]
    summary = {
        "params_ratio": final["params"] / original["params"],
        "macs_ratio": final["macs"] / original["macs"] if original["macs"] else None,
        "weights_bytes_ratio": final["weights_bytes"] / original["weights_bytes"],
        "top1_delta": (final["top1"] - original["top1"]) if original["top1"] is not None else None,
    }
    report = {"model": request.model, "weights": str(request.weights) if request.weights else None,
              "recipe": recipe.model_dump(mode="json"), "train": train.source if train else None,
              "eval": evaluation.source if evaluation else None, "torch": torch.__version__, "steps": rows,
              "summary": summary, "artifacts": artifacts}
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=2, default=str))
    source.close()
    return report


def _describe(row: dict[str, Any]) -> str:
    top1 = f", top-1 {row['top1']:.2%}" if row.get("top1") is not None else ""
    return f"{row['params']:,} params, {row['macs']:,} MACs{top1}"


def _probe_feeds(data: LabelledData | None, example_inputs: tuple[Any, ...], names: list[str]) -> list[dict[str, Any]]:
    import numpy as np

    if data is None:
        return [{names[0]: example_inputs[0].numpy()}]
    return [{names[0]: np.ascontiguousarray(data.x[i:i + 1])} for i in range(min(8, len(data)))]


def _fingerprint(request: CompressRequest, recipe: Recipe) -> dict[str, Any]:
    from edgeq.digest import sha256_file

    weights = sha256_file(request.weights) if request.weights and request.weights.is_file() else None
    return {"model": request.model, "weights_sha256": weights, "recipe": recipe.model_dump(mode="json"),
            "train": request.train}


def _check_resume_fingerprint(checkpoints: Path, fingerprint: dict[str, Any], resume: bool) -> None:
    """Refuse to resume checkpoints made by another model/recipe/training set; record ours otherwise."""
    marker = checkpoints / "run.json"
    if resume and marker.is_file():
        previous = json.loads(marker.read_text())
        if previous != json.loads(json.dumps(fingerprint, default=str)):
            changed = [k for k in fingerprint if previous.get(k) != json.loads(json.dumps(fingerprint[k], default=str))]
            raise ConfigError(f"--resume: {checkpoints} was made with a different {', '.join(changed)}; "
                              "drop --resume to start over")
    checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps(fingerprint, indent=2, default=str))

