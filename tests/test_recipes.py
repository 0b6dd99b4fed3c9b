"""Recipe choices tuned with bench/peers.py (docs/recipes.md): onnx-qdq's measured 7/8-bit weight choice on x86
without VNNI and its attention recipe (float residual stream and mask path); openvino-int8's transformer recipe
(symmetric activations, no SmoothQuant)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models import RECIPE_MODELS, write_model

from edgeq.backends import get_backend
from edgeq.backends.options import validate_configs
from edgeq.errors import ConfigError
from edgeq.models import load_model
from edgeq.types import ExportOptions


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("recipe_models"), RECIPE_MODELS, "small.py")


def _samples(shape: tuple[int, ...], name: str, count: int = 8) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def _export(backend: str, source, calib, out: Path, **config):
    out.mkdir(parents=True, exist_ok=True)
    return get_backend(backend)().export(source, calib, out, ExportOptions(configs=validate_configs({backend: config})))


def test_onnx_qdq_avx2_picks_weight_bits_by_measured_fidelity(model_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from edgeq.runtimes.onnx.onnx_qdq import calibration_cosine

    source = load_model(f"{model_file}:SmallCnn")
    calib = _samples((1, 3, 16, 16), "image")
    files = _export("onnx-qdq", source, calib, tmp_path / "auto", target="x86-avx2")
    recipe, reason = files.recipe, files.notes[0]
    assert recipe["activation_type"] == "QUInt8" and recipe["weight_type"] == "QInt8"
    assert "cosine" in reason and "7-bit" in reason and "8-bit" in reason, reason
    chosen = calibration_cosine(source.onnx_path(), files.main, calib, ["image"])
    forced = _export("onnx-qdq", source, calib, tmp_path / "other", target="x86-avx2",
                     reduce_range=not recipe["reduce_range"])
    assert forced.recipe["reduce_range"] is (not recipe["reduce_range"])
    assert chosen >= calibration_cosine(source.onnx_path(), forced.main, calib, ["image"])  # (min, mean)
    vnni = _export("onnx-qdq", source, calib, tmp_path / "vnni", target="x86-vnni")
    assert vnni.recipe["reduce_range"] is False and "cosine" not in vnni.notes[0]
    source.close()


def _producer_of_input(path: Path, op_type: str) -> str:
    """Op type of the node feeding the (only) ``op_type`` node of a QDQ model."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    nodes = [node for node in graph.node if node.op_type == op_type]
    assert len(nodes) == 1, [node.op_type for node in graph.node]
    return producer[nodes[0].input[0]]


