"""tflite-w8a16: LiteRT "16x8" — int8 per-channel weights, int16 activations (the LiteRT docs' fix for models whose
activations INT8 cannot hold, e.g. MobileBERT F1 88.7 vs 2.1).

PyTorch and ONNX sources: the FP32 .tflite of the existing routes (litert-torch; onnx2fx for ONNX) re-quantized by
ai-edge-quantizer's ``static_wi8_ai16`` recipe (``_tflite_tiers.w8a16``), int16 model I/O. Keras / SavedModel:
TFLiteConverter with ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``, float model I/O.
Executed precision: LiteRT's builtin 16x8 reference kernels (int16 × int8 → int64 accumulators); XNNPACK does not
take int16 activations, so this tier is about accuracy on 16x8 accelerators, not CPU speed (docs/precision.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.tflite._tflite import convert_fp32

EXECUTES = "int16 activations x int8 weights in LiteRT's builtin 16x8 kernels (not XNNPACK)"


class TfliteW8a16(Backend):
    name = "tflite-w8a16"
    runtime = "tflite"
    precision = "w8a16"
    requires = ("litert_torch", "torch", "ai_edge_quantizer")
    pip_extra = "tflite"
    needs_calibration = True

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        self.require_calibration(calib)
        if source.framework == "keras":
            from edgeq.runtimes.tflite import _tflite_keras

            main = _tflite_keras.convert(source, out_dir / "model.tflite", "w8a16", calib)
            recipe = {**_tflite_keras.recipe(source, "w8a16"), "executes": EXECUTES}
            return ExportedFiles(main=main, recipe=recipe, notes=[_tflite_keras.NOTES["w8a16"]])
        from edgeq.runtimes.tflite._tflite_tiers import w8a16

        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".tflite-") as tmp:
            fp32 = convert_fp32(source, Path(tmp) / "fp32.tflite", self.name)
            main = w8a16(fp32, out_dir / "model.tflite", calib, [spec.name for spec in source.inputs])
        recipe = {"route": "litert-torch + ai-edge-quantizer static_wi8_ai16", "layout": source.layout,
                  "weights": "int8 symmetric per-channel", "activations": "int16 symmetric per-tensor",
                  "calibration": "minmax", "io": "int16", "executes": EXECUTES}
        return ExportedFiles(main=main, recipe=recipe, notes=[f"16x8: int8 weights, int16 activations and I/O; "
                                                              f"{EXECUTES}"])
