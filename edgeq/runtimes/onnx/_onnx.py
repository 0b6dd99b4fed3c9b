"""Shared ONNX helpers for the onnx-* backends: saving (single file unless huge) and CPU feature checks."""

from __future__ import annotations

import platform
from pathlib import Path

from edgeq.runtimes.attention import AttentionEvidence

EXTERNAL_DATA_THRESHOLD = 1_500_000_000
"""Protobuf caps a single file at 2 GB; below this size an artifact is one self-contained model.onnx."""


def strip_metadata(model) -> None:  # model: onnx.ModelProto
    """Drop what runtimes never read: per-node exporter metadata (stack traces), doc strings, value_info.

    The PyTorch dynamo exporter writes ~1.5 KB of metadata per node; on small models that is as large as the
    weights and would hide the real INT8/FP32 size ratio.
    """
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        graph.doc_string = ""
        del graph.value_info[:]
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
            graphs.extend(attr.g for attr in node.attribute if attr.HasField("g"))
    model.doc_string = ""


def save_onnx(model, path: Path) -> Path:  # model: onnx.ModelProto
    """Save ``model`` to ``path`` without exporter metadata; weights go to ``model.onnx.data`` only when huge."""
    import onnx

    strip_metadata(model)
    large = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    onnx.save(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
              location=f"{path.name}.data" if large else None)
    return path


def load_full(path: Path):  # -> onnx.ModelProto
    """Load a model together with any external data files next to it."""
    import onnx

    return onnx.load(str(path), load_external_data=True)


def detect_target() -> str:
    from edgeq.targets.runner import cpu_flags

    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686"):
        flags = cpu_flags()
        return "x86-vnni" if {"avx512_vnni", "avx_vnni"} & flags else "x86-avx2"
    return "arm64" if machine in ("aarch64", "arm64") else "other"


ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}


def has_attention(path: Path) -> bool:
    """An attention block in an ONNX graph (``edgeq.runtimes.attention``'s rule). Reads the graph only, not the
    weights."""
    import onnx

    return attention_evidence(onnx.load(str(path), load_external_data=False).graph).attention


def attention_evidence(graph) -> AttentionEvidence:  # graph: onnx.GraphProto
    """Fused attention ops, Softmax ops and MatMuls whose operands are both activations (Q·Kᵀ and attention·V)."""
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    ops = [node.op_type for node in graph.node]
    activation_matmuls = sum(1 for node in graph.node if node.op_type == "MatMul"
                             and not any(name in constants for name in node.input))
    return AttentionEvidence(sum(op in ATTENTION_OPS for op in ops), ops.count("Softmax"), activation_matmuls)


def residual_norm_nodes(path: Path) -> list[str]:
    """Names of the LayerNormalization nodes of an ONNX graph and of the Add nodes that feed them (the residual
    stream of a transformer block)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    names = []
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            names.append(node.name)
            feeder = producer.get(node.input[0])
            if feeder is not None and feeder.op_type == "Add":
                names.append(feeder.name)
    return [name for name in names if name]


MASK_MAGNITUDE = 1e4
"""A constant this large is an additive-mask filler (``finfo.min``, -1e9, -10000), not a weight."""
MASK_CARRIERS = {"Add", "Sub", "Mul", "Where", "Expand", "Reshape", "Unsqueeze", "Squeeze", "Cast", "Concat", "Slice",
                 "Transpose", "Tile", "Softmax"}
"""Ops through which a mask filler reaches the attention scores (Softmax ends the path: its output is a probability)."""


def mask_nodes(path: Path) -> list[str]:
    """Names of the nodes on the paths from a constant of magnitude ≥ ``MASK_MAGNITUDE`` through ``MASK_CARRIERS`` to
    Softmax: the additive attention mask (``Where(mask, 0, finfo.min)`` or ``(1 - mask) * -10000`` added to the
    scores). One per-tensor int8 scale cannot hold -3.4e38 beside the scores; quantized, every score collapses to
    one value — whether the calibration samples had padding or not."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph

    def huge(tensor) -> bool:  # tensor: onnx.TensorProto
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type not in (
                onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
            return False
        values = numpy_helper.to_array(tensor)
        return values.size > 0 and float(np.max(np.abs(values))) >= MASK_MAGNITUDE

    reached = {init.name for init in graph.initializer if huge(init)}
    for node in graph.node:
        if node.op_type in ("Constant", "ConstantOfShape") and any(a.name == "value" and huge(a.t)
                                                                   for a in node.attribute):
            reached.update(node.output)
    marked: list[str] = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in MASK_CARRIERS and reached & set(node.input):
            marked.append(node.name)
            if node.op_type != "Softmax":
                reached.update(node.output)
    return [name for name in marked if name]
