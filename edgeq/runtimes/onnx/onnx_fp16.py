"""onnx-fp16: FP16 weights and compute with FP32 model I/O (onnxconverter-common), run by ONNX Runtime.

On x86 CPUs ONNX Runtime has few FP16 kernels, so this artifact halves the size but is usually not faster;
it exists as a baseline and for ARM targets with native FP16 arithmetic.
"""

from __future__ import annotations

from pathlib import Path

from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.onnx._onnx import load_full, save_onnx


class OnnxFp16(Backend):
    name = "onnx-fp16"
    runtime = "onnxruntime"
    precision = "fp16"
    requires = ("onnx", "onnxruntime", "onnxconverter_common")
    pip_extra = "onnx"

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        from onnxconverter_common.float16 import convert_float_to_float16

        model = convert_float_to_float16(load_full(source.onnx_path()), keep_io_types=True)
        main = save_onnx(model, out_dir / "model.onnx")
        return ExportedFiles(main=main, recipe={"keep_io_types": True},
                             notes=["FP16 halves size; x86 ONNX Runtime runs few FP16 kernels natively"])
