"""Accuracy-aware quantization (``edgeq export --eval EVALSET --max-drop X``, or label-free ``--min-fidelity C``).

``--min-fidelity C`` is the same loop with a label-free value: the worst-sample cosine vs FP32 of every output on the
held-out samples (1.0 for FP32), budget a drop of 1 - C (edgeq/export/control.py ``fidelity_floor``).

Plain post-training quantization runs first. If its metric drop (against the FP32 source model, on the eval set)
exceeds the budget, layers go back to float until the drop is within budget, with each backend's own tool. This
module is the one loop, for every runtime; each runtime's adapter (``RuntimeAdapter.control_plan`` in
``edgeq/runtimes/<runtime>/adapter.py``) says which of its backends it controls, ranks, and what each rebuild moves:

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

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edgeq.errors import failure_reason
from edgeq.manifest import AccuracyControl
from edgeq.runtimes.adapter import RANKING_SAMPLES, ControlRequest, ranked_layers
from edgeq.types import ExportOptions, Feeds

__all__ = ["RANKING_SAMPLES", "control_accuracy", "control_request", "latency_ratio"]


class Candidate(Protocol):
    """What the control loop needs of a built candidate (``edgeq.export.candidate.Candidate``)."""

    files: Any
    evaluation: Any

    def discard(self) -> None: ...


class Evaluation(Protocol):
    """What the control loop needs of the accuracy budget (``edgeq.export.context.EvalContext``)."""

    eval_set: Any
    metric: Any
    truth: np.ndarray | None
    drop_type: str
    max_drop: float | None
    all_references: list[list[np.ndarray]] | None


def control_request(evaluation: Evaluation) -> ControlRequest:
    """The budget and a runtime-independent score of outputs, higher better (the metric, sign-flipped when lower is
    better; with ``--min-fidelity`` the worst-sample fidelity of every output)."""
    sign = 1.0 if evaluation.metric.higher_is_better else -1.0

    def score(indices: list[int], outputs: list[list[np.ndarray]]) -> float:
        if evaluation.all_references is not None:  # --min-fidelity: worst-sample fidelity of every output
            from edgeq.metrics import worst_fidelity_per_output

            references = [evaluation.all_references[i] for i in indices]
            return min(worst_fidelity_per_output(references, outputs))
        from edgeq.evaluation import score as metric_score

        subset = None if evaluation.truth is None else np.asarray(evaluation.truth)[indices]
        return sign * metric_score(evaluation.metric, [o[0] for o in outputs], subset)

    return ControlRequest(list(evaluation.eval_set.samples), float(evaluation.max_drop or 0.0),
                          evaluation.drop_type, score)


def latency_ratio(first: Any, second: Any, feeds: Feeds, rounds: int = 10) -> float | None:
    """Median paired latency ratio second / first (``edgeq.measure.interleaved_latency``, 1 thread); None on failure."""
    from edgeq.measure import interleaved_latency

    try:
        timed = interleaved_latency({"ptq": first, "controlled": second}, threads=1, rounds=rounds, feeds=feeds)
        return round(timed["controlled"]["ratio_to_first"], 3)
    except Exception:  # noqa: BLE001 - timing is informative only
        return None


def control_accuracy(name: str, source: Any, calib: Any, options: ExportOptions, plain: Candidate,
                     rebuild: Callable[[ExportOptions], Candidate],
                     evaluation: Evaluation) -> tuple[Candidate, AccuracyControl]:
    """Return the candidate to keep (plain PTQ when within budget) and what was done, for the manifest."""
    from edgeq.backends import adapter_for

    budget = float(evaluation.max_drop or 0.0)
    assert plain.evaluation is not None
    before = plain.evaluation.drop
    record = AccuracyControl(budget=budget, drop_type=evaluation.drop_type, drop_before=before, drop_after=before,
                             met=before <= budget, method="plain PTQ within budget")
    if record.met:
        return plain, record
    adapter = adapter_for(name)
    if not adapter.supports_accuracy_control(name):
        record.method = "none: this backend has no quantized layers to return to float"
        return plain, record
    best, attempts = plain, []
    feeds = evaluation.eval_set.samples
    from edgeq.backends import get_backend

    config = get_backend(name).config_of(options)  # rebuilds get a validated copy of it with layers moved off INT8
    try:
        tiered = config.fallback == "tiered"
        plan = adapter.control_plan(name, source, calib, plain.files, options, control_request(evaluation), tiered)
        record.method = plan.method
        groups = plan.rank()
        if groups:
            record.ranked_layers = ranked_layers(groups)
        for attempt in plan.attempts(groups):
            candidate = rebuild(attempt.options)
            assert candidate.evaluation is not None
            if attempt.settle is not None:
                attempt.settle(plain.files, candidate.files)
            attempts.append({**attempt.record, "drop": candidate.evaluation.drop})
            if best.evaluation is None or candidate.evaluation.drop < best.evaluation.drop:
                if best is not plain:
                    best.discard()
                best = candidate
                record.layers_to_float, record.layer_tiers = attempt.layers_to_float, attempt.layer_tiers
            else:
                candidate.discard()
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
