"""Accuracy-aware quantization (``edgeq export --eval EVALSET --max-drop X``, or label-free ``--min-fidelity C``).

``--min-fidelity C`` is the same loop with a label-free value: the worst-sample cosine vs FP32 of every output on the
held-out samples (1.0 for FP32), budget a drop of 1 - C (edgeq/pipeline.py ``fidelity_floor``).

Plain post-training quantization runs first. If its metric drop (against the FP32 source model, on the eval set)
exceeds the budget, layers go back to float until the drop is within budget, with each backend's own tool:

- ``openvino-int8``: NNCF's ``quantize_with_accuracy_control`` (ranks quantizers by their effect on the metric and
  reverts the worst ones); the layers it returned to float are read by comparing the plain and the controlled IR.
- ``onnx-qdq`` and ``tflite-int8``: quantized activations are ranked by their local quantization error, measured
  in the quantized model itself on a few eval samples (ORT ``qdq_loss_debug`` pre/post-QDQ tensors; PT2E's
  converted reference graph for TFLite). The error is the median over channels of the per-channel SQNR, so a
  tensor whose few outlier channels stretch the per-tensor range (and crush every other channel) ranks first.
  Then the producer and consumers of the top-k tensors are excluded — ORT ``nodes_to_exclude``; PT2E modules left
  unannotated — for k = 1, 2, … until the budget is met.
- ``tflite-int8`` from an ONNX source built by the onnx2tf route: TFLite's QuantizationDebugger ranks the ops of the
  INT8 TFLite model itself (same SQNR), and the converter leaves the chosen ops and their consumers float
  (``denylisted_nodes``): the ranked layers are exactly what that route quantizes.

Fallback tiers (each controlled backend's ``fallback`` option, ``--fallback`` / ``-O BACKEND.fallback=``: ``fp32`` by
default = float only; ``tiered``): a sensitive
layer first goes to the cheapest tier its runtime computes that is finer than INT8, and only then to float
(``FALLBACK_TIERS``): ``onnx-qdq`` tries int16 activations on the top-k tensors (ORT ``TensorQuantOverrides``, weights
stay int8) before excluding their nodes; ``openvino-int8``'s float layers run at the CPU plugin's inference precision
(bf16 where the CPU computes it, f16 on ARM, else fp32); ``tflite-int8`` (litert-torch PT2E has no per-layer int16)
goes straight to fp32. The manifest lists each moved layer with its tier (``accuracy_control.layer_tiers``).

When the budget cannot be met, the artifact with the smallest drop is kept and marked ``met: false``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq.errors import failure_reason
from edgeq.manifest import AccuracyControl
from edgeq.types import ExportOptions, Feeds, MetricControl

if TYPE_CHECKING:
    from edgeq.pipeline import Candidate, EvalContext

RANKING_SAMPLES = 16
MAX_ATTEMPTS = 8
CONTROLLED = {"onnx-qdq", "openvino-int8", "tflite-int8"}
FALLBACK_TIERS = {"onnx-qdq": ("int16", "fp32"), "tflite-int8": ("fp32",), "openvino-int8": ("float",)}
"""Per backend, the tiers a sensitive layer moves through, finest-but-cheapest first (see the module doc)."""


def openvino_float_tier() -> str:
    """The precision the OpenVINO CPU plugin computes float layers in on this host (bf16 / f16 / f32)."""
    try:
        import openvino as ov

        return str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")
    except Exception:  # noqa: BLE001 - informative only
        return "float"


@dataclass
class LayerGroup:
    """A quantized activation tensor and the layers to return to float so that it stays float."""

    tensor: str
    sqnr_db: float
    layers: list[str]


def channel_sqnr(pre: np.ndarray, post: np.ndarray) -> float:
    """Median over channels (axis 1, or the last axis of a 2-D tensor) of the SQNR in dB of ``post`` vs ``pre``."""
    pre, post = np.asarray(pre, dtype=np.float64), np.asarray(post, dtype=np.float64)
    if pre.ndim < 2:
        pre, post = pre.reshape(1, -1), post.reshape(1, -1)
    moved_pre = np.moveaxis(pre, 1, 0).reshape(pre.shape[1], -1)
    moved_post = np.moveaxis(post, 1, 0).reshape(post.shape[1], -1)
    signal = (moved_pre ** 2).sum(axis=1)
    noise = ((moved_pre - moved_post) ** 2).sum(axis=1)
    live = signal > 0
    if not live.any():
        return float("inf")
    sqnr = 10 * np.log10(signal[live] / np.maximum(noise[live], 1e-30))
    return float(np.median(sqnr))


# ---------------------------------------------------------------------------------------------------------------
# ONNX Runtime QDQ
# ---------------------------------------------------------------------------------------------------------------
def rank_onnx_qdq(model: Path, feeds: list[Feeds]) -> list[LayerGroup]:
    """Quantized activations of a QDQ model, worst median per-channel SQNR first, with producer + consumer nodes."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching
    from onnxruntime.quantization.quant_utils import DEQUANT_OUTPUT_SUFFIX

    from edgeq.explain.onnx import intermediate_activations

    with tempfile.TemporaryDirectory() as tmp:
        matching = create_activation_matching(intermediate_activations(Path(model), feeds, Path(tmp)))
    graph = onnx.load(str(model), load_external_data=False).graph
    producers = {out: node for node in graph.node for out in node.output}
    qdq_ops = {"QuantizeLinear", "DequantizeLinear"}
    groups = []
    for tensor, pair in matching.items():
        if "pre_qdq" not in pair or "post_qdq" not in pair:
            continue
        sqnr = float(np.mean([channel_sqnr(a, b) for a, b in zip(pair["pre_qdq"], pair["post_qdq"])]))
        layers = []
        producer = producers.get(tensor)
        if producer is not None and producer.op_type not in qdq_ops and producer.name:
            layers.append(producer.name)
        dq_out = tensor + DEQUANT_OUTPUT_SUFFIX
        layers += [n.name for n in graph.node if n.op_type not in qdq_ops and n.name
                   and (dq_out in n.input or tensor in n.input) and n.name not in layers]
        if layers:
            groups.append(LayerGroup(tensor, round(sqnr, 2), layers))
    return sorted(groups, key=lambda g: g.sqnr_db)


