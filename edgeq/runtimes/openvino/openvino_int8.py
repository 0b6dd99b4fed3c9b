"""openvino-int8: OpenVINO IR quantized to INT8 by NNCF post-training quantization (``nncf.quantize``).

Recipe: the FP32 ``ov.Model`` (same conversion as openvino-fp32) is quantized with the calibration set
(``subset_size = len(calib)``) with ``QuantizationPreset.PERFORMANCE`` (symmetric INT8 weights and activations).
Transformer-like graphs (an attention op, or Softmax fed by activation×activation MatMuls) also get
``model_type=ModelType.TRANSFORMER`` — NNCF's transformer ignored patterns keep residual Adds and LayerNorm inputs
float — with the PERFORMANCE preset kept (NNCF would switch to MIXED, asymmetric activations) and SmoothQuant off.
Measured on the BERT-mini shape (bench/peers.py, docs/recipes.md): this is as fast as NNCF's default call and
closer to FP32; MIXED activations cost 6–10 % latency on x86 and SmoothQuant cost fidelity.
``-O openvino-int8.preset=mixed`` and ``-O openvino-int8.smooth_quant=true`` restore NNCF's
transformer defaults; ``model_type`` ("cnn" | "transformer") overrides the detection (``OpenvinoInt8Config``). The recipe
records which was chosen and why.

Picked per model by measurement (``edgeq/runtimes/openvino/_openvino_pick.py``): with the default minmax method and no
``preset`` option, three NNCF configurations — this recipe, histogram activation ranges, global min/max ranges with
full BiasCorrection — are each calibrated on the first calibration samples, saved, read back and scored by edgeq's
runner on the held-back last ones; an alternative replaces this recipe only when it cuts the worst and mean error by
25 %, and the winner is calibrated on every sample (``trial``, ``trial_scores``, ``picked_by`` in the manifest).
Recurrent ops (LSTM/GRU/RNN) stay float: the CPU plugin's INT8 RNN kernel computes them wrongly from a saved IR.

Calibration methods (activation range estimators; weights always use per-channel min/max):
- ``minmax``: NNCF's default — per-tensor activation ranges from the mean over samples of each sample's
  min/max (``RangeEstimatorParametersSet.MEAN_MINMAX``).
- ``percentile``: per-sample quantiles at ``100 - p`` / ``p`` percent (``-O openvino-int8.percentile=``,
  default 99.999), averaged over samples (``MEAN_QUANTILE``).
- ``mse``: the histogram range search that minimises the L2 quantization error (``HISTOGRAM``).
- ``entropy`` (KL divergence): NNCF has no such estimator; refused rather than replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edgeq.backend_config import FallbackConfig, OpenvinoRouteConfig
from edgeq.errors import BackendError, CalibrationError, failure_reason
from edgeq.runtimes._picking import Outputs, Score, closeness, floor_applies, trial_split
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.openvino._openvino import (
    convert_source,
    graph_kind,
    op_counts,
    quiet_nncf,
    save_ir,
    torch_route,
)
from edgeq.runtimes.openvino._openvino_pick import (
    Trial,
    pick_trial,
    picked_note,
    recipe_trials,
    recurrent_types,
    reference_outputs,
    saved_ir_outputs,
)
from edgeq.types import Feeds

SUPPORTED_METHODS = ("minmax", "percentile", "mse")
QUANTIZED_OP_TYPES = ("FakeQuantize", "FakeConvert")


def range_estimator(method: str, options: Any) -> tuple[Any, str]:
    """NNCF activation range-estimator parameters for a calibration method (None = NNCF default) + a label."""
    from nncf.quantization.range_estimator import (
        RangeEstimatorParameters,
        RangeEstimatorParametersSet,
        StatisticsCollectorParameters,
    )

    if method == "minmax":
        return None, "mean over samples of per-sample min/max (NNCF default)"
    if method == "percentile":
        percentile = OpenvinoInt8.config_of(options).percentile
        base = RangeEstimatorParametersSet.MEAN_QUANTILE
        prob = round(1.0 - percentile / 100.0, 12)
        params = RangeEstimatorParameters(
            min=StatisticsCollectorParameters(base.min.statistics_type, base.min.aggregator_type,
                                              quantile_outlier_prob=prob),
            max=StatisticsCollectorParameters(base.max.statistics_type, base.max.aggregator_type,
                                              quantile_outlier_prob=prob),
        )
        return params, f"mean over samples of per-sample {100 - percentile:g}%/{percentile:g}% quantiles"
    if method == "mse":
        return RangeEstimatorParametersSet.HISTOGRAM, "histogram search minimising L2 quantization error"
    raise BackendError(f"calibration method {method!r} is not supported by openvino-int8 "
                       f"(NNCF offers: {', '.join(SUPPORTED_METHODS)})")


class OpenvinoInt8Config(FallbackConfig, OpenvinoRouteConfig):
    """openvino-int8 options (nncf.quantize); accuracy control's NNCF search is ``ExportOptions.metric_control``."""

    preset: Literal["performance", "mixed"] = Field("performance", description="NNCF QuantizationPreset: symmetric "
                                                    "(performance) or asymmetric (mixed) activations")
    model_type: Literal["cnn", "transformer"] | None = Field(None, description="NNCF ModelType; default detected")
    smooth_quant: bool = Field(False, description="SmoothQuant on transformer graphs (NNCF's default: on)")
    percentile: float = Field(99.999, gt=50.0, le=100.0, description="Quantile of the percentile method")
    ignored_scope: list[str] = Field([], description="Layer names kept float (nncf.IgnoredScope)")
    fidelity_floor: float = Field(0.99, ge=0.0, le=1.0, description=(
        "Held-back worst-sample cosine below which the ops reading the costliest activation quantizers stay float; "
        "0 = off"))


