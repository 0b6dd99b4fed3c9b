"""onnx-w8a16: static QDQ with int16 activations and int8 per-channel symmetric weights (ONNX Runtime).

The onnx-qdq recipe (pre-processing, calibration methods, the attention recipe, ``nodes_to_exclude``) with
``activation_type=QInt16``: 256× finer activation steps than INT8 for activations whose range is set by a few outliers
(the case where INT8 PTQ fails: docs/precision.md). ORT writes the graph at opset 21 (16-bit QuantizeLinear /
DequantizeLinear need it).

Executed precision on ORT CPU (checked on ORT 1.31's optimized graph): there are no int16 convolution / GEMM kernels,
and the QDQ fusions only match 8-bit pairs, so each op runs in FP32 between a DequantizeLinear and a QuantizeLinear —
the activations are *rounded* to int16 grids, weights to int8, and compute is FP32. It is the accuracy of a W8A16
accelerator (NPUs / DSPs with 16x8 kernels, e.g. Qualcomm's w8a16), verified on the CPU, not a CPU speed-up.
"""

from __future__ import annotations

from edgeq.runtimes.onnx.onnx_qdq import OnnxQdq


class OnnxW8a16(OnnxQdq):
    name = "onnx-w8a16"
    precision = "w8a16"

    @staticmethod
    def quant_types(target: str) -> dict[str, object]:
        return {"activation": "QInt16", "weight": "QInt8", "reduce_range": False,
                "reason": "W8A16: int16 activations, int8 weights; ORT CPU computes FP32 between 16-bit Q/DQ pairs",
                "executes": "fp32 compute on int16-rounded activations and int8-rounded weights (no int16 kernels)"}
