"""ONNX Runtime INT8 (QDQ) vs FP32: latency ratio at 1 and 2 threads (interleaved, one run), size ratio, export time.

Run: ``.venv/bin/python bench/export_onnx.py`` (a few minutes). Models: the bundled digits example and a
ResNet-18-sized CNN at 224×224 (``bench/models.py``). Calibration for the ResNet uses seeded random images: its
weights are random too, so only speed/size are meaningful there.
"""

from __future__ import annotations

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

BACKENDS = ["onnx-fp32", "onnx-qdq"]


def cases(tmp: Path) -> list[dict]:
    calib = tmp / "resnet_calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((48, 3, 224, 224)).astype(np.float32))
    return [
        {"label": "digits CNN (example)", "model": f"{REPO}/edgeq/examples/digits.py:DigitsCNN",
         "weights": f"{REPO}/edgeq/examples/digits_cnn.safetensors", "calib": f"{REPO}/calibration/digits.yaml",
         "calib_samples": 300},
        {"label": "ResNet-18 224²", "model": f"{REPO}/bench/models.py:ResNet18", "weights": None,
         "calib": str(calib), "calib_samples": 32, "holdout_samples": 8},
    ]


def main() -> None:
    console = Console()
    table = Table(title="ONNX Runtime QDQ INT8 vs FP32 (this machine; ratios from interleaved runs)")
    for col in ("model", "export s (fp32 / qdq)", "size MB fp32", "size ratio", "INT8/FP32 1 thr", "INT8/FP32 2 thr",
                "p50 ms fp32→int8 (2 thr)", "top-1 agree"):
        table.add_column(col)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for case in cases(tmp):
            manifest = edgeq.export(case["model"], case["calib"], backends=BACKENDS, out=tmp / "out",
                                    weights=case["weights"], calib_samples=case["calib_samples"],
                                    holdout_samples=case.get("holdout_samples", 200))
            fp32, qdq = manifest.artifact("onnx-fp32"), manifest.artifact("onnx-qdq")
            model_dir = tmp / "out" / manifest.model.name
            paths = {"fp32": model_dir / fp32.path, "int8": model_dir / qdq.path}
            ratios = {t: interleaved_latency(paths, threads=t) for t in (1, 2)}
            agree = qdq.verification.top1_agreement if qdq.verification else None
            table.add_row(case["label"], f"{fp32.export_seconds:.1f} / {qdq.export_seconds:.1f}",
                          f"{fp32.size_bytes / 1e6:.2f}", f"{qdq.size_bytes / fp32.size_bytes:.3f}",
                          f"{ratios[1]['int8']['ratio_to_first']:.3f}", f"{ratios[2]['int8']['ratio_to_first']:.3f}",
                          f"{ratios[2]['fp32']['p50_ms']:.2f} → {ratios[2]['int8']['p50_ms']:.2f}",
                          f"{agree:.3f}" if agree is not None else "n/a")
            console.print(f"done: {case['label']}")
    console.print(table)


if __name__ == "__main__":
    main()
