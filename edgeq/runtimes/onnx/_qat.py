"""QAT lowered to QDQ ONNX (route ``torchao PT2E QAT → QDQ ONNX``), for onnx-qdq and — read by OpenVINO's ONNX
frontend — openvino-int8: one training shared by both (``edgeq.qat`` trains; this module picks the quantizer and
exports). On x86 the quantizer is torchao's ``X86InductorQuantizer`` (u8 activations, s8 per-channel weights — ORT's
U8S8); on a CPU without VNNI its weights get 7 bits (ORT's ``reduce_range``, so VPMADDUBSW cannot saturate; torchao's
own ``reduce_range`` would shrink the activations instead). On ARM/other targets it is litert-torch's symmetric
quantizer (s8 activations: ORT's S8S8). The converted graph is exported by ``torch.onnx.export`` as
QuantizeLinear/DequantizeLinear pairs, which ONNX Runtime runs as is and OpenVINO's ``convert_model`` turns into
FakeQuantize ops (INT8 kernels at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.qat import QatSettings, train_fake_quantized
from edgeq.runtimes.base import ExportedFiles

ROUTE_QDQ = "torchao PT2E QAT -> torch.onnx QDQ"


def _qdq_quantizer(target: str) -> tuple[Any, dict[str, Any]]:
    """The PT2E quantizer for a CPU target and what it means for the QDQ graph (for the manifest)."""
    if target.startswith("x86"):
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )

        reduce_range = target == "x86-avx2"
        config = get_default_x86_inductor_quantization_config(is_qat=True)
        if reduce_range:  # ORT's reduce_range: 7-bit weights (torchao's own flag shrinks activations instead,
            # which starved the hard digits model of tests/test_qat.py: QAT eval top-1 0.25 vs 0.82 with 8 bits)
            import dataclasses

            config = dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=-64, quant_max=63))
        why = ("x86 without VNNI: 7-bit weights avoid VPMADDUBSW saturation" if reduce_range
               else "x86 VNNI: u8×s8 kernels")
        return X86InductorQuantizer().set_global(config), {
            "quantizer": "torchao X86InductorQuantizer", "activation_type": "QUInt8", "weight_type": "QInt8",
            "reduce_range": reduce_range, "reason": why}
    from edgeq.runtimes.tflite._tflite import litert_quantizer

    quantizer = litert_quantizer(is_qat=True)
    quantizer.STATIC_QAT_ONLY_OPS = []  # see export_tflite_int8
    return quantizer, {
        "quantizer": "litert-torch PT2EQuantizer (symmetric)", "activation_type": "QInt8", "weight_type": "QInt8",
        "reduce_range": False, "reason": "ARM/other: S8S8"}


def qdq_onnx(source: Any, calib: Any, options: Any) -> tuple[Path, dict[str, Any]]:
    """The QAT-trained QDQ ONNX for this machine's (or ``-O onnx-qdq.target``'s) CPU, trained once per
    source and shared by onnx-qdq and openvino-int8; returns the path and the recipe."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from edgeq.models.torch_model import _quiet_exporter
    from edgeq.runtimes.onnx._onnx import detect_target
    from edgeq.runtimes.tflite._tflite import quiet

    settings: QatSettings = options.qat
    from edgeq.runtimes.adapter import config_of

    target = str(config_of("onnx-qdq", options).target or detect_target())
    cache = source.__dict__.setdefault("_edgeq_qat_qdq", {})
    key = (settings, target)
    if key not in cache:
        quantizer, recipe = _qdq_quantizer(target)
        with quiet():
            graph, summary = train_fake_quantized(source, quantizer, calib, settings, ROUTE_QDQ)
        work = source.workdir / f"qat-qdq-{len(cache)}"
        work.mkdir(parents=True, exist_ok=True)
        path = work / "model.onnx"
        with torch.no_grad(), _quiet_exporter():
            converted = convert_pt2e(graph)
            torch.onnx.export(converted, source.example_inputs(), str(path), dynamo=True, opset_version=18,
                              input_names=[s.name for s in source.inputs], output_names=source.output_names,
                              verbose=False)
        recipe = {"format": "QDQ", "per_channel": True, "target": target, **recipe,
                  "qat": settings.recipe(ROUTE_QDQ, summary)}
        cache[key] = (path, recipe)
    return cache[key]


def export_onnx_qdq(source: Any, calib: Any, out_dir: Path, options: Any) -> ExportedFiles:
    """onnx-qdq with ``--qat``: the QAT QDQ ONNX, saved like every ONNX artifact."""
    from edgeq.runtimes.onnx._onnx import load_full, save_onnx

    path, recipe = qdq_onnx(source, calib, options)
    main = save_onnx(load_full(path), out_dir / "model.onnx")
    note = f"QAT {options.qat.epochs} epoch(s), {recipe['activation_type']}/{recipe['weight_type']} per-channel: " \
           f"{recipe['reason']}"
    return ExportedFiles(main=main, recipe=recipe, notes=[note])
