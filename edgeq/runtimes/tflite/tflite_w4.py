"""tflite-w4: INT4 weights in LiteRT (ai-edge-quantizer dynamic INT4, the rest dynamic INT8; ``_tflite_tiers.w4``).

The FP32 .tflite of the source's route (litert-torch for PyTorch/ONNX, TFLiteConverter for Keras) is re-quantized:
``--w4-ratio`` of the weight parameters (lowest INT4 error first) in INT4 — fully connected / batch-matmul weights in
blocks of ``--w4-group-size`` (32…256), convolutions per channel — and the rest INT8. LiteRT quantizes activations to
int8 at run time (dynamic range), so compute is integer; symmetric INT4 only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.backend_config import Int4Config
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.tflite._tflite import convert_fp32


class TfliteW4(Backend):
    name = "tflite-w4"
    runtime = "tflite"
    precision = "w4"
    requires = ("litert_torch", "torch", "ai_edge_quantizer")
    pip_extra = "tflite"
    Config = Int4Config

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        from edgeq.runtimes.tflite._tflite_tiers import w4

        settings: Int4Config = self.config_of(options)
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tflite-") as tmp:
            fp32 = convert_fp32(source, Path(tmp) / "fp32.tflite", self.name)
            main, recipe = w4(fp32, out_dir / "model.tflite", settings)
        recipe = {"route": f"{'TFLiteConverter' if source.framework == 'keras' else 'litert-torch'} + "
                           "ai-edge-quantizer", "layout": source.layout, **recipe}
        notes = [f"INT4 weights: {recipe['int4_layers']} layers INT4 ({recipe['int4_param_fraction']:.0%} of weights, "
                 f"group {settings.group_size}), {recipe['int8_layers']} INT8; {recipe['executes']}"]
        return ExportedFiles(main=main, recipe=recipe, notes=notes)
