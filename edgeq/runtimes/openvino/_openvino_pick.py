"""openvino-int8 recipe choices made by measurement, and the recurrent-op rule.

**Recurrent ops stay float.** NNCF puts FakeQuantize ops on an ``LSTMSequence``'s inputs (the sequence and the
initial hidden state). Read back from a saved IR, OpenVINO's CPU plugin (2026.4) compiles such an LSTM into its INT8
RNN kernel (``RNNSeq``, u8 X and H, primitive ``ref_any_I8``) and the result is wrong: on Silero VAD the next-state
output's worst-sample cosine vs FP32 falls to 0.092 (max |h| = 2.6136, the state FakeQuantize's bound, while an LSTM's
h is tanh-bounded), on a 16→32 tiny LSTM to 0.53. The same quantized ``ov.Model`` compiled in memory, before
``ov.save_model``, is unrolled into an f32 TensorIterator and gives 0.934 / 0.995 — which is why the bug hid: only
the saved IR, the artifact users deploy, is wrong (NNCF's own default call too). With the recurrent ops in NNCF's
ignored scope (no FakeQuantize on their inputs) the saved IR gives what the in-memory model gave.

**Trials picked by calibration fidelity.** No NNCF setting wins on every real model (bench/zoo.py, docs/zoo.md), so
a few candidates are quantized, each *saved and read back* and run by edgeq's runner exactly as the artifact will be
(``edgeq.targets.runner.open_session``, precision pinned), and the one closest to FP32 on the user's calibration
samples is kept (``edgeq.runtimes._picking``). Held-out samples are never looked at.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.runtimes._picking import Outputs, Score, best, closeness, describe, run_all
from edgeq.types import Feeds

RECURRENT_TYPES = ("LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell")
"""Op types NNCF may quantize whose INT8 form the CPU plugin computes wrongly from a saved IR (see above)."""


def recurrent_types(model: Any) -> list[str]:
    """The recurrent op types present in ``model`` (to put in NNCF's ignored scope)."""
    present = {op.get_type_name() for op in model.get_ops()}
    return [kind for kind in RECURRENT_TYPES if kind in present]


@dataclass(frozen=True)
class Trial:
    """One NNCF configuration to try: ``quantize`` keyword overrides and ``AdvancedQuantizationParameters`` fields."""

    label: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    advanced: dict[str, Any] = field(default_factory=dict)
    float_names: tuple[str, ...] = ()
    """Op names added to NNCF's ignored scope (kept float)."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """What the trial changes, for the manifest's recipe."""


def reference_outputs(model: Any, samples: Sequence[Feeds]) -> list[Outputs]:
    """The FP32 ``ov.Model``'s outputs on ``samples``, compiled like edgeq's runner runs an FP32 IR (f32, 1 thread)."""
    import openvino as ov

    from edgeq.targets.runner import openvino_config

    compiled = ov.Core().compile_model(model, "CPU", openvino_config(1, "f32"))
    return run_all(lambda feeds: compiled(feeds).to_tuple(), samples)


def saved_ir_outputs(quantized: Any, samples: Sequence[Feeds], work: Path,
                     save: Callable[[Any, Path], Path]) -> list[Outputs]:
    """``quantized`` saved as the artifact will be (``save(model, dir)``), read back and run by edgeq's runner."""
    from edgeq.targets.runner import open_session

    directory = Path(tempfile.mkdtemp(dir=work, prefix="trial-"))
    try:
        session = open_session(str(save(quantized, directory)), threads=1)
        outputs = run_all(session.run, samples)
        del session
        return outputs
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def pick_trial(trials: Sequence[Trial], quantize: Callable[[Trial], Any], reference: list[Outputs],
               samples: Sequence[Feeds], work: Path, save: Callable[[Any, Path], Path],
               ) -> tuple[Trial, dict[str, Score]]:
    """Quantize each trial, score its saved IR on ``samples`` against ``reference``: (the best trial, scores by
    label); the first trial is kept unless another is clearly better (``edgeq.runtimes._picking.best``)."""
    scores = {trial.label: closeness(reference, saved_ir_outputs(quantize(trial), samples, work, save))
              for trial in trials}
    return next(trial for trial in trials if trial.label == best(scores)), scores


def picked_note(trial: Trial, scores: dict[str, Score]) -> str:
    """What was picked and the numbers that picked it (worst/mean floored cosine on calibration samples)."""
    return (f"{trial.label}: picked on held-back calibration samples (trials calibrated on the others; default kept "
            f"unless another cuts its error by 25 %; saved IR, worst/mean worst-output cosine: {describe(scores)})")


def recipe_trials(options: Any) -> list[Trial]:
    """The NNCF configurations to try, the current recipe first (kept unless clearly beaten). One trial when the user
    fixed the recipe (``-O openvino-int8.preset``, a calibration method other than the default minmax).

    Each alternative won on zoo models, held-out worst-sample cosine with 16 calibration samples (bench/zoo.py,
    docs/zoo.md); the ones that never won there (MIXED preset, 99.99 % quantile ranges, the overflow fix off, output
    heads float, full BiasCorrection alone) are not tried:
    - histogram (L2-optimal) activation ranges: Silero VAD's state 0.935 → 0.989 (its LSTM float), YOLOX 0.9946 →
      0.9965 (not picked there in the zoo run: it missed the 25 % margin on the held-back samples);
    - global min/max activation ranges (the min and max over all samples, what ORT and TFLite use, instead of NNCF's
      mean of per-sample extremes, which clips every sample's outliers) with full BiasCorrection: MTCNN ONet's box
      head 0.816 → 0.928, RNet's 0.965 → 0.973 (the PP-OCR orientation classifier loses, 0.994 → 0.979: picked per
      model, never by default).
    """
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    trials = [Trial("default")]
    given = options.configs.get("openvino-int8") or {}  # a preset set by the user (-O openvino-int8.preset=) is kept
    if "preset" in getattr(given, "model_fields_set", given) or options.calib_method != "minmax":
        return trials
    trials.append(Trial("histogram ranges", advanced={
        "activations_range_estimator_params": RangeEstimatorParametersSet.HISTOGRAM},
        recipe={"calibration": "mse", "activation_range": "histogram search minimising L2 quantization error"}))
    trials.append(Trial("global min/max ranges, full bias correction", kwargs={"fast_bias_correction": False},
                        advanced={"activations_range_estimator_params": RangeEstimatorParametersSet.MINMAX},
                        recipe={"activation_range": "min and max over all samples (global)",
                                "bias_correction": "full (nncf BiasCorrection)"}))
    return trials
