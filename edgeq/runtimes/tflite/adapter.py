"""LiteRT's ``RuntimeAdapter``: QAT with litert-torch's quantizer, accuracy control by ranking PT2E activations
(modules left unannotated) or, for the onnx2tf route, TFLite's QuantizationDebugger (ops left float by the
converter), explain over the interpreter's tensor types."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.runtimes.adapter import (
    AdapterBase,
    Attempt,
    ControlPlan,
    ControlRequest,
    LayerGroup,
    float_attempt,
    sqnr_ranking,
    with_option,
)
from edgeq.runtimes.base import ExportedFiles
from edgeq.types import ExportOptions, Feeds


def rank_pt2e(source: Any, calib: Any, feeds: list[Feeds], narrow_convs_float: bool = False) -> list[LayerGroup]:
    """Quantized activations of PT2E's converted reference graph (quantize → dequantize pairs run in torch), worst
    median per-channel SQNR first.

    Uses the graph preparation, quantizer and calibration of tflite-int8 (``convert_int8``); groups are module paths
    (or ``node:<name>`` for ops of the top-level module).
    """
    import torch

    from edgeq.runtimes.tflite._tflite import calibrated_graph, quiet
    from edgeq.runtimes.tflite._tflite_floor import pair_layers, quantized_pairs

    with quiet(), torch.no_grad():  # the same graph (and node names) as convert_int8
        graph = calibrated_graph(source, calib, "tflite-int8", narrow_convs_float=narrow_convs_float, float_io=True)[0]
        pairs = quantized_pairs(graph)  # (quantize node input, dequantize node) per activation
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
    return sqnr_ranking([(pre.name, values[pre], values[dq],
                          pair_layers((pre, dq))) for pre, dq in pairs if values[pre]])


def rank_onnx2tf(source: Any, calib: Any) -> list[LayerGroup]:
    """The ranking for tflite-int8 built by the onnx2tf route: TFLite's QuantizationDebugger compares every quantized
    op with its float version on the calibration samples (``edgeq/tools/onnx2tf_convert.py --rank``); each group
    is an op's output tensor and the outputs of its consumers (TFLite tensor names, what the converter's selective
    quantization takes)."""
    from edgeq.runtimes.tflite._tflite_onnx2tf import run_tool

    with tempfile.TemporaryDirectory() as tmp:
        report = run_tool(source, calib, Path(tmp) / "unused.tflite", "int8", "float", rank=True)
    return [LayerGroup(entry["tensor"], round(entry["sqnr_db"], 2),
                       list(dict.fromkeys([entry["tensor"], *entry.get("consumers", [])])))
            for entry in report["ranked"]]


def _onnx2tf_built(plain: ExportedFiles) -> bool:
    return str(plain.recipe.get("route", "")).startswith("onnx2tf")


class TfliteAdapter(AdapterBase):
    runtime = "tflite"
    artifact_suffix = ".tflite"
    package = "tflite"
    qat_backends = frozenset({"tflite-int8"})
    controlled_backends = frozenset({"tflite-int8"})

    def export_qat(self, backend: str, source: Any, calib: Any, out_dir: Path, options: ExportOptions
                   ) -> ExportedFiles:
        from edgeq.runtimes.tflite._qat import export_qat

        return export_qat(source, calib, out_dir, options, backend)

    def rank_layers(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, feeds: list[Feeds],
                    options: ExportOptions) -> list[LayerGroup]:
        if _onnx2tf_built(plain):
            return rank_onnx2tf(source, calib)
        return rank_pt2e(source, calib, feeds, options.tflite_narrow_convs == "float")

    def control_plan(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, options: ExportOptions,
                     request: ControlRequest, tiered: bool) -> ControlPlan:
        """litert-torch PT2E has no per-layer int16: a sensitive layer goes straight to fp32 (``tiered`` or not).
        The rebuilds go through the route the plain artifact was built by."""
        if _onnx2tf_built(plain):
            method = ("median per-channel SQNR of each TFLite op's output (TFLite QuantizationDebugger, onnx2tf "
                      "route); those ops and their consumers left float by the converter")
            # the ops the route's recipe search left float stay float (edgeq/tools/tflite_recipe.py)
            key, rebuild = "float_nodes", with_option(options, backend, route="onnx2tf",
                                                      float_nodes=list(plain.recipe.get("float_tensors") or []))
        else:
            method = "median per-channel SQNR of each PT2E activation; modules left unannotated (float)"
            key = "exclude_modules"
            rebuild = with_option(options, backend, route="litert-torch") if source.framework == "onnx" else options

        def move(tier: str, top: list[LayerGroup]) -> Attempt:
            return float_attempt(rebuild, backend, key, tier, top)

        return self.ranked_plan(method, ("fp32",), move, backend, source, calib, plain, options, request)

    def explain(self, path: Path, feeds: list[Feeds] | None) -> Any:
        from edgeq.runtimes.tflite._explain import explain_tflite

        return explain_tflite(path, feeds)

    def has_attention(self, graph: Any) -> bool:
        from edgeq.runtimes.tflite._tflite import attention_evidence

        return attention_evidence(graph).attention


ADAPTER = TfliteAdapter()