# ---------------------------------------------------------------------------------------------------------------
# TFLite (litert-torch PT2E)
# ---------------------------------------------------------------------------------------------------------------
def _layer_id(node: Any) -> str:
    """The node's module path (``features.3``), or ``node:<name>`` for an op of the top-level module."""
    stack = node.meta.get("nn_module_stack") or {}
    path = str(list(stack.values())[-1][0]) if stack else ""
    return path or f"node:{node.name}"


def rank_pt2e(source: Any, calib: Any, feeds: list[Feeds], narrow_convs_float: bool = False) -> list[LayerGroup]:
    """The same ranking on PT2E's converted reference graph (quantize → dequantize pairs run in torch).

    Uses the graph preparation, quantizer and calibration of tflite-int8 (``convert_int8``); groups are module paths
    (or ``node:<name>`` for ops of the top-level module).
    """
    import torch

    from edgeq.backends._tflite import calibrated_graph, quiet

    with quiet(), torch.no_grad():  # the same graph (and node names) as convert_int8
        graph = calibrated_graph(source, calib, "tflite-int8", narrow_convs_float=narrow_convs_float, float_io=True)[0]
        pairs = []  # (quantize node input, dequantize node) per activation
        for node in graph.graph.nodes:
            if node.op == "call_function" and "quantize_per_tensor" in str(node.target) \
                    and "dequantize" not in str(node.target) and isinstance(node.args[0], torch.fx.Node) \
                    and node.args[0].op != "get_attr":
                for user in node.users:
                    if "dequantize" in str(user.target):
                        pairs.append((node.args[0], user))
        watched = {n for pair in pairs for n in pair}
        values: dict[Any, list[np.ndarray]] = {n: [] for n in watched}

        class Recorder(torch.fx.Interpreter):
            def run_node(self, n: Any) -> Any:
                result = super().run_node(n)
                if n in values:
                    values[n].append(result.detach().float().numpy())
                return result

        recorder = Recorder(graph)
        for sample in feeds:
            recorder.run(*source.example_inputs(sample))
    groups = []
    for pre, dq in pairs:
        if not values[pre]:
            continue
        sqnr = float(np.mean([channel_sqnr(a, b) for a, b in zip(values[pre], values[dq])]))
        layers = [_layer_id(n) for n in [pre, *dq.users] if n.op == "call_function"]
        layers = list(dict.fromkeys(layers))
        if layers:
            groups.append(LayerGroup(pre.name, round(sqnr, 2), layers))
    return sorted(groups, key=lambda g: g.sqnr_db)


