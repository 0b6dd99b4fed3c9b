"""onnx-qdq: static INT8 in QDQ format through ONNX Runtime's quantization tools.

Recipe: ``quant_pre_process`` (symbolic shape inference + ORT graph optimization, e.g. Conv+BN folding) first,
then ``quantize_static`` in QDQ format, per-channel symmetric INT8 weights, calibrated activations.

Activation/weight types follow ORT's guidance for the *target* CPU (docs: "Quantize ONNX models → Data type
selection" and "When and why do I need to try U8U8"):
- x86-64 with VNNI (AVX512-VNNI / AVX-VNNI): U8 activations, S8 weights. MLAS's fast int8 GEMM/conv kernels are
  u8×s8 (VPDPBUSD) and VNNI has no intermediate saturation, so U8S8 is both fastest and exact here.
- x86-64 without VNNI (AVX2 / AVX512-BW only): U8S8 with ``reduce_range`` (7-bit weights), because VPMADDUBSW
  saturates 16-bit intermediates with full-range weights — the accuracy problem ORT documents.
- ARM64 and others: S8S8, ORT's default recommendation for QDQ, served by the ARM (S)DOT kernels.
The target is this machine unless ``-O onnx-qdq.target=`` says "x86-vnni", "x86-avx2" or "arm64" (``OnnxQdqConfig``).

Attention graphs (a fused attention op, or Softmax beside activation×activation MatMuls) get the transformer recipe,
each part measured on BERT-mini (bench/peers.py) and the real MiniLM-L6 sentence encoder (docs/recipes.md):
- each LayerNormalization and the residual Add feeding it stay float (NNCF's transformer recipe does the same): ORT
  has no integer LayerNorm and fuses the float pair into ``SkipLayerNormalization``; the residual stream carries the
  outlier channels per-tensor activations handle worst;
- the additive attention mask's path (from a ``finfo.min`` / -10000 filler constant to Softmax) stays float: one
  int8 scale cannot hold -3.4e38 beside the scores;
- MatMul / Gemm outputs are not re-quantized (ORT runs them as MatMulIntegerToFloat): a projection's output range is
  set by a few outlier channels, and a u8 grid over it erases the rest.
``-O onnx-qdq.attention_recipe=true|false`` overrides the detection.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field

from edgeq.backend_config import FallbackConfig
from edgeq.errors import BackendError, failure_reason
from edgeq.runtimes._picking import SCORE_SAMPLES, floor_applies, trial_split
from edgeq.runtimes.adapter import with_option
from edgeq.runtimes.base import Backend, ExportedFiles
from edgeq.runtimes.onnx._onnx import (
    detect_target,
    has_attention,
    load_full,
    mask_nodes,
    residual_norm_nodes,
    save_onnx,
)

CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy", "mse": None}


def quant_types(target: str) -> dict[str, object]:
    """Activation type, weight type and reduce_range for a target, with the reason recorded in the manifest."""
    if target == "x86-vnni":
        return {"activation": "QUInt8", "weight": "QInt8", "reduce_range": False,
                "reason": "x86 VNNI: u8×s8 VPDPBUSD kernels, no saturation"}
    if target == "x86-avx2":
        return {"activation": "QUInt8", "weight": "QInt8", "reduce_range": True,
                "reason": "x86 without VNNI: 7-bit weights avoid VPMADDUBSW saturation"}
    return {"activation": "QInt8", "weight": "QInt8", "reduce_range": False,
            "reason": "ARM/other: S8S8 is ORT's recommended QDQ default"}


class OutputScorer:
    """Cosine of a model's outputs vs the FP32 model's (both run by ONNX Runtime) on fixed samples; the FP32
    outputs are computed once."""

    def __init__(self, fp32: Path, samples, input_names: list[str]):
        self.samples = [{name: sample[name] for name in input_names} for sample in samples]
        self.references = self._run(str(fp32))

    def _run(self, model: str | bytes) -> list[list[np.ndarray]]:
        import onnxruntime as ort

        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return [session.run(None, feeds) for feeds in self.samples]

    def __call__(self, model: Path | bytes) -> tuple[float, float, float]:
        """(worst, mean, pooled) cosine, ``_qdq_floor.cosine_scores``; ``model`` a path or a serialized model."""
        from edgeq.runtimes.onnx._qdq_floor import cosine_scores

        outputs = self._run(model if isinstance(model, bytes) else str(model))
        return cosine_scores(self.references, outputs, SIGNAL_FLOOR)


def calibration_cosine(fp32: Path, quantized: Path, calib, input_names: list[str],
                       count: int = 16) -> tuple[float, float, float]:
    """(worst, mean, pooled) cosine similarity of ``quantized`` vs ``fp32`` (both run by ONNX Runtime) over the first
    ``count`` calibration samples. Worst: of every output (a box head counts as much as a score head), over the
    samples whose reference carries signal for that output (norm >= ``SIGNAL_FLOOR`` x the output's median norm);
    mean: of each sample's worst output; pooled: the worst output's cosine over all samples concatenated."""
    return OutputScorer(fp32, itertools.islice(iter(calib), count), input_names)(quantized)


SIGNAL_FLOOR = 0.1
"""Samples whose reference output norm is below this fraction of the output's median norm do not set its worst cosine
(a text detector's probability map of a photo without text is ~1e-4 noise: its cosine means nothing)."""

POOLED_GUARD = 0.05
"""A trial picked by worst-sample cosine gives way to the best pooled one if its pooled cosine is lower by more."""


def best_trial(scores: dict) -> object:
    """The trial key with the best (worst, mean) calibration cosine, unless its pooled cosine is more than
    ``POOLED_GUARD`` below the best pooled one; then that one. PP-OCRv5 det: every trial's worst sample is 0.00-0.04
    (an all-zero quantized map), and the 0.04 trial had pooled cosine ~0.3 on held-out maps vs 0.87 for the pooled best.
    Ties go to the first listed trial."""
    by_worst = max(scores, key=lambda key: scores[key][:2])
    by_pooled = max(scores, key=lambda key: scores[key][2])
    return by_pooled if scores[by_worst][2] < scores[by_pooled][2] - POOLED_GUARD else by_worst


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    """Run with ``directory`` as the working directory (ORT's pre-processing writes temporary files there)."""
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


MAX_REPAIRS = 3
"""Re-quantizations with the nodes an invalid QDQ graph names kept float, before refusing."""


def invalid_graph(model) -> tuple[str | None, list[str]]:  # model: onnx.ModelProto
    """(first line of why ONNX Runtime refuses a quantized graph, the node names it points at) or (None, []).

    E.g. "Node (x) Op (Concat) [ShapeInferenceError] All inputs to Concat must have same rank": found here, before
    the artifact is written, instead of at load time on the device. Huge models (external data) are not checked.
    """
    import re

    import onnxruntime as ort

    if model.ByteSize() > 1_500_000_000:
        return None, []
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises several types (Fail, InvalidGraph, InvalidArgument)
        text = " ".join(str(exc).split())
        return text[:300], list(dict.fromkeys(re.findall(r"Node \(([^)]+)\)", text)))
    return None, []


def mixed_output_nodes(source, calib, prepped: Path, notes: list[str]) -> list[str]:
    """The nodes writing the graph outputs ``source.mixed_range_outputs`` names: they stay float, so each slice keeps
    the scale of the op that made it. YOLOv8's ``[1, 4 + C, anchors]`` Concat of box pixels (0–1024) and sigmoid
    scores: quantized, every class score read 0.000 (max 0.906 in FP32) while the whole-output cosine said 0.999;
    kept float, the scores keep the Sigmoid's own 1/255 scale."""
    import onnx

    from edgeq.metrics import mixed_range_note

    mixed = source.mixed_range_outputs(calib)
    if not mixed:
        return []
    graph = onnx.load(str(prepped), load_external_data=False).graph
    nodes = [node.name for node in graph.node if set(node.output) & set(mixed)]
    notes.append("float output op(s) " + ", ".join(nodes) + ": " + mixed_range_note(mixed))
    return nodes


EIGHT_BIT = ("QUInt8", "QInt8")
"""Activation types the fidelity floor raises to int16 (onnx-w8a16's activations are int16 already)."""

MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
"""The ops a "MAC ops only" trial quantizes: those ORT runs with integer kernels (QLinearConv, MatMulInteger...)."""


class Trial(NamedTuple):
    """One onnx-qdq recipe trial: weight granularity, ORT calibration method, which ops are quantized."""

    per_channel: bool
    method: str
    mac_only: bool

    @property
    def label(self) -> str:
        granularity = "per-channel" if self.per_channel else "per-tensor"
        return f"{granularity} {self.method.lower()}{' MAC ops only' if self.mac_only else ''}"

    def file_name(self, reduce_range: bool) -> str:
        return (f"trial-{'pc' if self.per_channel else 'pt'}-{self.method}{'-mac' if self.mac_only else ''}"
                f"{'-w7' if reduce_range else ''}.onnx")

    def types(self, types: dict[str, object], reduce_range: bool) -> dict[str, object]:
        return {**types, "per_channel": self.per_channel, "mac_only": self.mac_only, "reduce_range": reduce_range}


def recipe_trials(config, method: str, calib_method: str) -> list[Trial]:
    """The trials onnx-qdq measures, the default first (it wins ties): per-channel and per-tensor weights × the
    user's range method (+ percentile when that is minmax) × all ops, then per-channel MAC ops only. What the config
    pins (``per_channel``, ``calibration``, ``quantized_ops``; accuracy control pins all three) is not tried."""
    channels = [config.per_channel] if config.per_channel is not None else [True, False]
    if config.calibration:
        methods = [str(CALIBRATION_METHODS[config.calibration])]
    else:
        methods = [method, "Percentile"] if calib_method == "minmax" else [method]
    placements = [config.quantized_ops == "mac"] if config.quantized_ops else [False, True]
    return [Trial(per_channel, m, mac) for mac in placements for m in methods for per_channel in channels
            if not (mac and not per_channel and config.per_channel is None)]


class _Reader:
    """ORT CalibrationDataReader over a streaming sample set, read in ORT's strided passes.

    ORT's histogram calibrators (percentile, entropy) keep every intermediate tensor of every sample they are fed in
    one ``collect_data`` call: 24 samples of a 1024x1024 YOLOv8 took 10 GB and were OOM-killed. With
    ``CalibStridedMinMax`` ORT feeds the samples ``stride`` at a time (``set_range``) and merges the ranges or
    histograms after each pass, so memory is bounded by the stride, not by the calibration set.
    """

    def __init__(self, calib, input_names: list[str]):
        self._calib = calib
        self._names = input_names
        self._running: Iterator = iter(calib)
        self._iter: Iterator = self._running

    def __len__(self) -> int:
        return len(self._calib)

    def set_range(self, start_index: int, end_index: int) -> None:
        if start_index == 0:
            self._running = iter(self._calib)
        self._iter = itertools.islice(self._running, end_index - start_index)

    def get_next(self):
        sample = next(self._iter, None)
        return None if sample is None else {n: sample[n] for n in self._names}

    def rewind(self) -> None:
        self._running = iter(self._calib)
        self._iter = self._running


CALIBRATION_MEMORY_BYTES = 1 << 30
"""Intermediate tensors held at once while calibrating (ORT strided passes; see ``_Reader``)."""
UNKNOWN_SAMPLE_BYTES = 256 << 20
"""Intermediate tensors per sample assumed when the graph has no static shapes (4 samples per pass)."""


def calibration_stride(model_path: Path, samples: int) -> int:
    """Samples per ORT calibration pass: as many as fit ``CALIBRATION_MEMORY_BYTES`` of intermediate tensors, and a
    divisor of ``samples`` (ORT requires it). The size per sample comes from the pre-processed graph's shapes."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    per_sample = 0
    for info in list(model.graph.value_info) + list(model.graph.output):
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            per_sample += 4 * int(np.prod([d.dim_value for d in dims], dtype=np.int64))
    per_sample = per_sample or UNKNOWN_SAMPLE_BYTES  # no static shapes: assume a large model rather than one pass
    budget = max(1, CALIBRATION_MEMORY_BYTES // per_sample)
    return max(d for d in range(1, min(budget, samples) + 1) if samples % d == 0)


class OnnxQdqConfig(FallbackConfig):
    """onnx-qdq (and onnx-w8a16) options; unset (null) = chosen by detection or by measurement."""

    target: Literal["x86-vnni", "x86-avx2", "arm64", "other"] | None = Field(
        None, description="CPU the activation/weight types are chosen for; default this machine")
    attention_recipe: bool | None = Field(None, description="Force the transformer recipe on/off; default detected")
    reduce_range: bool | None = Field(None, description="7-bit weights; default by target (x86-avx2: measured)")
    per_channel: bool | None = Field(None, description="Per-channel weights; default measured vs per-tensor")
    calibration: Literal["minmax", "percentile", "entropy"] | None = Field(
        None, description="Activation range method; default measured (minmax, percentile) or --calib-method's")
    quantized_ops: Literal["all", "mac"] | None = Field(
        None, description="Quantize all ops ORT can, or Conv/MatMul/Gemm only; default measured")
    percentile: float = Field(99.999, gt=50.0, le=100.0, description="CalibPercentile of the percentile method")
    nodes_to_exclude: list[str] = Field([], description="Nodes kept float (accuracy control adds to them)")
    int16_tensors: list[str] = Field([], description="Activations quantized to int16 (accuracy control's tier)")
    fidelity_floor: float = Field(0.99, ge=0.0, le=1.0, description=(
        "Held-back worst-sample cosine below which the activations costing the output most get int16; 0 = off"))


class OnnxQdq(Backend):
    name = "onnx-qdq"
    runtime = "onnxruntime"
    precision = "int8"
    requires = ("onnx", "onnxruntime")
    pip_extra = "onnx"
    needs_calibration = True
    Config = OnnxQdqConfig

    @staticmethod
    def quant_types(target: str) -> dict[str, object]:
        """Activation/weight types for ``target`` (subclasses pick other tiers, e.g. int16 activations)."""
        return quant_types(target)

    def export(self, source, calib, out_dir: Path, options) -> ExportedFiles:
        method = CALIBRATION_METHODS.get(options.calib_method, "?")
        if method is None or method == "?":
            raise BackendError(f"calibration method {options.calib_method!r} is not supported by onnx-qdq "
                               f"(ONNX Runtime offers: minmax, percentile, entropy)")
        if options.qat is not None and self.name == "onnx-qdq":  # QAT: QDQ from torchao PT2E (edgeq/qat.py)
            from edgeq.runtimes.onnx.adapter import ADAPTER

            return ADAPTER.export_qat(self.name, source, calib, out_dir, options)
        config: OnnxQdqConfig = self.config_of(options)
        target = str(config.target or detect_target())
        types = self.quant_types(target)
        forced = config.attention_recipe
        types["attention"] = bool(forced) if forced is not None else has_attention(source.onnx_path())
        notes: list[str] = []
        with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".qdq-pid{os.getpid()}-") as tmp:
            work = Path(tmp)
            prepped = self._preprocess(source, work, notes)  # once: both weight-bit trials quantize this graph
            float_nodes = residual_norm_nodes(prepped) + mask_nodes(prepped) if types["attention"] else []
            float_nodes += mixed_output_nodes(source, calib, prepped, notes)
            pick_bits = bool(types["reduce_range"]) and config.reduce_range is None
            if config.reduce_range is not None:
                types = {**types, "reduce_range": config.reduce_range,
                         "reason": f"reduce_range set by {self.name}.reduce_range"}
            main, types, method = self._pick_recipe(source, calib, prepped, out_dir, work, options, types, method,
                                                    float_nodes, pick_bits)
        excluded, int16 = list(config.nodes_to_exclude), list(types.get("int16_tensors") or config.int16_tensors)
        calibration = {v: k for k, v in CALIBRATION_METHODS.items() if v}.get(method, options.calib_method)
        recipe = {"format": "QDQ", "per_channel": bool(types.get("per_channel", True)), "target": target,
                  "calibration": calibration, "picked_by": str(types.get("picked_by", "")),
                  **({"executes": types["executes"]} if "executes" in types else {}),
                  "activation_type": types["activation"], "weight_type": types["weight"],
                  "reduce_range": types["reduce_range"], "nodes_to_exclude": excluded,
                  **({"quantized_ops": list(MAC_OPS)} if types.get("mac_only") else {}),
                  "attention_recipe": types["attention"], **({"int16_tensors": int16} if int16 else {})}
        granularity = "per-channel" if types.get("per_channel", True) else "per-tensor"
        notes.insert(0, f"{types['activation']}/{types['weight']} {granularity}: {types['reason']}")
        if types.get("picked_by"):
            only = f", only {'/'.join(MAC_OPS)} quantized" if types.get("mac_only") else ""
            notes.insert(1, f"{granularity} weights, {calibration} ranges{only}: {types['picked_by']}")
        if types.get("floor"):
            notes.append(str(types["floor"]))
            recipe["fidelity_floor"] = str(types["floor"])
        if types["attention"]:
            why = f"{self.name}.attention_recipe" if forced is not None else "attention graph"
            notes.insert(1, f"{why}: LayerNorm, residual Adds and attention-mask ops float, MatMul/Gemm outputs not "
                            f"re-quantized (accuracy)")
        return ExportedFiles(main=main, recipe=recipe, notes=notes)

    def _pick_recipe(self, source, calib, prepped: Path, out_dir: Path, work: Path, options, types, method: str,
                     float_nodes: list[str], pick_bits: bool) -> tuple[Path, dict[str, object], str]:
        """Per-channel or per-tensor weights, minmax or percentile activation ranges (default minmax only), all of
        ORT's quantizable ops or only the MAC ops, and on x86 without VNNI 7- or 8-bit weights: each trial quantized
        and the one closest to FP32 kept (``best_trial``). Options given in the config are not tried.

        Trials are calibrated on the first calibration samples (at most 64) and scored on the last min(16, N/4),
        which they were not calibrated on (``edgeq.runtimes._picking.trial_split``); the winner is then calibrated on
        every sample. Scored on their own calibration samples, percentile ranges and all-ops placements looked
        better than they were held out (PP-OCRv6-tiny recognition: all-ops percentile 0.963 vs MAC-only minmax 0.956
        on calibration, 0.916 vs 0.948 held out). With fewer than 16 samples the trials are scored on the samples
        that calibrated them.

        Why (bench/zoo.py, docs/zoo.md): on real models no single choice wins. MTCNN PNet's box head: per-channel
        0.983, per-tensor 0.994 worst-sample cosine; PP-OCRv5 text recognition: minmax 0.59, percentile 0.69;
        MTCNN ONet: MAC ops only 0.957 -> 0.971 (INT8/FP32 latency 0.90 -> 0.78). Weight bits (``pick_bits``):
        VPMADDUBSW may saturate with 8-bit weights (ORT's reason for ``reduce_range``), but 7-bit weights halve the
        weight resolution; MobileNetV2 loses more to saturation, ResNet-18 and BERT-mini to 7 bits (docs/recipes.md).
        """
        config: OnnxQdqConfig = self.config_of(options)
        trials = recipe_trials(config, method, options.calib_method)
        measure = len(trials) > 1 or pick_bits  # else nothing to choose: quantize once, on every sample
        split = trial_split(calib) if measure else None
        fit, held = split if split is not None else (calib, list(itertools.islice(iter(calib), SCORE_SAMPLES)))
        scorer = OutputScorer(source.onnx_path(), held, [s.name for s in source.inputs])

        def score(trial: Trial, reduce: bool) -> tuple[float, float, float]:
            path = work / trial.file_name(reduce)
            self._quantize(source, fit, prepped, path, work, options, trial.types(types, reduce), trial.method,
                           float_nodes)
            return scorer(path)

        reduce = bool(types["reduce_range"])
        scores = {trial: score(trial, reduce) for trial in trials} if measure else {}
        chosen_trial = best_trial(scores) if scores else trials[0]
        where = f"{len(held)} held-back calibration samples" if split is not None else "calibration samples"
        chosen = chosen_trial.types(types, reduce)
        if len(trials) > 1:
            shown = ", ".join(f"{trial.label} {worst:.4f}/{pooled:.4f}" for trial, (worst, _, pooled) in scores.items())
            chosen["picked_by"] = f"closest to FP32 on {where} (worst-sample/pooled cosine: {shown})"
        bits: dict[bool, tuple[float, float, float]] = {}
        if pick_bits:  # the chosen trial again with 8-bit weights
            bits = {True: scores[chosen_trial], False: score(chosen_trial, False)}
            reduce = bits[True][:2] >= bits[False][:2]  # worst sample first, then the mean
            chosen = {**chosen_trial.types(chosen, reduce), "reason": (
                f"x86 without VNNI: {'7' if reduce else '8'}-bit weights measured closer to FP32 on {where} "
                f"(cosine min/mean {bits[True][0]:.5f}/{bits[True][1]:.5f} with 7-bit, {bits[False][0]:.5f}/"
                f"{bits[False][1]:.5f} with 8-bit; 8-bit may saturate VPMADDUBSW)")}
        plain = bits[reduce] if pick_bits else scores.get(chosen_trial)
        if split is not None and floor_applies(held) and plain is not None and config.fidelity_floor \
                and types["activation"] in EIGHT_BIT \
                and not (config.int16_tensors or config.nodes_to_exclude):
            options, chosen = self._floor(source, fit, prepped, work, options, chosen, chosen_trial, reduce,
                                          float_nodes, scorer, plain)
        final = out_dir / "model.onnx"
        if scores and split is None:  # the trial was calibrated on every sample: it is the artifact
            return save_onnx(load_full(work / chosen_trial.file_name(reduce)), final), chosen, chosen_trial.method
        return (self._quantize(source, calib, prepped, final, work, options, chosen, chosen_trial.method, float_nodes),
                chosen, chosen_trial.method)

    def _floor(self, source, fit, prepped: Path, work: Path, options, chosen: dict[str, object], trial: Trial,
               reduce: bool, float_nodes: list[str], scorer: OutputScorer,
               plain: tuple[float, float, float]) -> tuple[object, dict[str, object]]:
        """Below ``fidelity_floor`` on the held-back samples: int16 activations on the tensors whose 8-bit
        quantization costs the output most (``_qdq_floor``), the top 1, 2, 4, 8 tried, the first reaching the floor
        (else the best that gains ``FLOOR_MIN_GAIN``) kept. Returns the options and types to build the artifact."""
        from edgeq.runtimes._picking import FLOOR_MIN_GAIN, RANK_SAMPLES, floor_candidates, ranked_note
        from edgeq.runtimes.onnx._qdq_floor import rank_by_damage

        config: OnnxQdqConfig = self.config_of(options)
        if plain[0] >= config.fidelity_floor:
            return options, chosen
        try:
            ranker = OutputScorer(source.onnx_path(), scorer.samples[:RANK_SAMPLES], [s.name for s in source.inputs])
            ranking, total = rank_by_damage(work / trial.file_name(reduce), ranker)
        except Exception as exc:  # noqa: BLE001 - the floor only improves; when it fails the plain model stays
            return options, {**chosen, "floor": f"fidelity floor {config.fidelity_floor}: ranking failed "
                                                f"({failure_reason(exc, 160)}); plain model kept"}
        helpful = [tensor for tensor, damage in ranking if damage > 0]

        def build(count: int) -> tuple[tuple[float, float, float], list[str]]:
            candidate = with_option(options, self.name, int16_tensors=helpful[:count])
            return scorer(self._quantize(source, fit, prepped, work / f"floor-{count}.onnx", work, candidate, chosen,
                                         trial.method, float_nodes)), helpful[:count]

        candidates, failed = floor_candidates(len(helpful), build, config.fidelity_floor, "int16")
        tried = {count: score for count, (score, _) in candidates.items()}
        best = max(tried, key=lambda k: tried[k][:2], default=None)
        shown = ", ".join(f"{k} int16 {v[0]:.4f}/{v[2]:.4f}" for k, v in tried.items()) + failed
        reached = ranked_note(len(ranking), total, "activations")
        if best is None or not (tried[best][0] >= plain[0] + FLOOR_MIN_GAIN or tried[best][2] >= plain[2] + FLOOR_MIN_GAIN):
            note = (f"fidelity floor {config.fidelity_floor}: {plain[0]:.4f}/{plain[2]:.4f} held back, no int16 "
                    f"candidate gained ({shown or 'no tensor helped'}; {reached})")
            return options, {**chosen, "floor": note}
        tensors = helpful[:best]
        note = (f"fidelity floor {config.fidelity_floor}: worst-sample/pooled cosine {plain[0]:.4f}/{plain[2]:.4f} "
                f"held back -> {tried[best][0]:.4f}/{tried[best][2]:.4f} with int16 activations on {', '.join(tensors)} "
                f"(the tensors whose 8-bit quantization alone cost the output most, {reached}; tried: {shown})")
        return with_option(options, self.name, int16_tensors=tensors), {**chosen, "floor": note,
                                                                          "int16_tensors": tensors}

    @staticmethod
    def _preprocess(source, work: Path, notes: list[str]) -> Path:
        """ORT's ``quant_pre_process`` (symbolic shape inference, graph optimizations such as Conv+BN folding)."""
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepped = (work / "preprocessed.onnx").resolve()
        fp32 = str(Path(source.onnx_path()).resolve())  # a path, not a loaded proto: ORT's shape inference re-saves
        # protos with external data into its own temp dir and then fails to find it ("… stored in …/foo.bin")
        with _inside(prepped.parent):  # ORT leaves sym_shape_infer_temp.onnx + <uuid>.data in the working directory
            try:
                quant_pre_process(fp32, str(prepped))
            except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs; retry without
                notes.append(f"symbolic shape inference skipped ({type(exc).__name__})")
                quant_pre_process(fp32, str(prepped), skip_symbolic_shape=True)
        return prepped

    @classmethod
    def _quantize(cls, source, calib, prepped: Path, out: Path, work: Path, options, types, method: str,
                  float_nodes: list[str]) -> Path:
        """``quantize_static`` of the pre-processed graph to ``out``; ``float_nodes`` stay float (attention recipe)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        config: OnnxQdqConfig = cls.config_of(options)
        extra = {"ActivationSymmetric": False, "WeightSymmetric": True,
                 "CalibStridedMinMax": calibration_stride(prepped, len(calib))}
        if method == "Percentile":
            extra["CalibPercentile"] = config.percentile
        excluded = list(config.nodes_to_exclude)
        excluded += [name for name in dict.fromkeys(float_nodes) if name not in excluded]
        if types.get("attention"):
            extra["OpTypesToExcludeOutputQuantization"] = ["MatMul", "Gemm"]
        int16 = list(config.int16_tensors)  # accuracy control's int16 tier
        if int16:
            extra["TensorQuantOverrides"] = {t: [{"quant_type": QuantType.QInt16}] for t in int16}
        quantized = work / "quantized.onnx"
        for _attempt in range(MAX_REPAIRS + 1):
            quantize_static(
                str(prepped), str(quantized), _Reader(calib, [s.name for s in source.inputs]),
                quant_format=QuantFormat.QDQ, per_channel=bool(types.get("per_channel", True)),
                reduce_range=bool(types["reduce_range"]),
                activation_type=getattr(QuantType, str(types["activation"])),
                weight_type=getattr(QuantType, str(types["weight"])),
                calibrate_method=getattr(CalibrationMethod, method), nodes_to_exclude=excluded or None,
                op_types_to_quantize=list(MAC_OPS) if types.get("mac_only") else None, extra_options=extra,
            )
            model = load_full(quantized)
            problem, culprits = invalid_graph(model)
            if problem is None:
                return save_onnx(model, out)
            if not culprits or set(culprits) <= set(excluded):
                break
            excluded += [name for name in culprits if name not in excluded]  # those nodes stay float; try again
        raise BackendError(f"ONNX Runtime's quantizer wrote an invalid graph, refused before writing: {problem}")
