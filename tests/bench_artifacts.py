"""A tiny export directory for bench tests: an FP32 ONNX classifier and its INT8 QDQ twin (quantized by ORT's
``quantize_static``), laid out as ``edgeq export`` does (OUT/<model>/<backend>/model.onnx + manifest.json)."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
from models import TINY_ONNX_CLASSES, TINY_ONNX_SHAPE, tiny_classifier

INPUT_SHAPE = TINY_ONNX_SHAPE
CLASSES = TINY_ONNX_CLASSES


def _int8_model(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(1)
            self.samples = iter([{"x": rng.standard_normal(INPUT_SHAPE).astype(np.float32)} for _ in range(16)])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.samples, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def make_export_dir(root: Path, model_name: str = "tiny") -> Path:
    """Write OUT/<model>/{onnx-fp32,onnx-qdq}/model.onnx + manifest.json; returns OUT."""
    from edgeq.digest import combined_sha256
    from edgeq.export.candidate import file_entries
    from edgeq.manifest import Artifact, Manifest, ModelInfo, TensorInfo

    model_dir = root / model_name
    fp32 = model_dir / "onnx-fp32" / "model.onnx"
    tiny_classifier(fp32)
    _int8_model(fp32, model_dir / "onnx-qdq" / "model.onnx")
    inputs = [TensorInfo(name="x", shape=list(INPUT_SHAPE), dtype="float32")]
    outputs = [TensorInfo(name="logits", shape=[1, CLASSES], dtype="float32")]
    artifacts = []
    for backend, precision in (("onnx-fp32", "fp32"), ("onnx-qdq", "int8")):
        files = file_entries(model_dir / backend)
        artifacts.append(Artifact(backend=backend, runtime="onnxruntime", precision=precision, path=f"{backend}/model.onnx",
                                  files=files, size_bytes=sum(f.size_bytes for f in files),
                                  sha256=combined_sha256(files), inputs=inputs, outputs=outputs, layout="NCHW"))
    artifacts.append(Artifact(backend="openvino-int8", runtime="openvino", precision="int8", status="failed",
                              error="not exported in this test"))
    manifest = Manifest(model=ModelInfo(name=model_name, source="tiny.onnx", sha256="0" * 64, framework="onnx",
                                        inputs=inputs, outputs=outputs), artifacts=artifacts)
    manifest.write(model_dir / "manifest.json")
    return root


def fake_python(path: Path, body: str) -> Path:
    """A stand-in for the device's python: a shell script (e.g. one that kills itself with SIGSEGV)."""
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


SEGV_BODY = "kill -SEGV $$"
HANG_BODY = "exec sleep 120"
