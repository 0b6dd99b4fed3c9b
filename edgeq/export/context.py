"""What an export run carries from stage to stage (the lowest layer of ``edgeq.export``; imports no other part of it).

- ``ExportRequest``: everything ``edgeq export`` was given, as given.
- ``EvalContext``: ``--eval`` / ``--min-fidelity``: samples, metric, FP32 references and score, budget.
- ``ExportContext``: what exporting any one backend needs — the loaded model, calibration and held-out samples,
  the FP32 references, the output folder, the options and the evaluation. Built once per run (and once per
  worker process by the parallel executor, from the request: loading and the seeded split are deterministic).
- ``INTERRUPTED`` / ``noting_interrupts``: the run-wide Ctrl-C flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeq.evaluation import EvalSet, fidelity_summary, score
from edgeq.manifest import Evaluation
from edgeq.metrics import Metric, metric_drop
from edgeq.types import ExportOptions, Feeds
from edgeq.verification import SampleFiles

if TYPE_CHECKING:
    from edgeq.calibration import CalibrationData
    from edgeq.models import ModelSource

INTERRUPTED = threading.Event()
"""Set by Ctrl-C during ``run_export``: some converters (dynamo, TF) turn KeyboardInterrupt into their own errors."""


@dataclass
class ExportRequest:
    """Everything ``edgeq export`` needs, as given on the command line."""

    model: str
    calib: str | Path
    backends: list[str]
    out: Path
    weights: str | Path | None = None
    input_shapes: list[str] | None = None
    calib_samples: int = 300
    seed: int = 0
    holdout: str | Path | None = None
    holdout_samples: int = 200
    options: ExportOptions | None = None
    eval_spec: str | None = None
    eval_samples: int | None = None
    metric: str | None = None
    max_drop: float | None = None
    drop_type: str = "absolute"
    min_fidelity: float | None = None
    """Label-free floor: worst-sample cosine vs FP32 of every output on the held-out samples (edgeq/accuracy.py)."""
    jobs: int | str = "auto"
    """Backends exported at once, each on its own cores ("auto": one per two cores; edgeq/export/executors.py)."""
    trust_model: bool = False
    """``--trust-model``: code inside the model file may run (edgeq/models/safety.py)."""


def load_source(request: ExportRequest) -> ModelSource:
    """The request's model, loaded (one-line errors on bad input)."""
    from edgeq.models import load_model

    return load_model(request.model, request.weights, request.input_shapes, request.trust_model)


def load_calibration(request: ExportRequest, source: ModelSource,
                     on_sample: Callable[[int], None] | None = None) -> CalibrationData:
    """The request's calibration and held-out samples for ``source`` (the seeded split: the same in every process)."""
    from edgeq.calibration import prepare_calibration

    return prepare_calibration(request.calib, source.inputs, source.layout, samples=request.calib_samples,
                               seed=request.seed, holdout=request.holdout, holdout_samples=request.holdout_samples,
                               on_sample=on_sample)


@dataclass
class EvalContext:
    """``--eval``: samples, metric, ground truth, the FP32 source model's outputs and score, and the budget."""

    eval_set: EvalSet
    metric: Metric
    truth: np.ndarray | None
    references: list[np.ndarray]
    reference_value: float
    drop_type: str = "absolute"
    max_drop: float | None = None
    all_references: list[list[np.ndarray]] | None = None
    """--min-fidelity: every FP32 output per sample; the value is then the worst-sample fidelity of every output."""

    def drop(self, value: float) -> float:
        return metric_drop(self.reference_value, value, self.metric.higher_is_better, self.drop_type)

    def evaluate(self, outputs: list[np.ndarray], all_outputs: list[list[np.ndarray]] | None = None) -> Evaluation:
        if self.all_references is not None and all_outputs is not None:
            from edgeq.metrics import worst_fidelity_per_output

            value = min(worst_fidelity_per_output(self.all_references, all_outputs))
        else:
            value = score(self.metric, outputs, self.truth)
        return Evaluation(metric=self.metric.name, value=value, drop=self.drop(value), drop_type=self.drop_type,
                          **fidelity_summary(self.references, outputs))


@dataclass
class ExportContext:
    """What exporting one backend needs (the same for every backend of a run)."""

    source: ModelSource
    calib: Any
    """The calibration samples (a ``SampleSet``)."""
    model_dir: Path
    """``OUT/<model>``: the artifacts, the manifest, ``logs/``."""
    options: ExportOptions
    holdout: list[Feeds]
    references: list[list[np.ndarray]]
    """Per held-out sample, every FP32 output (in the source's output order)."""
    evaluation: EvalContext | None = None
    samples: SampleFiles = field(init=False, repr=False)
    """The held-out then the eval samples in one npz for the verification child (written once, on first use)."""

    def __post_init__(self) -> None:
        eval_samples = self.evaluation.eval_set.samples if self.evaluation is not None else []
        self.samples = SampleFiles(self.holdout, eval_samples)

    @property
    def output_names(self) -> list[str]:
        return list(self.source.output_names)

    def with_options(self, options: ExportOptions) -> ExportContext:
        """The same context with other export options (accuracy control's rebuilds); the sample files are shared."""
        changed = dataclasses.replace(self, options=options)
        changed.samples = self.samples
        return changed


@contextlib.contextmanager
def noting_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual and also sets INTERRUPTED (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    INTERRUPTED.clear()

    def on_sigint(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
