"""tflite-dynamic: dynamic-range: int8 weights, activations quantized at run time (ai-edge-quantizer)."""

from __future__ import annotations

from edgeq.runtimes.tflite._tflite import RequantizedTflite


class TfliteDynamic(RequantizedTflite):
    name = "tflite-dynamic"
    precision = "dynamic"
    requantize_kind = "dynamic"
    note = "dynamic-range: int8 weights, activations quantized at run time (ai-edge-quantizer)"
