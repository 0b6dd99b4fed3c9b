"""Eval sets with ground truth, and scoring outputs with a task metric (shared by ``edgeq export`` and ``bench``).

An eval set is any calibration source (``edgeq.calibration.open_dataset``) read in full (or its first N samples),
with integer labels (image class sub-folders, ``.npz`` integer ``y``, ``sklearn-digits``) or float targets
(``.npz`` float ``y``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeq.errors import CalibrationError, EdgeqError
from edgeq.metrics import Metric, fidelity, resolve_metric
from edgeq.types import Feeds, TensorSpec


@dataclass
class EvalSet:
    """Batch-1 samples (validated against the model inputs) and their ground truth, if any."""

    spec: str
    description: str
    samples: list[Feeds]
    labels: np.ndarray | None = None
    """Integer class labels, shape (N,)."""
    targets: np.ndarray | None = None
    """Float targets, shape (N, ...)."""

    def __len__(self) -> int:
        return len(self.samples)


def load_eval_set(spec: str, inputs: list[TensorSpec], layout: str = "NCHW", limit: int | None = None) -> EvalSet:
    """Read an eval source (first ``limit`` samples) with its labels or targets; one-line errors."""
    from edgeq.calibration import open_dataset

    dataset = open_dataset(spec, inputs, layout)
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    if count <= 0:
        raise CalibrationError(f"eval set {spec!r} is empty")
    samples = [dataset[i] for i in range(count)]
    raw_labels = [dataset.label(i) for i in range(count)]
    labels = np.asarray(raw_labels, dtype=np.int64) if all(v is not None for v in raw_labels) else None
    raw_targets = [dataset.target(i) for i in range(count)]
    targets = np.stack(raw_targets).astype(np.float64) if all(t is not None for t in raw_targets) else None
    return EvalSet(str(spec), dataset.description, samples, labels, targets)


def stacked_inputs(eval_set: EvalSet) -> dict[str, np.ndarray]:
    """The samples stacked per input name: (N, *shape) with the batch-1 dim kept (what the runner's npz expects)."""
    names = list(eval_set.samples[0])
    return {name: np.stack([np.asarray(s[name]) for s in eval_set.samples]) for name in names}


def is_classifier(outputs: Sequence[np.ndarray]) -> bool:
    first = np.asarray(outputs[0]).squeeze()
    return first.ndim == 1 and first.size >= 2


def choose_metric(spec: str | None, eval_set: EvalSet, reference_outputs: Sequence[np.ndarray]) -> Metric:
    """The metric asked for, or a default: top1 for labelled classifiers, mse for float targets, else cosine vs FP32."""
    if spec:
        return resolve_metric(spec)
    if eval_set.labels is not None and is_classifier(reference_outputs):
        return resolve_metric("top1")
    if eval_set.targets is not None:
        return resolve_metric("mse")
    return resolve_metric("cosine")


def ground_truth(metric: Metric, eval_set: EvalSet, reference_outputs: Sequence[np.ndarray]) -> tuple[np.ndarray | None, str]:
    """What the metric compares outputs with, and a label for the manifest (labels, targets or fp32 outputs)."""
    if metric.needs == "labels":
        if eval_set.labels is None:
            raise CalibrationError(f"metric {metric.name} needs integer labels, but eval set {eval_set.spec} has none "
                                   "(use class sub-folders, an .npz with integer y, or sklearn-digits:eval)")
        return eval_set.labels, "labels"
    if metric.needs == "targets":
        if eval_set.targets is not None:
            return eval_set.targets, "targets"
        if metric.name in ("cosine", "fidelity"):
            return np.stack([np.asarray(r) for r in reference_outputs]), "fp32 outputs"
        raise CalibrationError(f"metric {metric.name} needs float targets (an .npz with a float y), but eval set "
                               f"{eval_set.spec} has none")
    if eval_set.labels is not None:
        return eval_set.labels, "labels"
    return eval_set.targets, "targets" if eval_set.targets is not None else "none"


def score(metric: Metric, outputs: Sequence[np.ndarray], truth: np.ndarray | None) -> float:
    """The metric on the stacked first outputs; a shape mismatch with the ground truth is one line."""
    stacked = np.stack([np.asarray(o) for o in outputs])
    if truth is not None and metric.needs == "labels" and len(truth) != len(stacked):
        raise EdgeqError(f"metric {metric.name}: {len(stacked)} outputs but {len(truth)} labels")
    if truth is not None and metric.needs == "targets" and \
            np.asarray(truth).reshape(len(truth), -1).shape != stacked.reshape(len(stacked), -1).shape:
        raise EdgeqError(f"metric {metric.name}: outputs {list(stacked.shape)} do not match targets "
                         f"{list(np.shape(truth))}")
    return metric.compute(stacked, truth)


def fidelity_summary(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> dict[str, float | None]:
    """Cosine mean/min and top-1 agreement against the FP32 outputs on the eval set."""
    stats = fidelity(reference, outputs)
    return {"cosine_mean": stats["cosine_mean"], "cosine_min": stats["cosine_min"],
            "top1_agreement": stats["top1_agreement"]}
