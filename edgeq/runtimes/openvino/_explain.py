"""OpenVINO: heavy-op precision from the runtime model the CPU plugin actually compiled (each layer's kernel).

The model is compiled the way the runner compiles it (``openvino_config``: the precision hint pinned to what the
artifact's name promises, never the plugin's default, which is BF16 on AVX512-BF16/AMX CPUs and f16 on ARM)."""

from __future__ import annotations

from pathlib import Path

from edgeq.errors import BackendError
from edgeq.explain import Explanation, HeavyOp, cpu_int8_features, verdict_for
from edgeq.types import Feeds

HEAVY_LAYER_TYPES = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm",
                     "FullyConnectedCompressed", "FullyConnectedQuantizedLegacy"}
_LABELS = {"i8": "int8", "u8": "int8", "f16": "fp16", "bf16": "bf16", "f32": "fp32"}


def explain_openvino(path: Path, feeds: list[Feeds] | None) -> Explanation:
    import openvino as ov

    from edgeq.targets.runner import (
        RunnerError,
        choose_precision,
        openvino_config,
        openvino_runtime_layers,
        ov_recorded_precision,
    )

    core = ov.Core()
    model = core.read_model(str(path))
    quantized = any(op.get_type_name() == "FakeQuantize" or op.get_element_type().get_type_name() in ("i8", "u8")
                    for op in model.get_ops() if op.get_output_size() > 0)
    wanted = ov_recorded_precision(model)
    try:
        hint, _note = choose_precision(wanted, "openvino")
    except RunnerError as exc:
        raise BackendError(f"{path}: {exc}") from None
    compiled = core.compile_model(model, "CPU", openvino_config(1, hint))
    ops: list[HeavyOp] = []
    for layer in openvino_runtime_layers(compiled):
        if layer["type"] not in HEAVY_LAYER_TYPES:
            continue
        label = _LABELS.get(layer["precision"], layer["precision"])
        reason = "" if label == "int8" or not quantized else "the CPU plugin kept this layer in float (no quantized pattern around it)"
        ops.append(HeavyOp(layer["name"], layer["type"], label, reason))
    features = cpu_int8_features()
    return Explanation(str(path), "openvino", ops, {}, features, verdict_for(ops, features, quantized))
