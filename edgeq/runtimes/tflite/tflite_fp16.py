"""tflite-fp16: FP16 weights (ai-edge-quantizer float casting); computed in FP32 on CPUs without FP16 arithmetic."""

from __future__ import annotations

from edgeq.runtimes.tflite._tflite import RequantizedTflite


class TfliteFp16(RequantizedTflite):
    name = "tflite-fp16"
    precision = "fp16"
    requantize_kind = "fp16"
    note = "FP16 weights (ai-edge-quantizer float casting); computed in FP32 on CPUs without FP16 arithmetic"
