"""tflite-dynamic: dynamic-range: int8 weights, activations quantized at run time (ai-edge-quantizer)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.backends._tflite import convert_fp32, requantize
from edgeq.backends.base import Backend, ExportedFiles


class TfliteDynamic(Backend):
    name = "tflite-dynamic"
    runtime = "tflite"
    precision = "dynamic"
    requires = ("litert_torch", "torch", "ai_edge_quantizer")
    pip_extra = "tflite"

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tflite-") as tmp:
            fp32 = convert_fp32(source, Path(tmp) / "fp32.tflite", self.name)
            main = requantize(fp32, out_dir / "model.tflite", "dynamic")
        return ExportedFiles(main=main, recipe={"route": "litert-torch + ai-edge-quantizer", "layout": source.layout},
                             notes=["dynamic-range: int8 weights, activations quantized at run time (ai-edge-quantizer)"])
