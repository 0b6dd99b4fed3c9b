"""onnx-w4: INT4 weight-only ONNX (ONNX Runtime ``MatMulNBits``), the weight-only tier for transformers.

Recipe: ORT's ``matmul_nbits_quantizer`` (RTN, ``DefaultWeightOnlyQuantConfig``) turns each MatMul with a constant
weight into ``com.microsoft.MatMulNBits``: weights packed two per byte in blocks of ``--w4-group-size`` inputs with one
scale (and, with ``--w4-asym``, a zero point) per block. ``--w4-ratio`` < 1 keeps the layers with the largest INT4
error (``_weights.choose_int4``) in 8-bit ``MatMulNBits`` instead. A ``Gemm`` with a constant weight (how PyTorch
exports ``nn.Linear`` without a batch dim) is rewritten as MatMul + Add first so that it is covered too.
Convolutions stay FP32: ORT has no weight-only convolution, so on a CNN this tier only shrinks the linear layers.

Executed precision on ORT CPU: ``accuracy_level`` 0 (default) dequantizes the weights and computes in FP32;
``-O onnx-w4.accuracy_level=4`` lets MLAS quantize activations to int8 per block and run integer
dot products (faster on VNNI/ARM dot-product CPUs, less accurate). Activations are never stored quantized.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeq.backend_config import Int4Config
from edgeq.errors import BackendError
from edgeq.runtimes._weights import choose_int4
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.onnx._onnx import load_full, save_onnx


def gemm_to_matmul(model) -> int:  # model: onnx.ModelProto; returns the number of Gemms rewritten
    """Rewrite ``Gemm(A, B[, C])`` with a constant B, alpha = beta = 1 and no transA as ``MatMul(A, B') (+ C)``."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    rewritten, nodes = 0, []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T.copy()
        name = node.name or f"gemm_{rewritten}"
        weight_name = f"{name}_weight_kn"
        graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{name}_matmul_out" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=name))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{name}_bias"))
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {i for n in graph.node for i in n.input}
        keep = [init for init in graph.initializer if init.name in used]
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return rewritten


def block_size(group_size: int, rows: int) -> int:
    """MatMulNBits block size: the group size, or (per channel, -1) the next power of two ≥ the input dimension."""
    return group_size if group_size != -1 else max(16, 2 ** math.ceil(math.log2(max(rows, 1))))


class OnnxW4Config(Int4Config):
    """onnx-w4 options: the INT4 settings and MatMulNBits' accuracy level."""

    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        None, description="MatMulNBits accuracy_level: 4 = int8 activations per block, integer dot products "
                          "(faster on VNNI / ARM dot product, less accurate); default 0 (FP32 compute)")


class OnnxW4(Backend):
    name = "onnx-w4"
    runtime = "onnxruntime"
    precision = "w4"
    requires = ("onnx", "onnxruntime")
    pip_extra = "onnx"
    Config = OnnxW4Config

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        from onnx import numpy_helper
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )

        settings: OnnxW4Config = self.config_of(options)
        model = load_full(source.onnx_path())
        gemms = gemm_to_matmul(model)
        inits = {init.name: init for init in model.graph.initializer}
        matmuls = {node.name: numpy_helper.to_array(inits[node.input[1]]) for node in model.graph.node
                   if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in inits
                   and len(inits[node.input[1]].dims) == 2}
        if not matmuls:
            raise BackendError(f"{self.name}: no MatMul/Gemm with constant weights in {source.name}: nothing for INT4 "
                               "weight-only (convolutions have no weight-only kernel in ONNX Runtime)")
        unnamed = [n for n in matmuls if not n]
        if unnamed:
            raise BackendError(f"{self.name}: the graph has unnamed MatMul nodes; name them to choose INT4 layers")
        int4, errors = choose_int4({n: w.T for n, w in matmuls.items()}, settings.ratio, settings.group_size,
                                   settings.symmetric)
        level = settings.accuracy_level
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
        rows = max(w.shape[0] for w in matmuls.values())
        for bits, exclude in ((4, [n for n in matmuls if n not in int4]), (8, [])):
            if bits == 8 and len(int4) == len(matmuls):
                break
            config = DefaultWeightOnlyQuantConfig(block_size=block_size(settings.group_size, rows),
                                                  is_symmetric=settings.symmetric, accuracy_level=level, bits=bits)
            tool = MatMulNBitsQuantizer(model, nodes_to_exclude=exclude, algo_config=config)
            tool.process()
            model = tool.model.model
        main = save_onnx(model, out_dir / "model.onnx")
        int4_params = sum(int(matmuls[n].size) for n in int4)
        recipe = {"tool": "onnxruntime matmul_nbits_quantizer (RTN)", "op": "com.microsoft.MatMulNBits",
                  "group_size": settings.group_size, "symmetric": settings.symmetric, "ratio": settings.ratio,
                  "int4_layers": int4, "int8_layers": [n for n in matmuls if n not in int4],
                  "int4_param_fraction": round(int4_params / sum(int(w.size) for w in matmuls.values()), 4),
                  "int4_error": errors, "gemm_rewritten": gemms, "accuracy_level": level or 0,
                  "executes": ("int8 activations x int4 weights (MLAS accuracy_level 4)" if level == 4
                               else "fp32 compute, weights dequantized in MatMulNBits"),
                  "convolutions": "fp32"}
        notes = [f"INT4 weight-only: {len(int4)}/{len(matmuls)} MatMul layers INT4 (group {settings.group_size}), "
                 f"the rest INT8; {recipe['executes']}"]
        return ExportedFiles(main=main, recipe=recipe, notes=notes)
