"""tflite-int8: INT8 weights and activations via litert-torch's PT2E quantizer; int8 model I/O, or float32 I/O
with ``--tflite-io float``."""

from __future__ import annotations

from pathlib import Path

from edgeq.backends._tflite import NARROW_CONV_CHANNELS, NARROW_CONV_MIN_MACS, convert_int8
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
        if options.qat is not None and options.tflite_io != "int8":
            raise BackendError("--tflite-io float is not available with --qat yet: the QAT lowering writes int8 I/O")
        if options.qat is not None:  # quantization-aware training (edgeq/qat.py), then the same lowering
            from edgeq.qat import export_tflite_int8

            main, qat = export_tflite_int8(source, calib, out_dir / "model.tflite", options.qat, self.name)
            return ExportedFiles(main=main, recipe={"route": "litert-torch PT2E", "per_channel": True, "symmetric": True,
                                                    "io": "int8", "layout": source.layout, "qat": qat},
                                 notes=[f"QAT {options.qat.epochs} epoch(s); full integer: int8 weights, activations and I/O"])
        excluded = [str(m) for m in options.extra.get("tflite_exclude_modules", []) or []]
        float_io = options.tflite_io == "float"
        narrow_float = options.tflite_narrow_convs == "float"
        main, per_channel = convert_int8(source, calib, out_dir / "model.tflite", self.name, exclude_modules=excluded,
                                         narrow_convs_float=narrow_float, float_io=float_io)
        recipe = {"route": "litert-torch PT2E", "export": "strict", "per_channel": per_channel, "symmetric": True,
                  "io": options.tflite_io, "calibration": "minmax", "layout": source.layout,
                  "narrow_convs": f"float when < {NARROW_CONV_CHANNELS} input channels and >= {NARROW_CONV_MIN_MACS} MACs"
                  if narrow_float else "int8"}
        if excluded:
            recipe["float_modules"] = excluded
        note = ("int8 weights and activations, float32 model I/O (QUANTIZE / DEQUANTIZE ops at the boundary)" if float_io
                else "int8 weights, activations and I/O")
        if narrow_float:
            note += f"; heavy convolutions over < {NARROW_CONV_CHANNELS} input channels in float (--tflite-narrow-convs)"
        return ExportedFiles(main=main, recipe=recipe, notes=[note])