def rank_onnx2tf(source: Any, calib: Any) -> list[LayerGroup]:
    """The ranking for tflite-int8 built by the onnx2tf route: TFLite's QuantizationDebugger compares every quantized
    op with its float version on the calibration samples (``edgeq/tools/onnx2tf_convert.py --rank``); each group
    is an op's output tensor and the outputs of its consumers (TFLite tensor names, what the converter's selective
    quantization takes)."""
    from edgeq.backends._tflite_onnx2tf import run_tool

    with tempfile.TemporaryDirectory() as tmp:
        report = run_tool(source, calib, Path(tmp) / "unused.tflite", "int8", "float", rank=True)
    return [LayerGroup(entry["tensor"], round(entry["sqnr_db"], 2),
                       list(dict.fromkeys([entry["tensor"], *entry.get("consumers", [])])))
            for entry in report["ranked"]]


# ---------------------------------------------------------------------------------------------------------------
# OpenVINO (NNCF)
# ---------------------------------------------------------------------------------------------------------------
def quantized_ov_layers(model_xml: Path) -> set[str]:
    """Names of the ops of an IR that read at least one FakeQuantize output (the layers running in INT8)."""
    import openvino as ov

    model = ov.Core().read_model(str(model_xml))
    found = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("FakeQuantize", "FakeConvert", "Convert", "Constant", "Parameter", "Result"):
            continue
        for value in op.inputs():
            producer = value.get_source_output().get_node()
            if producer.get_type_name() in ("FakeQuantize", "FakeConvert"):
                found.add(op.get_friendly_name())
                break
    return found


def nncf_control(options: ExportOptions, evaluation: EvalContext) -> ExportOptions:
    """Options that make openvino-int8 call ``nncf.quantize_with_accuracy_control`` with the eval set."""
    samples = evaluation.eval_set.samples
    sign = 1.0 if evaluation.metric.higher_is_better else -1.0  # NNCF maximizes

    def validate(compiled: Any, items: Any) -> tuple[float, None]:
        indices, outputs = [], []
        for index, feeds in items:
            indices.append(index)
            outputs.append([np.asarray(v) for v in compiled(feeds).to_tuple()])
        if evaluation.all_references is not None:  # --min-fidelity: worst-sample fidelity of every output
            from edgeq.metrics import worst_fidelity_per_output

            references = [evaluation.all_references[i] for i in indices]
            return min(worst_fidelity_per_output(references, outputs)), None
        truth = evaluation.truth
        from edgeq.evaluation import score

        subset = None if truth is None else np.asarray(truth)[indices]
        return sign * score(evaluation.metric, [o[0] for o in outputs], subset), None

    drop_type = "relative" if evaluation.drop_type == "relative" else "absolute"
    return replace(options, metric_control=MetricControl(
        items=list(enumerate(samples)), validate=validate, max_drop=float(evaluation.max_drop or 0.0),
        drop_type=drop_type))


# ---------------------------------------------------------------------------------------------------------------
# The control loop
# ---------------------------------------------------------------------------------------------------------------
def latency_ratio(first: Path, second: Path, feeds: Feeds, rounds: int = 10) -> float | None:
    """Median paired latency ratio second / first (``edgeq.measure.interleaved_latency``, 1 thread); None on failure."""
    from edgeq.measure import interleaved_latency

    try:
        timed = interleaved_latency({"ptq": first, "controlled": second}, threads=1, rounds=rounds, feeds=feeds)
        return round(timed["controlled"]["ratio_to_first"], 3)
    except Exception:  # noqa: BLE001 - timing is informative only
        return None


