"""The accuracy budget of an export: ``--eval`` / ``--metric`` / ``--max-drop`` or the label-free ``--min-fidelity``.

Checks the request, builds the ``EvalContext`` (the metric on the eval set, or the worst-sample fidelity on the
held-out samples) and runs ``edgeq.accuracy``'s control loop on a built candidate, giving it the builder it
rebuilds with (``edgeq.accuracy`` never imports the export package's upper layers).
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import EdgeqError
from edgeq.evaluation import EvalSet, choose_metric, ground_truth, score
from edgeq.export.candidate import Candidate, build_candidate
from edgeq.export.context import EvalContext, ExportContext, ExportRequest
from edgeq.manifest import AccuracyControl, EvalInfo
from edgeq.metrics import resolve_metric
from edgeq.types import ExportOptions, Feeds


def check_eval_request(request: ExportRequest) -> None:
    """Inconsistent --eval/--metric/--max-drop/--min-fidelity options fail in one line before any work."""
    if request.min_fidelity is not None:
        if not 0.0 < request.min_fidelity <= 1.0:
            raise EdgeqError(f"--min-fidelity must be in (0, 1] (got {request.min_fidelity})")
        if request.max_drop is not None or request.eval_spec:
            raise EdgeqError("give one budget: --max-drop (a metric on --eval) or --min-fidelity (label-free, on the "
                             "held-out samples, without --eval)")
    if request.max_drop is not None and not request.eval_spec:
        raise EdgeqError("--max-drop needs --eval EVALSET (the budget is measured on the eval set)")
    if request.metric and not request.eval_spec:
        raise EdgeqError("--metric needs --eval EVALSET")
    if request.drop_type not in ("absolute", "relative"):
        raise EdgeqError(f"--drop-type must be absolute or relative (got {request.drop_type!r})")
    if request.max_drop is not None and request.max_drop < 0:
        raise EdgeqError(f"--max-drop must be >= 0 (got {request.max_drop})")
    if request.metric:
        resolve_metric(request.metric)


def prepare_evaluation(request: ExportRequest, eval_set: EvalSet,
                       references: list[np.ndarray]) -> tuple[EvalContext, EvalInfo]:
    """Given the eval set and the FP32 source model's first output on it: choose the metric, score the reference."""
    metric = choose_metric(request.metric, eval_set, references)
    truth, kind = ground_truth(metric, eval_set, references)
    reference_value = score(metric, references, truth)
    context = EvalContext(eval_set, metric, truth, references, reference_value, request.drop_type, request.max_drop)
    info = EvalInfo(source=eval_set.description, samples=len(eval_set), metric=metric.name,
                    higher_is_better=metric.higher_is_better, ground_truth=kind, reference=reference_value)
    return context, info


def fidelity_floor(request: ExportRequest, holdout: list[Feeds], references: list[list[np.ndarray]],
                   source: str) -> tuple[EvalContext, EvalInfo]:
    """``--min-fidelity C`` without ``--eval``: the held-out samples become the eval set, the value is the worst-sample
    cosine of every output vs FP32 (1.0 for FP32 itself), and the budget is a drop of 1 - C."""
    if not holdout:
        raise EdgeqError("--min-fidelity needs held-out samples (--holdout-samples > 0)")
    floor = float(request.min_fidelity or 0.0)
    eval_set = EvalSet(spec="held-out", description=source, samples=holdout)
    first = [np.asarray(r[0]) for r in references]
    context = EvalContext(eval_set, resolve_metric("fidelity"), np.stack(first), first, 1.0, "absolute",
                          round(1.0 - floor, 10), all_references=references)
    info = EvalInfo(source=source, samples=len(holdout), metric="fidelity", higher_is_better=True,
                    ground_truth="fp32 outputs", reference=1.0,
                    note=f"--min-fidelity {floor:g}: worst-sample cosine of every output on held-out inputs")
    return context, info


def has_budget(context: ExportContext) -> bool:
    """Whether this run controls accuracy (``--max-drop`` or ``--min-fidelity``)."""
    return context.evaluation is not None and context.evaluation.max_drop is not None


def control(name: str, context: ExportContext, plain: Candidate) -> tuple[Candidate, AccuracyControl]:
    """The candidate to keep (``plain`` when within budget) and what was done, for the manifest; rebuilds go
    through ``build_candidate`` with the options the control loop chose."""
    from edgeq.accuracy import control_accuracy

    assert context.evaluation is not None

    def rebuild(changed: ExportOptions) -> Candidate:
        return build_candidate(name, context.with_options(changed))

    return control_accuracy(name, context.source, context.calib, context.options, plain, rebuild,
                            context.evaluation)


def budget_note(record: AccuracyControl | None) -> list[str]:
    """The manifest note of a budget the control loop could not meet (nothing otherwise)."""
    if record is None or record.met:
        return []
    return [f"accuracy budget NOT met: best drop {record.drop_after:.4g} > {record.budget:g} "
            "(kept the best artifact found)"]
