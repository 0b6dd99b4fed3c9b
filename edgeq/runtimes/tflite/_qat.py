"""QAT for tflite-int8 (route ``litert-torch PT2E QAT``): litert-torch's ``PT2EQuantizer`` with
``get_symmetric_quantization_config(is_per_channel=True, is_qat=True)``, trained by ``edgeq.qat`` and converted by
``litert_torch.convert`` exactly like the PTQ route (``edgeq.runtimes.tflite._tflite``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.qat import QatSettings, train_fake_quantized
from edgeq.runtimes.base import ExportedFiles
from edgeq.runtimes.tflite._tflite import litert_quantizer, lowering_errors, quiet, write_quantized

ROUTE_TFLITE = "litert-torch PT2E QAT"


def export_tflite_int8(source: Any, calib: Any, out: Path, settings: QatSettings, backend: str
                       ) -> tuple[Path, dict[str, Any]]:
    """QAT with litert-torch's quantizer, lowered to a full-integer .tflite like the PTQ route."""
    import torch
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    quantizer = litert_quantizer(is_qat=True)
    # BN is folded before training (_fold_batchnorm), so litert-torch's QAT-only conv+BN annotators have nothing
    # to match; they also fail on torch 2.13 (they pass a plain function to torch.export.export).
    quantizer.STATIC_QAT_ONLY_OPS = []
    with quiet(), lowering_errors(backend):
        graph, summary = train_fake_quantized(source, quantizer, calib, settings, ROUTE_TFLITE)
        with torch.no_grad():
            converted = convert_pt2e(graph, fold_quantize=False)
            allow_exported_model_train_eval(converted)
            converted.eval()  # litert-torch reads .training (else warns "converted in training mode")
            write_quantized(converted, source.example_inputs(), quantizer, out)
    return out, settings.recipe(ROUTE_TFLITE, summary)


def export_qat(source: Any, calib: Any, out_dir: Path, options: Any, backend: str) -> ExportedFiles:
    """tflite-int8 with ``--qat``: full integer (int8 weights, activations and I/O)."""
    from edgeq.errors import BackendError

    if options.tflite_io != "int8":
        raise BackendError("--tflite-io float is not available with --qat yet: the QAT lowering writes int8 I/O")
    main, qat = export_tflite_int8(source, calib, out_dir / "model.tflite", options.qat, backend)
    return ExportedFiles(main=main, recipe={"route": "litert-torch PT2E", "per_channel": True, "symmetric": True,
                                            "io": "int8", "layout": source.layout, "qat": qat},
                         notes=[f"QAT {options.qat.epochs} epoch(s); full integer: int8 weights, activations and I/O"])
