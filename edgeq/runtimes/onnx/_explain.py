"""ONNX Runtime: heavy-op precision from the optimized graph ORT executes; per-tensor SQNR of each Q→DQ pair."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.errors import EdgeqError
from edgeq.explain import Explanation, HeavyOp, cpu_int8_features, verdict_for
from edgeq.types import Feeds

FLOAT_HEAVY = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "FusedConv", "FusedGemm", "FusedMatMul"}
INT8_HEAVY = {"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
              "DynamicQuantizeMatMul", "QAttention", "QLinearConvTranspose", "DynamicQuantizeLSTM", "NhwcQLinearConv"}


def optimized_graph(path: Path):  # -> onnx.ModelProto
    """The graph ORT's CPU provider runs after its optimizations (where QDQ groups become INT8 kernels)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise EdgeqError(f"onnxruntime cannot load {path}: {str(exc).splitlines()[0][:200]}") from None
        return onnx.load(options.optimized_model_filepath)


def heavy_ops(path: Path) -> tuple[list[HeavyOp], bool]:
    """Heavy ops of the executed graph with precision; and whether the artifact has any QDQ at all."""
    import onnx

    original = onnx.load(str(path), load_external_data=False)
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type in INT8_HEAVY
                    for n in original.graph.node)
    graph = optimized_graph(path).graph
    producers = {out: node for node in graph.node for out in node.output}
    ops: list[HeavyOp] = []
    for node in graph.node:
        if node.op_type in INT8_HEAVY:
            ops.append(HeavyOp(node.name, node.op_type, "int8"))
        elif node.op_type in FLOAT_HEAVY:
            dq_inputs = [getattr(producers.get(i), "op_type", "") == "DequantizeLinear" for i in node.input[:2]]
            if len(dq_inputs) == 2 and all(dq_inputs):
                reason = ("quantized in the file, but ONNX Runtime has no INT8 kernel for this op/type combination "
                          "(it dequantizes and runs FP32)")
            else:
                reason = "float weights: not quantized (excluded, or unsupported by the quantizer)"
            if not quantized:
                reason = ""
            ops.append(HeavyOp(node.name, node.op_type, "fp32", reason))
    return ops, quantized


def intermediate_activations(model: Path, feeds: list[Feeds], tmp: Path) -> dict:
    """Every intermediate tensor of ``model`` on ``feeds`` (ORT qdq_loss_debug), by tensor name."""
    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> Feeds | None:
            return next(self._it, None)

    augmented = tmp / f"augmented-{model.parent.name}.onnx"
    modify_model_output_intermediate_tensors(str(model), str(augmented))
    return collect_activations(str(augmented), Reader())


def layer_sqnr(path: Path, reference: Path, feeds: list[Feeds]) -> dict[str, float]:
    """SQNR (dB) of each quantized activation of the QDQ model against the same tensor of the FP32 model.

    This is the accumulated error at each layer (what the user sees at the output), not just the local rounding
    error; low values point at the layers to keep in float.
    """
    from onnxruntime.quantization.qdq_loss_debug import compute_activation_error, create_activation_matching

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        matches = create_activation_matching(intermediate_activations(path, feeds, tmp),
                                             intermediate_activations(reference, feeds, tmp))
    matched = {name: m for name, m in matches.items() if "float" in m}
    errors = compute_activation_error(matched)
    return {name: round(float(err["xmodel_err"]), 2) for name, err in errors.items()}


def explain_onnx(path: Path, feeds: list[Feeds] | None, reference: Path | None = None) -> Explanation:
    """``reference``: the FP32 ONNX model; by default the sibling ``onnx-fp32`` artifact of an edgeq export."""
    ops, quantized = heavy_ops(path)
    reference = reference or path.parent.parent / "onnx-fp32" / "model.onnx"
    sqnr = layer_sqnr(path, reference, feeds) if quantized and feeds and reference.is_file() else {}
    features = cpu_int8_features()
    return Explanation(str(path), "onnxruntime", ops, sqnr, features, verdict_for(ops, features, quantized))
