"""tflite-fp16: FP16 weights (ai-edge-quantizer float casting); computed in FP32 on CPUs without FP16 arithmetic."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.backends._tflite import convert_fp32, requantize
from edgeq.backends.base import Backend, ExportedFiles


class TfliteFp16(Backend):
    name = "tflite-fp16"
    runtime = "tflite"
    precision = "fp16"
    requires = ("litert_torch", "torch", "ai_edge_quantizer")
    pip_extra = "tflite"

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tflite-") as tmp:
            fp32 = convert_fp32(source, Path(tmp) / "fp32.tflite", self.name)
            main = requantize(fp32, out_dir / "model.tflite", "fp16")
        return ExportedFiles(main=main, recipe={"route": "litert-torch + ai-edge-quantizer", "layout": source.layout},
                             notes=["FP16 weights (ai-edge-quantizer float casting); computed in FP32 on CPUs without FP16 arithmetic"])
