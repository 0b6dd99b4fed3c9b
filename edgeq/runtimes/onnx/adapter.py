"""ONNX Runtime's ``RuntimeAdapter``: QAT lowered to QDQ ONNX, accuracy control by ranking QDQ activations (ORT
``qdq_loss_debug``) and excluding nodes or raising activations to int16, explain over ORT's optimized graph."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeq.runtimes.adapter import (
    AdapterBase,
    Attempt,
    ControlPlan,
    ControlRequest,
    LayerGroup,
    config_of,
    float_attempt,
    sqnr_ranking,
    with_option,
)
from edgeq.runtimes.base import ExportedFiles
from edgeq.types import ExportOptions, Feeds


def rank_onnx_qdq(model: Path, feeds: list[Feeds]) -> list[LayerGroup]:
    """Quantized activations of a QDQ model, worst median per-channel SQNR first, with producer + consumer nodes."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching
    from onnxruntime.quantization.quant_utils import DEQUANT_OUTPUT_SUFFIX

    from edgeq.runtimes.onnx._explain import intermediate_activations

    with tempfile.TemporaryDirectory() as tmp:
        matching = create_activation_matching(intermediate_activations(Path(model), feeds, Path(tmp)))
    graph = onnx.load(str(model), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    qdq_ops = {"QuantizeLinear", "DequantizeLinear"}
    pairs = []
    for tensor, pair in matching.items():
        if "pre_qdq" not in pair or "post_qdq" not in pair:
            continue
        layers = []
        producer = producers.get(tensor)
        if producer is not None and producer.op_type not in qdq_ops and producer.name:
            layers.append(producer.name)
        dq_out = tensor + DEQUANT_OUTPUT_SUFFIX
        layers += [n.name for n in graph.node if n.op_type not in qdq_ops and n.name
                   and (dq_out in n.input or tensor in n.input) and n.name not in layers]
        pairs.append((tensor, pair["pre_qdq"], pair["post_qdq"], layers))
    return sqnr_ranking(pairs)


def pin_picked_recipe(options: ExportOptions, backend: str, recipe: dict[str, Any]) -> ExportOptions:
    """``options`` with the recipe onnx-qdq picked by measurement (weight granularity and bits, range method, which
    ops) pinned, so that accuracy-control rebuilds change only the layers they float, not the recipe under them."""
    pins: dict[str, object] = {"quantized_ops": "mac" if recipe.get("quantized_ops") else "all", "fidelity_floor": 0.0,
                               "int16_tensors": list(recipe.get("int16_tensors") or [])}
    for key in ("per_channel", "calibration", "reduce_range"):
        if recipe.get(key) is not None:
            pins[key] = recipe[key]
    return with_option(options, backend, **pins)


class OnnxAdapter(AdapterBase):
    runtime = "onnxruntime"
    artifact_suffix = ".onnx"
    package = "onnx"
    qat_backends = frozenset({"onnx-qdq"})
    controlled_backends = frozenset({"onnx-qdq"})
    fallback_tiers = ("int16", "fp32")
    """``--fallback tiered``: int16 activations on the top-k tensors (weights stay int8), then their nodes float."""

    def export_qat(self, backend: str, source: Any, calib: Any, out_dir: Path, options: ExportOptions
                   ) -> ExportedFiles:
        from edgeq.runtimes.onnx._qat import export_onnx_qdq

        return export_onnx_qdq(source, calib, out_dir, options)

    def rank_layers(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, feeds: list[Feeds],
                    options: ExportOptions) -> list[LayerGroup]:
        return rank_onnx_qdq(plain.main, feeds)

    def control_plan(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, options: ExportOptions,
                     request: ControlRequest, tiered: bool) -> ControlPlan:
        options = pin_picked_recipe(options, backend, plain.recipe)

        def move(tier: str, top: list[LayerGroup]) -> Attempt:
            if tier != "int16":
                return float_attempt(options, backend, "nodes_to_exclude", tier, top)
            tensors = [g.tensor for g in top]
            base = list(config_of(backend, options).int16_tensors)  # the fidelity floor's, kept
            return Attempt(with_option(options, backend, int16_tensors=list(dict.fromkeys(base + tensors))),
                           {"int16_tensors": tensors},
                           layer_tiers={t: "int16 activations" for t in tensors})

        return self.ranked_plan(
            "median per-channel SQNR of each QDQ activation (ORT qdq_loss_debug); nodes_to_exclude",
            self.fallback_tiers if tiered else ("fp32",), move, backend, source, calib, plain, options, request)

    def explain(self, path: Path, feeds: list[Feeds] | None) -> Any:
        from edgeq.runtimes.onnx._explain import explain_onnx

        return explain_onnx(path, feeds)

    def has_attention(self, graph: Any) -> bool:
        from edgeq.runtimes.onnx._onnx import attention_evidence

        return attention_evidence(graph).attention


ADAPTER = OnnxAdapter()
