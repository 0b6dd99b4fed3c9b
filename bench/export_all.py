"""Every backend: export time, size ratio, and INT8/FP32 latency in the same runtime (1 and 2 threads, interleaved).

Run: ``.venv/bin/python bench/export_all.py [--model digits|resnet18] [--from-onnx]`` (digits: the bundled example
with its calibration recipe; resnet18: ResNet-18 shape at 224×224 with seeded random calibration images;
``--from-onnx``: export the PyTorch model to ONNX first, then every backend from that ONNX file).
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

MODELS = {
    "digits": {"model": f"{REPO}/edgeq/examples/digits.py:DigitsCNN", "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors",
               "calib": f"{REPO}/calibration/digits.yaml", "calib_samples": 300, "holdout_samples": 300},
    "resnet18": {"model": f"{REPO}/bench/models.py:ResNet18", "weights": None, "calib": None, "calib_samples": 32,
                 "holdout_samples": 8},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=list(MODELS), default="digits")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--from-onnx", action="store_true", help="every backend from the model's ONNX export")
    args = parser.parse_args()
    case = dict(MODELS[args.model])
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if case["calib"] is None:
            case["calib"] = tmp / "calib.npy"
            np.save(case["calib"], np.random.default_rng(0).standard_normal((40, 3, 224, 224)).astype(np.float32))
        if args.from_onnx:
            first = edgeq.export(case["model"], case["calib"], backends=["onnx-fp32"], out=tmp / "onnx",
                                 weights=case["weights"], calib_samples=8, holdout_samples=0)
            case["model"], case["weights"] = tmp / "onnx" / first.model.name / first.artifact("onnx-fp32").path, None
        manifest = edgeq.export(case["model"], case["calib"], backends=["all"], out=tmp / "out", weights=case["weights"],
                                calib_samples=case["calib_samples"], holdout_samples=case["holdout_samples"])
        model_dir = tmp / "out" / manifest.model.name
        arts = {a.backend: a for a in manifest.artifacts if a.status == "ok"}
        source = "from its ONNX export" if args.from_onnx else "from PyTorch"
        table = Table(title=f"edgeq export --backend all · {args.model} {source} · latency ratios vs the FP32 artifact of the "
                            "same runtime, interleaved in one run")
        for col in ("backend", "export s", "size MB", "size / FP32", "lat / FP32 1 thr", "lat / FP32 2 thr", "top-1 agree"):
            table.add_column(col)
        fp32_of = {a.runtime: a for a in arts.values() if a.precision == "fp32"}
        for art in manifest.artifacts:
            if art.status != "ok":
                table.add_row(art.backend, "", "", "", "", "", f"{art.status}: {art.error}"[:60])
                continue
            ref = fp32_of.get(art.runtime)
            ratios = ["", ""]
            if ref is not None and ref is not art:
                paths = {"fp32": model_dir / ref.path, "this": model_dir / art.path}
                ratios = [f"{interleaved_latency(paths, threads=t, rounds=args.rounds)['this']['ratio_to_first']:.3f}"
                          for t in (1, 2)]
            agree = art.verification.top1_agreement if art.verification else None
            table.add_row(art.backend, f"{art.export_seconds:.1f}", f"{art.size_bytes / 1e6:.3f}",
                          f"{art.size_bytes / ref.size_bytes:.3f}" if ref else "", *ratios,
                          f"{agree:.3f}" if agree is not None else "")
        console.print(table)


if __name__ == "__main__":
    main()
