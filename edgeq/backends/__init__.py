"""Backend registry. Each entry maps the CLI name to ``module:Class``; modules are imported only when used."""

from __future__ import annotations

import importlib

from edgeq.backends.base import Backend, ExportedFiles
from edgeq.errors import BackendError

REGISTRY: dict[str, str] = {
    "onnx-fp32": "edgeq.backends.onnx_fp32:OnnxFp32",
    "onnx-fp16": "edgeq.backends.onnx_fp16:OnnxFp16",
    "onnx-qdq": "edgeq.backends.onnx_qdq:OnnxQdq",
    "onnx-w8a16": "edgeq.backends.onnx_w8a16:OnnxW8a16",
    "onnx-w4": "edgeq.backends.onnx_w4:OnnxW4",
    "openvino-fp32": "edgeq.backends.openvino_fp32:OpenvinoFp32",
    "openvino-fp16": "edgeq.backends.openvino_fp16:OpenvinoFp16",
    "openvino-int8": "edgeq.backends.openvino_int8:OpenvinoInt8",
    "openvino-bf16": "edgeq.backends.openvino_bf16:OpenvinoBf16",
    "openvino-w4": "edgeq.backends.openvino_w4:OpenvinoW4",
    "tflite-fp32": "edgeq.backends.tflite_fp32:TfliteFp32",
    "tflite-fp16": "edgeq.backends.tflite_fp16:TfliteFp16",
    "tflite-dynamic": "edgeq.backends.tflite_dynamic:TfliteDynamic",
    "tflite-int8": "edgeq.backends.tflite_int8:TfliteInt8",
    "tflite-w8a16": "edgeq.backends.tflite_w8a16:TfliteW8a16",
    "tflite-w4": "edgeq.backends.tflite_w4:TfliteW4",
}

TIERS: tuple[str, ...] = ("onnx-w8a16", "onnx-w4", "openvino-w4", "tflite-w8a16", "tflite-w4")
"""Precision tiers beyond INT8 (docs/precision.md): accuracy or size tiers, none faster than INT8 on the CPUs
measured (W8A16 runs 2-21x FP32 without int16 kernels). Exported when named, or all at once as ``-b tiers``."""

# Rows exported only when named, never part of 'all' (whose ten rows run in the precision their names say on any
# CPU and are the speed candidates): openvino-bf16 needs AVX512-BF16 or AMX-BF16; the tiers above.
OPT_IN: frozenset[str] = frozenset({"openvino-bf16", *TIERS})
GROUPS: dict[str, tuple[str, ...]] = {"tiers": TIERS}


REFUSED: dict[str, str] = {
    "openvino-w8a16": "openvino-w8a16 is not provided: OpenVINO's CPU plugin has no int16 kernels — it drops a "
                      "65536-level FakeQuantize and runs the layer in f32 (checked on its runtime model) — and NNCF's "
                      "quantize() offers INT8/FP8 only; use openvino-int8 with --max-drop (float layers run bf16 "
                      "where the CPU computes it) or onnx-w8a16 / tflite-w8a16",
}
"""Names a user may reasonably ask for that no runtime here can honour, with the one-line reason."""


def backend_names() -> list[str]:
    return list(REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """The backend class for a CLI name; a one-line error listing valid names otherwise."""
    if name in REFUSED:
        raise BackendError(REFUSED[name])
    try:
        target = REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; choose from: {', '.join(REGISTRY)} or 'all' / 'tiers'") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def resolve(names: list[str]) -> list[str]:
    """Expand 'all' and 'tiers', drop duplicates, keep order, and reject unknown names."""
    out: list[str] = []
    for name in names or ["all"]:
        expanded = [n for n in REGISTRY if n not in OPT_IN] if name == "all" else list(GROUPS.get(name, [name]))
        for item in expanded:
            if item not in REGISTRY:
                get_backend(item)  # raises the one-line "unknown backend" error
            if item not in out:
                out.append(item)
    return out


__all__ = ["Backend", "ExportedFiles", "GROUPS", "OPT_IN", "REGISTRY", "TIERS", "backend_names", "get_backend", "resolve"]