class OpenvinoInt8(Backend):
    name = "openvino-int8"
    runtime = "openvino"
    precision = "int8"
    requires = ("openvino", "nncf")
    pip_extra = "openvino"
    needs_calibration = True
    Config = OpenvinoInt8Config

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        import nncf

        method = options.calib_method
        estimator, estimator_label = range_estimator(method, options)
        self.require_calibration(calib)
        if options.qat is not None:  # quantization-aware training: the QAT QDQ graph (edgeq/qat.py)
            from edgeq.runtimes.openvino.adapter import ADAPTER

            return ADAPTER.export_qat(self.name, source, calib, out_dir, options)
        config: OpenvinoInt8Config = self.config_of(options)
        notes: list[str] = []
        model, route = convert_source(source, torch_route(options, self), notes)
        kind, evidence = graph_kind(model)
        if config.model_type is not None:
            kind = config.model_type
        names = [spec.name for spec in source.inputs]

        def to_feeds(sample: dict[str, Any]) -> dict[str, Any]:
            return {name: sample[name] for name in names}

        preset = config.preset
        kwargs: dict[str, Any] = {"subset_size": len(calib), "preset": getattr(nncf.QuantizationPreset, preset.upper())}
        if kind == "transformer":
            kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        advanced: dict[str, Any] = {}
        if estimator is not None:
            advanced["activations_range_estimator_params"] = estimator
        smooth_quant = kind == "transformer" and config.smooth_quant
        if kind == "transformer" and not smooth_quant:  # measured: bench/peers.py, docs/recipes.md
            advanced["smooth_quant_alphas"] = nncf.AdvancedSmoothQuantParameters(matmul=-1)
        if advanced:
            kwargs["advanced_parameters"] = nncf.AdvancedQuantizationParameters(**advanced)
        ignored = list(config.ignored_scope)  # layer names kept in float
        recurrent = recurrent_types(model)  # INT8 LSTMs are wrong in a saved IR (edgeq/runtimes/openvino/_openvino_pick.py)
        control = options.metric_control  # set by edgeq.accuracy for --max-drop
        trials = recipe_trials(options)

        def settings(trial: Trial, subset: int) -> dict[str, Any]:
            """nncf.quantize keyword arguments for one trial (the recipe above, changed as the trial says)."""
            merged = {**kwargs, **trial.kwargs, "subset_size": subset}
            if advanced or trial.advanced:
                merged["advanced_parameters"] = nncf.AdvancedQuantizationParameters(**{**advanced, **trial.advanced})
            names = ignored + [name for name in trial.float_names if name not in ignored]
            if names or recurrent:
                merged["ignored_scope"] = nncf.IgnoredScope(names=names, types=recurrent, validate=False)
            return merged

        def save(quantized: Any, directory: Path) -> Path:
            return save_ir(quantized, directory, compress_to_fp16=False, precision="int8")

        warnings: list[str] = []
        try:
            with quiet_nncf(warnings):
                split = trial_split(calib) if len(trials) > 1 else None
                trial, scores, floor_note = trials[0], {}, ""
                if split is not None:  # trials fit on the first samples, scored on the held-back last ones
                    fit, held_back = split
                    samples = [to_feeds(sample) for sample in held_back]

                    def fit_quantize(t: Trial) -> Any:
                        return nncf.quantize(model, nncf.Dataset(fit, to_feeds), **settings(t, len(fit)))

                    reference = reference_outputs(model, samples)
                    trial, scores = pick_trial(trials, fit_quantize, reference, samples, out_dir.parent, save)
                    if config.fidelity_floor and floor_applies(samples) and not control and not ignored \
                            and scores[trial.label][0] < config.fidelity_floor:
                        trial, floor_note = self._floor(trial, scores[trial.label], fit_quantize, reference, samples,
                                                        out_dir.parent, save, config.fidelity_floor)
                chosen = settings(trial, len(calib))  # the winner, calibrated on every sample
                if not control:
                    quantized = nncf.quantize(model, nncf.Dataset(calib, to_feeds), **chosen)
                else:
                    if "advanced_parameters" in chosen:
                        chosen["advanced_quantization_parameters"] = chosen.pop("advanced_parameters")
                    quantized = nncf.quantize_with_accuracy_control(
                        model, nncf.Dataset(calib, to_feeds), nncf.Dataset(control.items), control.validate,
                        max_drop=control.max_drop, drop_type=getattr(nncf.DropType, control.drop_type.upper()),
                        **chosen)
        except KeyError as exc:
            raise CalibrationError(f"calibration samples lack input {exc.args[0]!r} needed by {source.name}") from None
        counts = op_counts(quantized)
        fake_quantize = sum(counts[t] for t in QUANTIZED_OP_TYPES)
        if fake_quantize == 0:
            raise BackendError(f"NNCF inserted no quantizers into {source.name} (nothing quantizable found)")
        main = save(quantized, out_dir)
        preset = "mixed" if trial.kwargs.get("preset") == nncf.QuantizationPreset.MIXED else preset
        recipe = {
            "route": route, "quantizer": f"nncf {nncf.__version__}", "graph": kind, "graph_evidence": evidence,
            "model_type": "transformer" if kind == "transformer" else None, "preset": preset,
            "calibration": method, "activation_range": estimator_label, "subset_size": len(calib),
            "weights": "int8 symmetric per-channel",
            "activations": "int8 symmetric per-tensor" if preset == "performance" else "int8 asymmetric per-tensor",
            "fake_quantize_ops": fake_quantize,
        }
        if kind == "transformer":
            recipe["smooth_quant"] = smooth_quant
        recipe.update(trial.recipe)
        if ignored or trial.float_names:
            recipe["ignored_scope"] = ignored + [name for name in trial.float_names if name not in ignored]
        if floor_note:
            recipe["fidelity_floor"] = floor_note
            notes.append(floor_note)
        if recurrent:
            recipe["recurrent_float"] = recurrent
            notes.append(f"{', '.join(recurrent)} kept float: the CPU plugin's INT8 RNN kernel computes them wrongly "
                         f"from a saved IR (edgeq/runtimes/openvino/_openvino_pick.py)")
        if scores:
            recipe["trial"], recipe["picked_by"] = trial.label, picked_note(trial, scores)
            recipe["trial_scores"] = {label: [round(worst, 6), round(mean, 6)] for label, (worst, mean) in scores.items()}
            notes.insert(0, recipe["picked_by"])
        if control:
            recipe["accuracy_control"] = f"nncf.quantize_with_accuracy_control (max_drop {control.max_drop}, " \
                                         f"{control.drop_type})"
        forced = config.model_type
        why = ("attention found (SDPA, or Softmax on activation×activation MatMuls)" if kind == "transformer" and not forced
               else f"forced by {self.name}.model_type={forced}" if forced else "no attention pattern")
        notes.insert(0, f"NNCF {preset} preset, {kind} graph: {why}; {fake_quantize} FakeQuantize ops; via {route} route")
        notes += [f"nncf: {w}" for w in warnings[:5]]
        return ExportedFiles(main=main, recipe=recipe, notes=notes)

    @staticmethod
    def _floor(trial: Trial, plain: Score, fit_quantize: Callable[[Trial], Any], reference: list[Outputs],
               samples: list[Feeds], work: Path, save: Callable[[Any, Path], Path],
               floor: float) -> tuple[Trial, str]:
        """Below ``floor`` on the held-back samples: the ops reading the activation quantizers that do the most damage
        alone (``_openvino_floor``) kept float, the top 1, 2, 4, 8 tried (each a real ``nncf.quantize``, scored as a
        saved IR), the first reaching ``floor`` (else the best gaining ``FLOOR_MIN_GAIN``) kept."""
        from edgeq.runtimes._picking import FLOOR_MIN_GAIN, RANK_SAMPLES, floor_candidates, ranked_note
        from edgeq.runtimes.openvino._openvino_floor import consumers, rank_by_damage

        try:
            quantized = fit_quantize(trial)
            ranking, total = rank_by_damage(quantized, reference[:RANK_SAMPLES], samples[:RANK_SAMPLES])
        except Exception as exc:  # noqa: BLE001 - the floor only improves; when it fails the plain model stays
            return trial, f"fidelity floor {floor}: ranking failed ({failure_reason(exc, 160)}); plain model kept"
        helpful = [name for name, damage in ranking if damage > 0]

        def build(count: int) -> tuple[Score, Trial]:
            names = list(dict.fromkeys(n for q in helpful[:count] for n in consumers(quantized, q)))
            candidate = replace(trial, float_names=tuple(dict.fromkeys(trial.float_names + tuple(names))))
            return closeness(reference, saved_ir_outputs(fit_quantize(candidate), samples, work, save)), candidate

        candidates, failed = floor_candidates(len(helpful), build, floor, "float")
        tried = {count: (candidate, score) for count, (score, candidate) in candidates.items()}
        reached = ranked_note(len(ranking), total, "activation quantizers")
        shown = ", ".join(f"{k} float {score[0]:.4f}/{score[1]:.4f}" for k, (_, score) in tried.items()) + failed
        best_count = max(tried, key=lambda k: tried[k][1], default=None)
        if best_count is None or tried[best_count][1][0] < plain[0] + FLOOR_MIN_GAIN:
            return trial, (f"fidelity floor {floor}: {plain[0]:.4f}/{plain[1]:.4f} held back, no candidate gained "
                           f"({shown or 'no quantizer did damage alone'}; {reached})")
        chosen, score = tried[best_count]
        added = [n for n in chosen.float_names if n not in trial.float_names]
        return chosen, (f"fidelity floor {floor}: worst/mean cosine {plain[0]:.4f}/{plain[1]:.4f} held back -> "
                        f"{score[0]:.4f}/{score[1]:.4f} with {', '.join(added)} float (reading the activation "
                        f"quantizers that alone cost the output most, {reached}; tried: {shown})")
