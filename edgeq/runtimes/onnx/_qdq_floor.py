"""onnx-qdq's fidelity floor: which activations' 8-bit quantization costs the model most, measured at the output.

ORT's own per-tensor debugger (``qdq_loss_debug``, the accuracy-control ranking) scores each activation by its
*local* SQNR; the damage at the output can sit elsewhere. On PP-OCRv5 text recognition quantizing only the output of
``Conv.2`` (LCNet stem; one u8 grid of 0.33 over -38…46 before a hard-swish) gives 0.674 worst-sample cosine alone,
and int16 on that output alone gives 0.989.

The ranking keeps one activation's QuantizeLinear/DequantizeLinear pair at a time in the ORT-quantized model and
removes the others (no re-calibration: the pair keeps its ORT scale), scores the output against FP32 on held-back
samples the model was not calibrated on, and puts the tensors that do the most damage alone first
(``edgeq.runtimes._picking.rank_alone``). onnx-qdq then asks ORT's quantizer for int16 activations on the top 1, 2, 4,
8 of them (``int16_tensors``, ``TensorQuantOverrides``) and keeps a candidate only when it clearly gains
(``FLOOR_MIN_GAIN``). Where the damage is spread over dozens of tensors (all of PP-OCRv5 recognition's stem blocks)
eight are not enough and the plain model stays (docs/accuracy.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgeq.runtimes._picking import rank_alone


def activation_pairs(model) -> list[str]:  # model: onnx.ModelProto
    """The activations (not initializers, not graph outputs' DQ) a QDQ model quantizes, in graph order."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    dequantized_by = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    outputs = {o.name for o in graph.output}
    pairs = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants or node.output[0] not in dequantized_by:
            continue
        dq_outputs = [d.output[0] for d in graph.node if d.op_type == "DequantizeLinear" and d.input[0] == node.output[0]]
        if not set(dq_outputs) & outputs and node.input[0] not in pairs:
            pairs.append(node.input[0])
    return pairs


def without_pairs(model, tensors: set[str]):  # model: onnx.ModelProto (left unchanged); returns a copy
    """A copy of ``model`` with the Q/DQ pairs on ``tensors`` removed: their consumers read the float tensors."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in tensors]
    source_of = {n.output[0]: n.input[0] for n in quantizers}
    dequantizers = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in source_of]
    renamed = {n.output[0]: source_of[n.input[0]] for n in dequantizers}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for node in quantizers + dequantizers:
        graph.node.remove(node)
    return copy


def rank_by_damage(model_path: Path, score: Callable[[bytes], tuple[float, float, float]]
                   ) -> tuple[list[tuple[str, float]], int]:
    """(activations sorted by the damage their 8-bit quantization alone does, worst first, with that damage; how
    many activations the model quantizes); ``score`` runs a serialized model (``_picking.rank_alone``)."""
    import onnx

    model = onnx.load(str(model_path))
    tensors = activation_pairs(model)
    everything = set(tensors)

    def mean_with_only(tensor: str | None) -> float:
        return score(without_pairs(model, everything - {tensor}).SerializeToString())[1]

    return rank_alone(tensors, mean_with_only), len(tensors)


def cosine_scores(references: Sequence[Sequence[np.ndarray]], outputs: Sequence[Sequence[np.ndarray]],
                  signal_floor: float) -> tuple[float, float, float]:
    """(worst, mean, pooled) cosine of ``outputs`` vs ``references`` (per sample, each output flattened). Worst: of
    every output, over the samples whose reference carries signal for it (norm >= ``signal_floor`` x the output's
    median norm); mean: of each sample's worst output; pooled: the worst output's cosine over all samples joined."""

    def cosine(r: np.ndarray, g: np.ndarray) -> float:
        return float(r @ g / (np.linalg.norm(r) * np.linalg.norm(g) + 1e-12)) if np.any(r) or np.any(g) else 1.0

    pairs = [[(np.ravel(r).astype(np.float64), np.ravel(g).astype(np.float64)) for r, g in zip(refs, gots)]
             for refs, gots in zip(references, outputs)]
    if not pairs:
        return 0.0, 0.0, 0.0
    worst, pooled = 1.0, 1.0
    for output in zip(*pairs):
        floor = signal_floor * float(np.median([np.linalg.norm(r) for r, _ in output]))
        worst = min(worst, min(cosine(r, g) for r, g in output if np.linalg.norm(r) >= floor))
        pooled = min(pooled, cosine(np.concatenate([r for r, _ in output]), np.concatenate([g for _, g in output])))
    return worst, float(np.mean([min(cosine(r, g) for r, g in sample) for sample in pairs])), pooled
