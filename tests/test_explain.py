"""`edgeq explain`: names the heavy ops that do not run in INT8; says all run in INT8 on a healthy artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeq.backends.options import validate_configs
from edgeq.cli import main
from edgeq.explain import explain
from edgeq.models import load_model
from edgeq.runtimes.onnx.onnx_fp32 import OnnxFp32
from edgeq.runtimes.onnx.onnx_qdq import OnnxQdq
from edgeq.types import ExportOptions


@pytest.fixture(scope="module")
def artifacts(tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = load_model(f"{tiny_model_file}:TinyCNN")
    rng = np.random.default_rng(0)
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    root = tmp_path_factory.mktemp("explain")
    for name, backend, extra in [("onnx-fp32", OnnxFp32, {}), ("onnx-qdq", OnnxQdq, {}),
                                 ("excluded/onnx-qdq", OnnxQdq, {"nodes_to_exclude": ["node_Conv_18"]})]:
        out = root / name
        out.mkdir(parents=True)
        backend().export(source, calib, out, ExportOptions(configs=validate_configs({backend.name: extra})))
    (root / "excluded" / "onnx-fp32").symlink_to(root / "onnx-fp32")
    return root


def test_healthy_qdq_all_heavy_ops_int8(artifacts: Path) -> None:
    result = explain(artifacts / "onnx-qdq" / "model.onnx", None)
    assert [op.precision for op in result.heavy_ops] == ["int8", "int8", "int8"]
    assert result.verdict.startswith("all 3 heavy ops run in INT8")


def test_excluded_conv_is_named(artifacts: Path, capsys) -> None:
    result = explain(artifacts / "excluded" / "onnx-qdq" / "model.onnx", None)
    floats = [op for op in result.heavy_ops if op.precision != "int8"]
    assert [op.name for op in floats] == ["node_Conv_18"]
    assert "1 of 3 heavy ops run in float (FusedConv): float weights" in result.verdict
    assert main(["explain", str(artifacts / "excluded" / "onnx-qdq"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(op["name"] == "node_Conv_18" and op["precision"] == "fp32" for op in data["heavy_ops"])


def test_layer_sqnr_against_fp32_sibling(artifacts: Path) -> None:
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    sqnr = explain(artifacts / "onnx-qdq" / "model.onnx", feeds).layer_sqnr_db
    assert "output" in sqnr and 15 < sqnr["output"] < 80
    excluded = explain(artifacts / "excluded" / "onnx-qdq" / "model.onnx", feeds).layer_sqnr_db
    assert excluded  # matched against the FP32 model found beside it


def test_float_artifact_verdict(artifacts: Path) -> None:
    assert explain(artifacts / "onnx-fp32" / "model.onnx", None).verdict == "float artifact: all 3 heavy ops run in FP32"