def test_onnx_qdq_attention_recipe_keeps_residual_stream_float(model_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    source = load_model(f"{model_file}:SmallAttention")
    calib = _samples((1, 8, 32), "tokens")
    default = _export("onnx-qdq", source, calib, tmp_path / "default", target="x86-vnni")
    assert default.recipe["attention_recipe"] is True and "attention graph" in default.notes[1]
    # Add → LayerNorm with no Q/DQ pair between
    assert _producer_of_input(default.main, "LayerNormalization") == "Add"
    quantized = _export("onnx-qdq", source, calib, tmp_path / "all", target="x86-vnni",
                        attention_recipe=False, quantized_ops="all")  # all ops quantized
    assert quantized.recipe["attention_recipe"] is False
    assert _producer_of_input(quantized.main, "LayerNormalization") == "DequantizeLinear"
    cnn = _export("onnx-qdq", load_model(f"{model_file}:SmallCnn"), _samples((1, 3, 16, 16), "image"), tmp_path / "cnn",
                  target="x86-vnni")
    assert cnn.recipe["attention_recipe"] is False
    source.close()


def test_onnx_qdq_keeps_the_attention_mask_path_float(model_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from edgeq.runtimes.onnx._onnx import mask_nodes

    source = load_model(f"{model_file}:SmallCausal")
    marked = mask_nodes(source.onnx_path())
    assert marked and any("oftmax" in name for name in marked), marked  # filler → masked scores → Softmax
    calib, held = _samples((1, 8, 32), "tokens", count=24)[:16], _samples((1, 8, 32), "tokens", count=24)[16:]
    errors = {}
    for recipe in (True, False):
        files = _export("onnx-qdq", source, calib, tmp_path / str(recipe), target="x86-vnni",
                        attention_recipe=recipe, quantized_ops="all")  # all ops quantized
        softmax_input = _producer_of_input(files.main, "Softmax")
        assert (softmax_input != "DequantizeLinear") is recipe, softmax_input
        session = ort.InferenceSession(str(files.main), providers=["CPUExecutionProvider"])
        errors[recipe] = max(float(np.abs(session.run(None, x)[0] - source.reference(x)[0]).max()) for x in held)
    assert errors[True] < errors[False], errors  # a quantized finfo.min mask flattens the attention
    source.close()


def _activation_ranges(xml: Path) -> list[tuple[float, float]]:
    """(input_low, input_high) of every FakeQuantize on an activation (not on a weight constant) of an IR."""
    import openvino as ov

    ranges = []
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() != "Constant":
            low, high = (op.input_value(i).get_node().get_data().ravel() for i in (1, 2))
            ranges += list(zip(low.tolist(), high.tolist()))
    return ranges


def _symmetric(low: float, high: float) -> bool:
    """NNCF's symmetric INT8 grid: [0, h] (unsigned) or [-h·128/127, h] (signed)."""
    return low == 0.0 or abs(high / -low - 127 / 128) < 1e-4


def test_openvino_transformer_recipe_symmetric_without_smooth_quant_unless_asked(model_file: Path,
                                                                                  tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    import openvino as ov

    source = load_model(f"{model_file}:SmallAttention")
    calib = _samples((1, 8, 32), "tokens")
    default = _export("openvino-int8", source, calib, tmp_path / "default")
    assert default.recipe["model_type"] == "transformer" and default.recipe["smooth_quant"] is False
    assert default.recipe["preset"] == "performance" and default.recipe["graph"] == "transformer"
    evidence = default.recipe["graph_evidence"]  # OpenVINO fuses the ONNX form's attention into one SDPA op
    assert evidence["ScaledDotProductAttention"] >= 1 or evidence["activation_MatMul"] >= 2, evidence
    from edgeq.targets.runner import openvino_config

    compiled = ov.Core().compile_model(str(default.main), "CPU", openvino_config(1, "f32"))  # pinned, any CPU
    sample = _samples((1, 8, 32), "tokens", count=9)[-1]  # not a calibration sample
    ref, got = source.reference(sample)[0].ravel(), compiled(sample)[0].ravel()
    assert float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got))) > 0.95
    ranges = _activation_ranges(default.main)
    assert ranges and all(_symmetric(*r) for r in ranges), ranges  # NNCF's TRANSFORMER default would be MIXED
    mixed = _export("openvino-int8", source, calib, tmp_path / "mixed", preset="mixed")
    assert mixed.recipe["activations"] == "int8 asymmetric per-tensor"
    assert not all(_symmetric(*r) for r in _activation_ranges(mixed.main))
    asked = _export("openvino-int8", source, calib, tmp_path / "sq", smooth_quant=True)
    assert asked.recipe["smooth_quant"] is True
    with pytest.raises(ConfigError, match=r"^configs\['openvino-int8'\]: openvino-int8.preset: Input should be 'performance' "
                                          r"or 'mixed' \(got 'fast'\)$"):
        _export("openvino-int8", source, calib, tmp_path / "bad", preset="fast")
    cnn = _export("openvino-int8", load_model(f"{model_file}:SmallCnn"), _samples((1, 3, 16, 16), "image"),
                  tmp_path / "cnn")
    assert "smooth_quant" not in cnn.recipe and cnn.recipe["model_type"] is None
    source.close()
