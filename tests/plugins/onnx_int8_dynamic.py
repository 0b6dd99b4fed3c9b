"""onnx-int8-dynamic: a backend added from this one module — ONNX Runtime's ``quantize_dynamic`` (INT8 weights,
activations quantized at run time, no calibration). Registering it is all it takes for ``edgeq export -b
onnx-int8-dynamic``, the manifest row, verification, ``edgeq bench``, ``edgeq report`` and the contract tests."""

from __future__ import annotations

from pathlib import Path

from edgeq.backends import Backend, ExportedFiles, register_backend


class OnnxInt8Dynamic(Backend):
    name = "onnx-int8-dynamic"
    runtime = "onnxruntime"
    precision = "dynamic"
    requires = ("onnx", "onnxruntime")
    pip_extra = "onnx"

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        main = out_dir / "model.onnx"
        quantize_dynamic(str(source.onnx_path()), str(main), weight_type=QuantType.QInt8)
        return ExportedFiles(main=main, recipe={"weights": "int8", "activations": "uint8, quantized at run time"})


register_backend(OnnxInt8Dynamic, opt_in=True)
