"""tflite-int8: full-integer INT8 (int8 weights, activations and model I/O) via litert-torch's PT2E quantizer."""

from __future__ import annotations

from pathlib import Path

from edgeq.backends._tflite import convert_int8
from edgeq.backends.base import Backend, ExportedFiles
from edgeq.errors import BackendError, CalibrationError


class TfliteInt8(Backend):
    name = "tflite-int8"
    runtime = "tflite"
    precision = "int8"
    requires = ("litert_torch", "torch", "torchao")
    pip_extra = "tflite"
    needs_calibration = True

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        if options.calib_method != "minmax":
            raise BackendError(f"calibration method {options.calib_method!r} is not supported by tflite-int8 "
                               "(litert-torch's PT2E quantizer observes min/max)")
        if calib is None or len(calib) == 0:
            raise CalibrationError("tflite-int8 needs calibration samples (--calib)")
        if source.framework == "keras":  # TFLiteConverter full integer; --tflite-io picks int8 or float I/O
            from edgeq.backends import _tflite_keras

            main = _tflite_keras.convert(source, out_dir / "model.tflite", "int8", calib, options.tflite_io)
            return ExportedFiles(main=main, recipe=_tflite_keras.recipe(source, "int8", options.tflite_io),
                                 notes=[f"{_tflite_keras.NOTES['int8']}; {options.tflite_io} model I/O"])
        if options.tflite_io != "int8":
            raise BackendError("--tflite-io float is not available for PyTorch sources: litert-torch's PT2E "
                               "quantizer produces int8 model inputs/outputs")
        excluded = [str(m) for m in options.extra.get("tflite_exclude_modules", []) or []]
        main = convert_int8(source, calib, out_dir / "model.tflite", self.name, exclude_modules=excluded)
        recipe = {"route": "litert-torch PT2E", "per_channel": True, "symmetric": True, "io": "int8",
                  "calibration": "minmax", "layout": source.layout}
        if excluded:
            recipe["float_modules"] = excluded
        return ExportedFiles(main=main, recipe=recipe, notes=["full integer: int8 weights, activations and I/O"])
