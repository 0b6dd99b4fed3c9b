"""onnx-qdq: static INT8 in QDQ format through ONNX Runtime's quantization tools.

Recipe: ``quant_pre_process`` (symbolic shape inference + ORT graph optimization, e.g. Conv+BN folding) first,
then ``quantize_static`` in QDQ format, per-channel symmetric INT8 weights, calibrated activations.

Activation/weight types follow ORT's guidance for the *target* CPU (docs: "Quantize ONNX models → Data type
selection" and "When and why do I need to try U8U8"):
- x86-64 with VNNI (AVX512-VNNI / AVX-VNNI): U8 activations, S8 weights. MLAS's fast int8 GEMM/conv kernels are
  u8×s8 (VPDPBUSD) and VNNI has no intermediate saturation, so U8S8 is both fastest and exact here.
- x86-64 without VNNI (AVX2 / AVX512-BW only): U8S8 with ``reduce_range`` (7-bit weights), because VPMADDUBSW
  saturates 16-bit intermediates with full-range weights — the accuracy problem ORT documents.
- ARM64 and others: S8S8, ORT's default recommendation for QDQ, served by the ARM (S)DOT kernels.
The target is this machine unless ``options.extra["onnx_target"]`` says "x86-vnni", "x86-avx2" or "arm64".
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

from edgeq.backends._onnx import cpu_flags, load_full, save_onnx
from edgeq.backends.base import Backend, ExportedFiles
from edgeq.errors import BackendError

CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": None}


def detect_target() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686"):
        flags = cpu_flags()
        return "x86-vnni" if {"avx512_vnni", "avx_vnni"} & flags else "x86-avx2"
    return "arm64" if machine in ("aarch64", "arm64") else "other"


def quant_types(target: str) -> dict[str, object]:
    """Activation type, weight type and reduce_range for a target, with the reason recorded in the manifest."""
    if target == "x86-vnni":
        return {"activation": "QUInt8", "weight": "QInt8", "reduce_range": False,
                "reason": "x86 VNNI: u8×s8 VPDPBUSD kernels, no saturation"}
    if target == "x86-avx2":
        return {"activation": "QUInt8", "weight": "QInt8", "reduce_range": True,
                "reason": "x86 without VNNI: 7-bit weights avoid VPMADDUBSW saturation"}
    return {"activation": "QInt8", "weight": "QInt8", "reduce_range": False,
            "reason": "ARM/other: S8S8 is ORT's recommended QDQ default"}


class _Reader:
    """ORT CalibrationDataReader over a streaming sample set (one sample per call)."""

    def __init__(self, calib, input_names: list[str]):
        self._calib = calib
        self._names = input_names
        self._iter = iter(calib)

    def get_next(self):
        sample = next(self._iter, None)
        return None if sample is None else {n: sample[n] for n in self._names}

    def rewind(self) -> None:
        self._iter = iter(self._calib)


class OnnxQdq(Backend):
    name = "onnx-qdq"
    runtime = "onnxruntime"
    precision = "int8"
    requires = ("onnx", "onnxruntime")
    pip_extra = "onnx"
    needs_calibration = True

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        method = CALIBRATION_METHODS.get(options.calib_method, "?")
        if method is None or method == "?":
            raise BackendError(f"calibration method {options.calib_method!r} is not supported by onnx-qdq "
                               f"(ONNX Runtime offers: minmax, percentile, entropy)")
        target = str(options.extra.get("onnx_target") or detect_target())
        types = quant_types(target)
        notes: list[str] = []
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".qdq-") as tmp:
            main = self._quantize(source, calib, out_dir, Path(tmp), options, types, method, notes)
        excluded = list(options.extra.get("nodes_to_exclude", []) or [])
        recipe = {"format": "QDQ", "per_channel": True, "target": target, "calibration": options.calib_method,
                  "activation_type": types["activation"], "weight_type": types["weight"],
                  "reduce_range": types["reduce_range"], "nodes_to_exclude": excluded}
        notes.insert(0, f"{types['activation']}/{types['weight']} per-channel: {types['reason']}")
        return ExportedFiles(main=main, recipe=recipe, notes=notes)

    @staticmethod
    def _quantize(source, calib, out_dir: Path, work: Path, options, types, method: str, notes: list[str]) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepped = work / "preprocessed.onnx"
        fp32 = load_full(source.onnx_path())
        try:
            quant_pre_process(fp32, str(prepped))
        except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs; retry without it
            notes.append(f"symbolic shape inference skipped ({type(exc).__name__})")
            quant_pre_process(fp32, str(prepped), skip_symbolic_shape=True)
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
        if options.calib_method == "percentile":
            extra["CalibPercentile"] = float(options.extra.get("percentile", 99.999))
        excluded = list(options.extra.get("nodes_to_exclude", []) or [])
        quantized = work / "model.onnx"
        quantize_static(
            str(prepped), str(quantized), _Reader(calib, [s.name for s in source.inputs]),
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=bool(types["reduce_range"]),
            activation_type=getattr(QuantType, str(types["activation"])),
            weight_type=getattr(QuantType, str(types["weight"])),
            calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=excluded or None,
            extra_options=extra,
        )
        return save_onnx(load_full(quantized), out_dir / "model.onnx")
