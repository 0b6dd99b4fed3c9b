"""A tiny export directory for bench tests: an FP32 ONNX classifier and its INT8 QDQ twin (quantized by ORT's
``quantize_static``), laid out as ``edgeq export`` does (OUT/<model>/<backend>/model.onnx + manifest.json)."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np

INPUT_SHAPE = (1, 3, 8, 8)
CLASSES = 5


def _fp32_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "conv_w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((CLASSES, 8)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT_SHAPE))],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


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
    from edgeq.manifest import Artifact, Manifest, ModelInfo, TensorInfo
    from edgeq.pipeline import combined_sha256, file_entries

    model_dir = root / model_name
    fp32 = model_dir / "onnx-fp32" / "model.onnx"
    _fp32_model(fp32)
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
