"""tflite-fp32: the FP32 TFLite baseline (litert-torch)."""

from __future__ import annotations

from pathlib import Path

from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.tflite._tflite import convert_fp32


class TfliteFp32(Backend):
    name = "tflite-fp32"
    runtime = "tflite"
    precision = "fp32"
    requires = ("litert_torch", "torch")
    pip_extra = "tflite"

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        main = convert_fp32(source, out_dir / "model.tflite", self.name)
        route = "tf.lite.TFLiteConverter" if source.framework == "keras" else "litert-torch"
        return ExportedFiles(main=main, recipe={"route": route, "layout": source.layout})
