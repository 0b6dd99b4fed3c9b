"""QAT for openvino-int8: the QAT-trained QDQ ONNX of onnx-qdq (``edgeq.runtimes.onnx._qat``, one training for
both), read by OpenVINO's ONNX frontend as FakeQuantize ops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.errors import BackendError
from edgeq.runtimes.base import ExportedFiles
from edgeq.runtimes.onnx._qat import qdq_onnx
from edgeq.runtimes.openvino._openvino import _fix_inputs, _name_outputs, op_counts, save_ir


def export_openvino_int8(source: Any, calib: Any, out_dir: Path, options: Any) -> ExportedFiles:
    """openvino-int8 with ``--qat``: OpenVINO's ONNX frontend reads the QAT QDQ graph as FakeQuantize ops."""
    import openvino as ov

    path, qdq_recipe = qdq_onnx(source, calib, options)
    model = ov.convert_model(str(path))
    _fix_inputs(model, source)
    _name_outputs(model, source.output_names)
    fake_quantize = op_counts(model)["FakeQuantize"]
    if fake_quantize == 0:
        raise BackendError(f"OpenVINO found no quantized ops in the QAT graph of {source.name}")
    main = save_ir(model, out_dir, compress_to_fp16=False)
    recipe = {"route": "QAT QDQ ONNX -> openvino.convert_model", "quantizer": qdq_recipe["quantizer"],
              "weights": "int8 symmetric per-channel", "activations": qdq_recipe["activation_type"],
              "reduce_range": qdq_recipe["reduce_range"], "fake_quantize_ops": fake_quantize,
              "qat": qdq_recipe["qat"]}
    return ExportedFiles(main=main, recipe=recipe,
                         notes=[f"QAT {options.qat.epochs} epoch(s); {fake_quantize} FakeQuantize ops from QDQ"])
