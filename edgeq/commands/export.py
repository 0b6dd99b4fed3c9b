"""``edgeq export``, ``edgeq backends`` and ``edgeq manifest-schema``."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeq.types import ExportOptions


def export(
    model: str = typer.Argument(..., help="model.onnx | path/to/file.py:ClassName | program.pt2 | model.keras | SavedModel dir"),
    calib: str = typer.Option(..., "--calib", help="Calibration data: image folder, .npy, .npz, recipe .yaml, sklearn-digits:SPLIT"),
    backend: list[str] = typer.Option(["all"], "--backend", "-b", help="Backend name (repeatable) or 'all'; see `edgeq backends`."),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="Output directory: OUT/<model>/<backend>/ + manifest.json"),
    weights: Path | None = typer.Option(None, "--weights", help="PyTorch weights: .safetensors or a weights-only .pt state dict"),
    input_shape: list[str] | None = typer.Option(None, "--input-shape", help="name=1x3x224x224 (repeatable); fixes dynamic dims"),
    calib_samples: int = typer.Option(300, "--calib-samples", min=1, help="Calibration samples (seeded subset)"),
    holdout: str | None = typer.Option(None, "--holdout", help="Held-out data for verification (default: unused calibration samples)"),
    holdout_samples: int = typer.Option(200, "--holdout-samples", min=0, help="Held-out samples for verification"),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration/held-out split"),
    calib_method: str = typer.Option("minmax", "--calib-method", help="minmax | percentile | entropy | mse (per backend support)"),
    tflite_io: str = typer.Option("int8", "--tflite-io", help="TFLite INT8 model I/O: int8 (quantized) or float"),
    tflite_narrow_convs: str = typer.Option(
        "int8", "--tflite-narrow-convs", help="tflite-int8 from PyTorch/ONNX: int8 (full integer) or float for heavy "
        "convolutions over < 8 input channels (image stems; faster on x86 XNNPACK, docs/tflite-int8.md)"),
    tflite_route: str = typer.Option(
        "auto", "--tflite-route", help="tflite-int8 from ONNX: auto (onnx2tf, then onnx2fx → litert-torch when it "
        "fails; docs/onnx-to-tflite.md), onnx2tf or litert-torch"),
    eval_spec: str | None = typer.Option(None, "--eval", help="Eval set with labels/targets (same forms as --calib); "
                                         "scores every artifact and the FP32 source"),
    eval_samples: int | None = typer.Option(None, "--eval-samples", min=1, help="Use only the first N eval samples"),
    metric: str | None = typer.Option(None, "--metric", help="top1 | top5 | cosine | fidelity | mse | mae | module:function "
                                      "(default: top1 with labels, mse with float targets, else cosine vs FP32)"),
    max_drop: float | None = typer.Option(None, "--max-drop", help="Accuracy budget vs FP32 (needs --eval): layers "
                                          "return to float until the drop is within it"),
    drop_type: str = typer.Option("absolute", "--drop-type", help="absolute | relative (for --max-drop)"),
    min_fidelity: float | None = typer.Option(None, "--min-fidelity", help="Label-free floor: worst-sample cosine vs "
                                              "FP32 of every output on held-out inputs; layers return to float until "
                                              "it holds (docs/accuracy.md)"),
    fallback: str | None = typer.Option(None, "--fallback", help="--max-drop fallback for sensitive layers: fp32 "
                                 "(fastest on the CPUs measured) or tiered (int16 activations, then bf16/fp16 where "
                                 "computed, then fp32: smaller, slower without int16 kernels; docs/precision.md)"),
    jobs: str = typer.Option("auto", "--jobs", "-j", help="Backends exported at once, each pinned to its own cores "
                             "(auto: one per 2 cores, so never more threads than cores)"),
    qat: bool = typer.Option(False, "--qat", help="PyTorch models: quantization-aware training before the INT8 "
                             "exports (onnx-qdq, openvino-int8, tflite-int8); needs --train"),
    train: str | None = typer.Option(None, "--train", help="Labelled training data for --qat: .npz (x, y) or "
                                     "sklearn-digits:train"),
    epochs: int = typer.Option(1, "--epochs", min=1, help="QAT epochs"),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="QAT learning rate (Adam)"),
    trust_model: bool = typer.Option(False, "--trust-model", help="Allow code inside the model file to run: pickled "
                                     "objects in a .pt2, Keras Lambda layers, SavedModel ops with side effects "
                                     "(README: Security)"),
    w4_group_size: int | None = typer.Option(None, "--w4-group-size", help="INT4 weight-only backends (onnx-w4, "
                                             "openvino-w4, tflite-w4): weights per quantization group (default 128); "
                                             "-1 = per output channel"),
    w4_ratio: float | None = typer.Option(None, "--w4-ratio", help="INT4 weight-only backends: fraction of weight "
                                          "parameters in INT4 (lowest INT4 error first), the rest INT8 (default 1)"),
    w4_asym: bool = typer.Option(False, "--w4-asym", help="INT4 weight-only backends: asymmetric INT4 (zero points)"),
    option: list[str] | None = typer.Option(None, "--option", "-O", help="A backend option BACKEND.KEY=VALUE "
                                            "(repeatable; VALUE a YAML scalar or list), e.g. -O onnx-qdq.percentile="
                                            "99.99; `edgeq backends --options` lists them (docs/recipes.md)"),
    backend_config: Path | None = typer.Option(None, "--backend-config", help="YAML file of backend options: "
                                               "BACKEND: {KEY: VALUE, ...}; dedicated flags and -O override it"),
) -> None:
    """Calibrate, quantize and verify MODEL for each backend; print the comparison table."""
    from edgeq.export.context import ExportRequest
    from edgeq.export.orchestration import run_export
    from edgeq.report.export_table import print_export_table
    from edgeq.ui import StepProgress, console

    if tflite_io not in ("int8", "float"):
        raise typer.BadParameter("--tflite-io must be int8 or float")
    if fallback not in (None, "tiered", "fp32"):
        raise typer.BadParameter("--fallback must be tiered or fp32")
    if tflite_narrow_convs not in ("int8", "float"):
        raise typer.BadParameter("--tflite-narrow-convs must be int8 or float")
    if tflite_route not in ("auto", "onnx2tf", "litert-torch"):
        raise typer.BadParameter("--tflite-route must be auto, onnx2tf or litert-torch")
    from edgeq.qat import settings_from_cli

    qat_settings = settings_from_cli(qat, train, epochs, lr, seed, max_drop)
    from edgeq.backends.options import build_configs, flag_entries, parse_assignment, read_options_file

    configs = build_configs([  # lowest precedence first: the file, the dedicated flags, -O
        *(read_options_file(backend_config) if backend_config is not None else []),
        *flag_entries(fallback, None if tflite_route == "auto" else tflite_route, w4_group_size, w4_ratio, w4_asym),
        *(parse_assignment(text) for text in option or [])])
    request = ExportRequest(
        model=model, calib=calib, backends=backend, out=out, weights=weights, input_shapes=input_shape,
        calib_samples=calib_samples, seed=seed, holdout=holdout, holdout_samples=holdout_samples,
        eval_spec=eval_spec, eval_samples=eval_samples, metric=metric, max_drop=max_drop, drop_type=drop_type,
        min_fidelity=min_fidelity,
        jobs=_parse_jobs(jobs), trust_model=trust_model,
        options=ExportOptions(calib_method=calib_method, tflite_io=tflite_io,  # type: ignore[arg-type]
                              tflite_narrow_convs=tflite_narrow_convs, qat=qat_settings,  # type: ignore[arg-type]
                              configs=configs),
    )
    with StepProgress() as progress:
        manifest = run_export(request, on_step=progress.log, on_progress=progress.advance)
    print_export_table(manifest, out / manifest.model.name)
    from edgeq.backends import resolve

    requested = [a for a in manifest.artifacts if a.backend in set(resolve(request.backends))]  # 'all', 'tiers'
    if requested and all(a.status == "failed" for a in requested):
        console.print("[red]every requested backend failed[/red]")
        raise typer.Exit(1)
    missed = [a.backend for a in manifest.artifacts if a.accuracy_control is not None and not a.accuracy_control.met]
    if missed:
        budget = f"--min-fidelity {min_fidelity:g}" if min_fidelity is not None else f"--max-drop {max_drop:g}"
        console.print(f"[red]accuracy budget {budget} not met by {', '.join(missed)}: the best "
                      "artifact found was kept and marked (accuracy_control.met = false)[/red]")
        raise typer.Exit(3)


def _parse_jobs(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"--jobs must be 'auto' or a whole number ≥ 1 (got {text!r})")
    return int(text)


def backends(
    options: bool = typer.Option(False, "--options", help="List every backend's options (-O BACKEND.KEY=VALUE, "
                                 "--backend-config) as a Markdown table: type, default, meaning"),
) -> None:
    """List every backend, whether its packages are installed, and their versions."""
    if options:
        from edgeq.backends.options import options_markdown

        typer.echo(options_markdown())
        return
    from importlib.metadata import PackageNotFoundError, version

    from rich.table import Table

    from edgeq.backends import REGISTRY, get_backend
    from edgeq.ui import console

    table = Table(title="edgeq backends")
    for col in ("backend", "runtime", "precision", "available", "packages"):
        table.add_column(col)
    for name in REGISTRY:
        cls = get_backend(name)
        missing = cls.missing_packages()
        versions = []
        for module in cls.requires:
            dist = {"ai_edge_litert": "ai-edge-litert", "litert_torch": "litert-torch",
                    "onnxconverter_common": "onnxconverter-common", "tensorflow": "tensorflow-cpu"}.get(module, module)
            try:
                versions.append(f"{dist} {version(dist)}")
            except PackageNotFoundError:
                versions.append(f"{dist} [red]missing[/red]")
        available = "[green]yes[/green]" if not missing else f"[red]no[/red] (pip install 'edgeq[{cls.pip_extra}]')"
        table.add_row(name, cls.runtime, cls.precision, available, ", ".join(versions))
    console.print(table)


def manifest_schema() -> None:
    """Print the JSON Schema of manifest.json."""
    from edgeq.manifest import manifest_json_schema

    typer.echo(manifest_json_schema())