def control_accuracy(name: str, source: Any, calib: Any, options: ExportOptions, plain: Candidate,
                     rebuild: Callable[[ExportOptions], Candidate],
                     evaluation: EvalContext) -> tuple[Candidate, AccuracyControl]:
    """Return the candidate to keep (plain PTQ when within budget) and what was done, for the manifest."""
    budget = float(evaluation.max_drop or 0.0)
    assert plain.evaluation is not None
    before = plain.evaluation.drop
    record = AccuracyControl(budget=budget, drop_type=evaluation.drop_type, drop_before=before, drop_after=before,
                             met=before <= budget, method="plain PTQ within budget")
    if record.met:
        return plain, record
    if name not in CONTROLLED:
        record.method = "none: this backend has no quantized layers to return to float"
        return plain, record
    best, attempts = plain, []
    feeds = evaluation.eval_set.samples
    from edgeq.backends import get_backend

    config = get_backend(name).config_of(options)  # rebuilds get a validated copy of it with layers moved off INT8
    try:
        if name == "openvino-int8":
            record.method = "nncf.quantize_with_accuracy_control (ranks quantizers by metric, reverts the worst)"
            candidate = rebuild(nncf_control(options, evaluation))
            floated = sorted(quantized_ov_layers(plain.files.main) - quantized_ov_layers(candidate.files.main))
            assert candidate.evaluation is not None
            attempts.append({"layers_to_float": floated, "drop": candidate.evaluation.drop})
            if candidate.evaluation.drop < before:
                record.layers_to_float, best = floated, candidate
                tier = openvino_float_tier()
                record.layer_tiers = {layer: tier for layer in floated}
            else:
                candidate.discard()
        else:
            if name == "onnx-qdq":
                record.method = "median per-channel SQNR of each QDQ activation (ORT qdq_loss_debug); nodes_to_exclude"
                groups, key = rank_onnx_qdq(plain.files.main, feeds[:RANKING_SAMPLES]), "nodes_to_exclude"
            elif str(plain.files.recipe.get("route", "")).startswith("onnx2tf"):
                record.method = ("median per-channel SQNR of each TFLite op's output (TFLite QuantizationDebugger, "
                                 "onnx2tf route); those ops and their consumers left float by the converter")
                groups, key = rank_onnx2tf(source, calib), "float_nodes"
                config = config.updated(route="onnx2tf")
            else:
                record.method = "median per-channel SQNR of each PT2E activation; modules left unannotated (float)"
                groups, key = rank_pt2e(source, calib, feeds[:RANKING_SAMPLES],
                                       options.tflite_narrow_convs == "float"), "exclude_modules"
                if source.framework == "onnx":  # rebuild through the route that worked
                    config = config.updated(route="litert-torch")
            record.ranked_layers = [f"{g.tensor} ({g.sqnr_db:g} dB): {', '.join(g.layers)}" for g in groups]
            base = list(getattr(config, key))
            tiers = FALLBACK_TIERS[name] if config.fallback == "tiered" else ("fp32",)
            for k in range(1, min(len(groups), MAX_ATTEMPTS) + 1):
                layers = list(dict.fromkeys(layer for g in groups[:k] for layer in g.layers))
                for tier in tiers:  # the top-k groups try each tier, cheapest first
                    if tier == "int16":
                        tensors = [g.tensor for g in groups[:k]]
                        candidate = rebuild(options.with_config(name, config.updated(int16_tensors=tensors)))
                        assert candidate.evaluation is not None
                        moved = {t: "int16 activations" for t in tensors}
                        attempts.append({"int16_tensors": tensors, "drop": candidate.evaluation.drop})
                    else:
                        candidate = rebuild(options.with_config(name, config.updated(**{key: base + layers})))
                        assert candidate.evaluation is not None
                        moved = dict.fromkeys(layers, tier)
                        attempts.append({"layers_to_float": layers, "drop": candidate.evaluation.drop})
                    if best.evaluation is None or candidate.evaluation.drop < best.evaluation.drop:
                        if best is not plain:
                            best.discard()
                        best = candidate
                        record.layers_to_float = [] if tier == "int16" else layers
                        record.layer_tiers = moved
                    else:
                        candidate.discard()
                    if best.evaluation is not None and best.evaluation.drop <= budget:
                        break
                if best.evaluation is not None and best.evaluation.drop <= budget:
                    break
    except KeyboardInterrupt:
        if best is not plain:
            best.discard()
        raise
    except Exception as exc:  # noqa: BLE001 - a failed control step keeps the best artifact so far, with the reason
        attempts.append({"error": failure_reason(exc, 220)})
    record.attempts = attempts
    assert best.evaluation is not None
    record.drop_after = best.evaluation.drop
    record.met = record.drop_after <= budget
    if best is not plain:
        record.latency_ratio_vs_ptq = latency_ratio(plain.files.main, best.files.main, feeds[0])
        plain.discard()
    return best, record
