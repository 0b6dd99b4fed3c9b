"""OpenVINO: heavy-op precision from the runtime model the CPU plugin actually compiled (runtimePrecision)."""

from __future__ import annotations

from pathlib import Path

from edgeq.explain import Explanation, HeavyOp, cpu_int8_features, verdict_for
from edgeq.types import Feeds

HEAVY_LAYER_TYPES = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
                     "FullyConnectedCompressed"}


def explain_openvino(path: Path, feeds: list[Feeds] | None) -> Explanation:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    quantized = any(op.get_type_name() == "FakeQuantize" or op.get_element_type().get_type_name() in ("i8", "u8")
                    for op in model.get_ops() if op.get_output_size() > 0)
    runtime_model = core.compile_model(model, "CPU").get_runtime_model()
    ops: list[HeavyOp] = []
    for op in runtime_model.get_ordered_ops():
        info = op.get_rt_info()
        layer_type = str(info["layerType"]) if "layerType" in info else op.get_type_name()
        if layer_type not in HEAVY_LAYER_TYPES:
            continue
        precision = str(info["runtimePrecision"]).lower() if "runtimePrecision" in info else "unknown"
        label = "int8" if precision in ("i8", "u8") else ("fp16" if precision in ("f16", "bf16") else "fp32")
        reason = "" if label == "int8" or not quantized else "the CPU plugin kept this layer in float (no quantized pattern around it)"
        ops.append(HeavyOp(op.get_friendly_name(), layer_type, label, reason))
    features = cpu_int8_features()
    return Explanation(str(path), "openvino", ops, {}, features, verdict_for(ops, features, quantized))
