"""LiteRT/TFLite: heavy-op precision from the interpreter's tensor types (int8 weights *and* activations = INT8)."""

from __future__ import annotations

from pathlib import Path

from edgeq.explain import Explanation, HeavyOp, cpu_int8_features, verdict_for
from edgeq.types import Feeds

HEAVY = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "CONV_3D"}
INT_TYPES = {"int8", "uint8", "int16"}


def explain_tflite(path: Path, feeds: list[Feeds] | None) -> Explanation:
    from edgeq.targets.runner import _import_tflite_interpreter

    interpreter_cls, _version = _import_tflite_interpreter()
    interpreter = interpreter_cls(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops: list[HeavyOp] = []
    quantized = False
    for op in interpreter._get_ops_details():  # noqa: SLF001 - the only API listing executed ops
        kinds = [tensors[i]["dtype"].__name__ for i in op["inputs"] if i >= 0 and i in tensors]
        quantized |= any(k in INT_TYPES for k in kinds)
        if op["op_name"] not in HEAVY:
            continue
        activation, weight = (kinds + ["?", "?"])[:2]
        if activation in INT_TYPES and weight in INT_TYPES:
            ops.append(HeavyOp(f"{op['op_name']}#{op['index']}", op["op_name"], "int8"))
        else:
            why = "dynamic-range: int8 weights, float activations" if weight in INT_TYPES else "float weights and activations"
            label = "fp16" if "float16" in kinds else "fp32"
            ops.append(HeavyOp(f"{op['op_name']}#{op['index']}", op["op_name"], label, why if quantized else ""))
    features = cpu_int8_features()
    return Explanation(str(path), "tflite", ops, {}, features, verdict_for(ops, features, quantized))
