"""onnx-fp32: the FP32 ONNX baseline (static batch-1 shapes, opset ≥ 13), run by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.onnx._onnx import load_full, save_onnx


class OnnxFp32(Backend):
    name = "onnx-fp32"
    runtime = "onnxruntime"
    precision = "fp32"
    requires = ("onnx", "onnxruntime")
    pip_extra = "onnx"

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        model = load_full(source.onnx_path())
        main = save_onnx(model, out_dir / "model.onnx")
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        return ExportedFiles(main=main, recipe={"opset": opset})
