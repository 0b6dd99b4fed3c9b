"""ai-edge-quantizer recipes for the TFLite tiers beyond INT8, applied to the FP32 .tflite of any source route.

- ``w8a16`` (LiteRT "16x8"): ``recipe.static_wi8_ai16`` — int8 per-channel weights, int16 activations (symmetric,
  zero point 0), calibrated on the calibration set; int16 model I/O with scale/zero point in the tensor details.
- ``w4``: dynamic-range INT4 weights (``add_dynamic_config(num_bits=4)``): fully connected / batch-matmul weights in
  blocks of the group size (``BLOCKWISE_32 … 256``), convolution weights — and weights whose input dimension the
  group size does not divide — per channel (ai-edge-quantizer has no blockwise convolution); the layers left out by the ratio, and every other supported op, get dynamic INT8. LiteRT
  quantizes the activations to int8 at run time and runs integer kernels (XNNPACK qb4w/qc4w).
  Measured on BERT-mini (1 thread, this machine): dynamic INT4 blockwise-128 3.7 ms vs FP32 15.9 ms; the
  weight-only INT4 recipe (explicit DEQUANTIZE, float compute) ran at 44 ms — LiteRT dequantizes the weights on every
  invocation — and ai-edge-quantizer leaves weight-only *blockwise* tensors unquantized, so ``w4`` is dynamic.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edgeq.errors import BackendError
from edgeq.runtimes._weights import choose_int4
from edgeq.runtimes.tflite._tflite import quiet

WEIGHT_OPS = {"FULLY_CONNECTED": "blockwise", "BATCH_MATMUL": "blockwise", "CONV_2D": "channelwise"}
BLOCK_SIZES = (32, 64, 128, 256)


def w8a16(fp32: Path, out: Path, calib, input_names: list[str]) -> Path:
    """LiteRT 16x8 through ai-edge-quantizer's ``static_wi8_ai16`` recipe, calibrated on ``calib``."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(str(fp32)).get_signature_list()
    key = next(iter(signatures))
    names = list(signatures[key]["inputs"])
    if len(names) != len(input_names):
        raise BackendError(f"tflite-w8a16: the .tflite has {len(names)} inputs, the source {len(input_names)}")
    samples = [{tfl: np.asarray(feeds[src]) for tfl, src in zip(names, input_names)} for feeds in calib]
    with quiet():
        tool = quantizer.Quantizer(str(fp32))
        tool.load_quantization_recipe(recipe.static_wi8_ai16())
        result = tool.quantize(tool.calibrate({key: samples}))
    out.write_bytes(bytes(result.quantized_model))
    return out


def weight_layers(fp32: Path) -> dict[str, tuple[str, np.ndarray]]:
    """{op scope: (op name, weight as (out, in) matrix)} for the ops whose weights ``w4`` can put in INT4."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    model = tfu.read_model(fp32)
    layers: dict[str, tuple[str, np.ndarray]] = {}
    for subgraph_index, subgraph in enumerate(model.subgraphs):
        for op_index, op in enumerate(subgraph.operators):
            op_name = tfu.get_op_name_by_index(model, subgraph_index, op_index)
            if op_name not in WEIGHT_OPS or len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            weight = tfu.get_tensor_data(subgraph.tensors[op.inputs[1]], model.buffers)
            if weight is None or weight.dtype != np.float32 or weight.ndim < 2:
                continue
            matrix = np.swapaxes(weight, -1, -2).reshape(weight.shape[-1], -1) if op_name == "BATCH_MATMUL" \
                else weight.reshape(weight.shape[0], -1)
            layers[tfu.get_op_scope(op, subgraph.tensors)] = (op_name, matrix)
    return layers


def w4(fp32: Path, out: Path, settings) -> tuple[Path, dict[str, object]]:
    """Dynamic INT4 weights for ``settings.ratio`` of the weight parameters, dynamic INT8 for the rest."""
    from ai_edge_quantizer import qtyping, quantizer

    if settings.group_size != -1 and settings.group_size not in BLOCK_SIZES:
        raise BackendError(f"tflite-w4: ai-edge-quantizer blocks are {', '.join(map(str, BLOCK_SIZES))} "
                           f"(or -1 per channel), not {settings.group_size}")
    if not settings.symmetric:
        raise BackendError("tflite-w4: LiteRT's INT4 weights are symmetric only (no --w4-asym)")
    layers = weight_layers(fp32)
    if not layers:
        raise BackendError("tflite-w4: no fully connected / batch-matmul / convolution weights to quantize")
    chosen, errors = choose_int4({scope: matrix for scope, (_, matrix) in layers.items()}, settings.ratio,
                                 settings.group_size)
    blockwise = (qtyping.QuantGranularity.CHANNELWISE if settings.group_size == -1
                 else getattr(qtyping.QuantGranularity, f"BLOCKWISE_{settings.group_size}"))
    ops = qtyping.TFLOperationName
    per_channel = []  # chosen layers without blocks: convolutions, and input dims the group size does not divide
    with quiet():
        tool = quantizer.Quantizer(str(fp32))
        tool.add_dynamic_config(regex=".*", operation_name=ops.ALL_SUPPORTED, num_bits=8)
        for scope in chosen:  # later configs win in ai-edge-quantizer's recipe manager
            op_name, matrix = layers[scope]
            granularity = blockwise
            if WEIGHT_OPS[op_name] != "blockwise" or matrix.shape[1] % max(settings.group_size, 1):
                granularity = qtyping.QuantGranularity.CHANNELWISE
                per_channel.append(scope)
            tool.add_dynamic_config(regex="^" + re.escape(scope) + "$", operation_name=getattr(ops, op_name),
                                    num_bits=4, granularity=granularity)
        result = tool.quantize()
    out.write_bytes(bytes(result.quantized_model))
    params = sum(int(layers[s][1].size) for s in chosen)
    recipe = {"tool": "ai-edge-quantizer dynamic INT4/INT8", "group_size": settings.group_size,
              "ratio": settings.ratio, "symmetric": True, "int4_layers": len(chosen),
              "int8_layers": len(layers) - len(chosen),
              "int4_param_fraction": round(params / sum(int(m.size) for _, m in layers.values()), 4),
              "int4_error_max": max(errors[s] for s in chosen) if chosen else None,
              "int4_per_channel_layers": len(per_channel),
              "convolutions": "int4 per channel when chosen (no blockwise convolution)",
              "executes": "int8 activations quantized at run time x int4/int8 weights (LiteRT dynamic-range kernels)"}
    return out, recipe
