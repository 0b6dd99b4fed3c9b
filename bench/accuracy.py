"""Accuracy you can trust: per INT8 backend and calibration method, the eval metric, its drop vs FP32 and the
INT8/FP32 latency ratio in the same runtime (interleaved in one run, 1 thread).

Run: ``.venv/bin/python bench/accuracy.py [--model digits|resnet18|sensitive|all] [--rounds N]``.
- digits: the bundled example, top-1 on the 300-image ``sklearn-digits:eval`` split (labels).
- resnet18: ResNet-18 shape (bench/models.py, seeded random weights, no labels): fidelity only — the metric is the
  cosine similarity to the FP32 outputs (plus top-1 agreement) on seeded smooth random 224×224 images.
- sensitive: edgeq/examples/sensitive.py (activation outliers) with and without ``--max-drop 0.01``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edgeq  # noqa: E402
from edgeq.measure import interleaved_latency  # noqa: E402

METHODS = {"onnx-qdq": ["minmax", "percentile", "entropy"], "openvino-int8": ["minmax", "percentile", "mse"],
           "tflite-int8": ["minmax"]}
FP32_OF = {"onnx-qdq": "onnx-fp32", "openvino-int8": "openvino-fp32", "tflite-int8": "tflite-fp32"}


def smooth_images(count: int, seed: int) -> np.ndarray:
    """Seeded low-frequency random images (N, 3, 224, 224): less adversarial to ranges than white noise."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((count, 3, 14, 14)).astype(np.float32)
    return np.repeat(np.repeat(base, 16, axis=2), 16, axis=3) + 0.2 * rng.standard_normal(
        (count, 3, 224, 224)).astype(np.float32)


def cases(tmp: Path, which: str) -> list[dict]:
    found = []
    if which in ("digits", "all"):
        found.append({"label": "digits (bundled example)", "model": f"{REPO}/edgeq/examples/digits.py:DigitsCNN",
                      "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors", "calib": "sklearn-digits:calib",
                      "eval": "sklearn-digits:eval", "calib_samples": 300})
    if which in ("resnet18", "all"):
        np.save(tmp / "calib.npy", smooth_images(64, 0))
        np.savez(tmp / "eval.npz", x=smooth_images(50, 1))
        found.append({"label": "resnet18 (random weights)", "model": f"{REPO}/bench/models.py:ResNet18",
                      "weights": None, "calib": tmp / "calib.npy", "eval": str(tmp / "eval.npz"), "calib_samples": 64})
    if which in ("sensitive", "all"):
        from edgeq.examples.sensitive import train

        train(tmp / "sensitive_digits.safetensors")
        for budget in (None, 0.01):
            found.append({"label": f"sensitive digits{'' if budget is None else f' --max-drop {budget}'}",
                          "model": f"{REPO}/edgeq/examples/sensitive.py:SensitiveDigitsNet",
                          "weights": tmp / "sensitive_digits.safetensors", "calib": "sklearn-digits:calib",
                          "eval": "sklearn-digits:eval", "calib_samples": 300, "max_drop": budget,
                          "methods": {"onnx-qdq": ["minmax"], "openvino-int8": ["minmax"], "tflite-int8": ["minmax"]}})
    return found


def run_case(case: dict, out: Path, rounds: int, table: Table) -> None:
    methods = case.get("methods", METHODS)
    common = {"out": out, "weights": case["weights"], "calib_samples": case["calib_samples"], "holdout_samples": 20,
              "eval_spec": case["eval"]}
    if case.get("max_drop") is not None:
        common["max_drop"] = case["max_drop"]
    manifest = edgeq.export(case["model"], case["calib"], backends=sorted({FP32_OF[b] for b in methods}), **common)
    model_dir = out / manifest.model.name
    fp32 = {a.backend: a for a in manifest.artifacts}
    ev = manifest.evaluation
    assert ev is not None
    unit = "%" if ev.metric in ("top1", "top5") else ""
    scale = 100 if unit else 1
    table.add_row(case["label"], "FP32 source", "", f"{scale * ev.reference:.4g}{unit}", "reference", "", "", "")
    for method in sorted({m for ms in methods.values() for m in ms}, key=["minmax", "percentile", "entropy", "mse"].index):
        backends = [b for b, ms in methods.items() if method in ms]
        work = out / method
        result = edgeq.export(case["model"], case["calib"], backends=backends, calib_method=method,
                              **(common | {"out": work}))
        for art in result.artifacts:
            if art.status != "ok":
                table.add_row(case["label"], art.backend, method, f"{art.status}: {art.error}"[:60], "", "", "", "")
                continue
            ref = fp32[FP32_OF[art.backend]]
            timed = interleaved_latency({"fp32": model_dir / ref.path, "int8": work / result.model.name / art.path},
                                        threads=1, rounds=rounds)
            e = art.evaluation
            control = art.accuracy_control
            floated = (f"{len(control.layers_to_float)} to float, before {scale * control.drop_before:+.3g}{unit}"
                       if control and control.layers_to_float else "")
            if control and not control.met:
                errors = [str(a["error"]) for a in control.attempts if "error" in a]
                floated = f"NOT met{': ' + errors[0] if errors else ''}"[:80]
            table.add_row(case["label"], art.backend, method, f"{scale * e.value:.4g}{unit}",
                          f"{scale * e.drop:+.3g}{unit}", f"{e.cosine_mean:.4f}",
                          f"{e.top1_agreement:.3f}" if e.top1_agreement is not None else "",
                          f"{timed['int8']['ratio_to_first']:.3f}", floated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["digits", "resnet18", "sensitive", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds per INT8/FP32 pair")
    args = parser.parse_args()
    console = Console(width=170)
    table = Table(title="edgeq accuracy · eval metric and drop vs the FP32 source model; INT8/FP32 latency in the same "
                        "runtime (1 thread, interleaved, median of paired ratios)")
    for col in ("model", "backend", "calib", "metric", "drop vs FP32", "cos mean", "top-1 agree", "lat / FP32",
                "accuracy control"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, case in enumerate(cases(tmp, args.model)):
            run_case(case, tmp / f"out{i}", args.rounds, table)
    console.print(table)
    console.print("metric: top-1 on sklearn-digits:eval (300 labelled images) for digits models; cosine similarity "
                  "to the FP32 outputs on 50 seeded images for resnet18 (random weights: fidelity, not accuracy)")


if __name__ == "__main__":
    main()
