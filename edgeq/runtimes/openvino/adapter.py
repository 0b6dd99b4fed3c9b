"""OpenVINO's ``RuntimeAdapter``: QAT through the QDQ ONNX of onnx-qdq, accuracy control by NNCF's own
``quantize_with_accuracy_control`` (it ranks quantizers by the metric and reverts the worst), explain over the
runtime model the CPU plugin compiled."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.runtimes.adapter import AdapterBase, Attempt, ControlPlan, ControlRequest, LayerGroup
from edgeq.runtimes.base import ExportedFiles
from edgeq.types import ExportOptions, Feeds, MetricControl


def openvino_float_tier() -> str:
    """The precision the OpenVINO CPU plugin computes float layers in on this host (bf16 / f16 / f32)."""
    try:
        import openvino as ov

        return str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")).replace("<Type: '", "").rstrip("'>")
    except Exception:  # noqa: BLE001 - informative only
        return "float"


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


def nncf_request(request: ControlRequest) -> MetricControl:
    """openvino-int8's ``ExportOptions.metric_control``: the eval items and NNCF's validation function (the compiled
    model's outputs scored by ``request.score``; NNCF maximizes it)."""

    def validate(compiled: Any, items: Any) -> tuple[float, None]:
        indices, outputs = [], []
        for index, feeds in items:
            indices.append(index)
            outputs.append([np.asarray(v) for v in compiled(feeds).to_tuple()])
        return request.score(indices, outputs), None

    drop_type = "relative" if request.drop_type == "relative" else "absolute"
    return MetricControl(items=list(enumerate(request.samples)), validate=validate, max_drop=request.max_drop,
                         drop_type=drop_type)


class OpenvinoAdapter(AdapterBase):
    runtime = "openvino"
    artifact_suffix = ".xml"
    package = "openvino"
    qat_backends = frozenset({"openvino-int8"})
    controlled_backends = frozenset({"openvino-int8"})

    def export_qat(self, backend: str, source: Any, calib: Any, out_dir: Path, options: ExportOptions
                   ) -> ExportedFiles:
        from edgeq.runtimes.openvino._qat import export_openvino_int8

        return export_openvino_int8(source, calib, out_dir, options)

    def control_plan(self, backend: str, source: Any, calib: Any, plain: ExportedFiles, options: ExportOptions,
                     request: ControlRequest, tiered: bool) -> ControlPlan:
        """One rebuild with NNCF's accuracy control; the layers it returned to float are read by comparing the
        plain and the controlled IR, and run at the CPU plugin's inference precision (``--fallback`` either way)."""

        def attempts(_groups: list[LayerGroup]) -> Any:
            attempt = Attempt(replace(options, metric_control=nncf_request(request)), {})

            def settle(before: ExportedFiles, after: ExportedFiles) -> None:
                floated = sorted(quantized_ov_layers(before.main) - quantized_ov_layers(after.main))
                attempt.record["layers_to_float"] = attempt.layers_to_float = floated
                attempt.layer_tiers = dict.fromkeys(floated, openvino_float_tier()) if floated else {}

            attempt.settle = settle
            yield attempt

        return ControlPlan("nncf.quantize_with_accuracy_control (ranks quantizers by metric, reverts the worst)",
                           list, attempts)

    def explain(self, path: Path, feeds: list[Feeds] | None) -> Any:
        from edgeq.runtimes.openvino._explain import explain_openvino

        return explain_openvino(path, feeds)

    def has_attention(self, graph: Any) -> bool:
        from edgeq.runtimes.openvino._openvino import graph_kind

        return graph_kind(graph)[0] == "transformer"


ADAPTER = OpenvinoAdapter()
