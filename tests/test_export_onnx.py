"""`edgeq export` to ONNX FP32/FP16/QDQ from PyTorch and ONNX inputs, verification and the manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeq.cli import main
from edgeq.manifest import Manifest


def _export(args: list[str]) -> int:
    return main(["export", *args])


def test_tiny_torch_to_onnx_fp32_fp16_qdq(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    code = _export([f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "32",
                    "-b", "onnx-fp32", "-b", "onnx-fp16", "-b", "onnx-qdq", "--out", str(tmp_path)])
    assert code == 0
    model_dir = tmp_path / "tinycnn"
    manifest = Manifest.read(model_dir / "manifest.json")
    assert [a.backend for a in manifest.artifacts] == ["onnx-fp32", "onnx-fp16", "onnx-qdq"]
    assert manifest.calibration is not None and manifest.calibration.samples == 32
    assert manifest.calibration.holdout_samples == 32  # the 32 samples not used for calibration
    for art in manifest.artifacts:
        assert art.status == "ok", art.error
        assert (model_dir / art.path).is_file()
        assert art.size_bytes == sum((model_dir / art.backend / f.path).stat().st_size for f in art.files)
        assert art.verification is not None and art.verification.samples == 32
    fp32, fp16, qdq = manifest.artifacts
    assert fp32.verification.max_abs_error < 1e-4
    assert fp16.verification.cosine_min > 0.999
    assert qdq.verification.cosine_min > 0.98
    assert qdq.recipe["format"] == "QDQ" and isinstance(qdq.recipe["per_channel"], bool)
    assert "per-channel minmax" in qdq.recipe["picked_by"] and "per-tensor percentile" in qdq.recipe["picked_by"]
    assert 0.2 < fp16.size_bytes / fp32.size_bytes < 0.75
    # no temporary build directories are left behind
    assert sorted(p.name for p in model_dir.iterdir()) == ["logs", "manifest.json", "onnx-fp16", "onnx-fp32", "onnx-qdq"]


def test_manifest_round_trip_and_schema(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path, capsys) -> None:
    assert _export([f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                    "--holdout-samples", "8", "-b", "onnx-fp32", "--out", str(tmp_path)]) == 0
    path = tmp_path / "tinycnn" / "manifest.json"
    manifest = Manifest.read(path)
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest
    document = json.loads(path.read_text())
    assert document["schema_version"] == "1.2"
    verification = document["artifacts"][0]["verification"]
    assert [o["name"] for o in verification["outputs"]] == ["output"]
    assert verification["outputs"][0]["cosine_min"] == verification["cosine_min"]
    # a schema 1.0 manifest (no per-output fidelity) still reads, and its table shows the top-level numbers
    for art in document["artifacts"]:
        del art["verification"]["outputs"]
    document["schema_version"] = "1.0"
    old = Manifest.model_validate_json(json.dumps(document))
    assert old.schema_version == "1.0" and old.artifacts[0].verification.outputs == []
    assert old.artifacts[0].verification.worst() is None
    from edgeq.report.export_table import export_rows

    assert export_rows(old)[0]["cosine_min"] == f"{old.artifacts[0].verification.cosine_min:.4f}"
    assert manifest.tools["onnxruntime"] and manifest.model.framework == "torch"
    capsys.readouterr()
    assert main(["manifest-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"schema_version", "model", "artifacts", "tools", "created_at"} <= set(schema["properties"])
    verification = schema["$defs"]["Verification"]["properties"]
    assert "outputs" in verification and "outputs" not in schema["$defs"]["Verification"].get("required", [])
    assert {"name", "shape", "cosine_min", "top1_agreement"} <= set(schema["$defs"]["OutputFidelity"]["properties"])


def test_second_export_keeps_other_artifacts(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    args = [f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16", "--out", str(tmp_path)]
    assert _export([*args, "-b", "onnx-fp32"]) == 0
    assert _export([*args, "-b", "onnx-fp16"]) == 0
    manifest = Manifest.read(tmp_path / "tinycnn" / "manifest.json")
    assert [a.backend for a in manifest.artifacts] == ["onnx-fp32", "onnx-fp16"]


@pytest.fixture(scope="module")
def example_export(example_model: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example")
    code = _export([example_model["model"], "--weights", example_model["weights"], "--calib", example_model["calib"],
                    "-b", "onnx-fp32", "-b", "onnx-qdq", "--out", str(out)])
    assert code == 0
    return out / "digits_cnn"


def _check_example_manifest(model_dir: Path) -> None:
    manifest = Manifest.read(model_dir / "manifest.json")
    fp32, qdq = manifest.artifact("onnx-fp32"), manifest.artifact("onnx-qdq")
    assert fp32.status == qdq.status == "ok"
    assert qdq.size_bytes <= 0.30 * fp32.size_bytes, (qdq.size_bytes, fp32.size_bytes)
    assert qdq.verification.samples >= 200  # the eval split, never the calibration split
    assert qdq.verification.top1_agreement >= 0.99


def test_example_from_pytorch(example_export: Path) -> None:
    _check_example_manifest(example_export)


def test_example_from_its_onnx_export(example_export: Path, example_model: dict[str, str], tmp_path: Path) -> None:
    onnx_model = example_export / "onnx-fp32" / "model.onnx"
    assert _export([str(onnx_model), "--calib", example_model["calib"], "-b", "onnx-fp32", "-b", "onnx-qdq",
                    "--out", str(tmp_path)]) == 0
    _check_example_manifest(tmp_path / "model")


def test_int8_artifact_runs_with_only_numpy_and_onnxruntime(example_export: Path) -> None:
    code = f"""
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession({str(example_export / 'onnx-qdq' / 'model.onnx')!r}, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
out = s.run(None, {{inp.name: np.zeros(inp.shape, np.float32)}})[0]
assert out.shape == (1, 10), out.shape
heavy = {{"torch", "tensorflow", "openvino", "edgeq", "onnx"}} & set(sys.modules)
assert not heavy, heavy
"""
    subprocess.run([sys.executable, "-I", "-c", code], check=True)


def test_torch_export_program_input(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    """A `torch.export` .pt2 program is a model input too (shapes from its example inputs)."""
    import torch

    from edgeq.models import load_model

    module = load_model(f"{tiny_model_file}:TinyCNN").torch_module()
    program = torch.export.export(module, (torch.zeros(1, 3, 16, 16),))
    pt2 = tmp_path / "tiny.pt2"
    torch.export.save(program, str(pt2))
    source = load_model(pt2)
    assert [s.shape for s in source.inputs] == [(1, 3, 16, 16)]
    assert _export([str(pt2), "--calib", str(tiny_calib), "--calib-samples", "16", "-b", "onnx-qdq",
                    "--out", str(tmp_path / "out")]) == 0
    assert Manifest.read(tmp_path / "out" / "tiny" / "manifest.json").artifact("onnx-qdq").verification.cosine_min > 0.98


def _offset_model(path: Path) -> Path:
    """Conv → Relu → +400 on one channel → −400 again: an outlier channel on an element-wise output only (like the
    learnable-affine / hard-swish outputs of PP-LCNet), which one per-tensor u8 scale cannot hold."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = (np.random.default_rng(0).standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    offset = np.array([400.0, 0.0, 0.0, 0.0], np.float32).reshape(1, 4, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Add", ["r", "k"], ["shifted"]), helper.make_node("Add", ["shifted", "negk"], ["out"])]
    graph = helper.make_graph(nodes, "offset", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(offset, "k"),
                               numpy_helper.from_array(-offset, "negk")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_qdq_mac_ops_only_when_element_wise_outputs_lose(tmp_path: Path) -> None:
    """The 'MAC ops only' trial (Conv/MatMul quantized, element-wise ops float) wins by measurement when an
    element-wise output carries an outlier channel: all-ops placements score ~0.93 on calibration samples here."""
    import numpy as np
    import onnx

    model = _offset_model(tmp_path / "offset.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((40, 3, 8, 8)).astype(np.float32))
    assert _export([str(model), "--calib", str(calib), "-b", "onnx-qdq", "--out", str(tmp_path / "out")]) == 0
    art = Manifest.read(tmp_path / "out" / "offset" / "manifest.json").artifacts[0]
    assert art.status == "ok", art.error
    assert art.recipe["quantized_ops"] == ["Conv", "ConvTranspose", "MatMul", "Gemm"]
    assert "per-channel minmax 0.9" in art.recipe["picked_by"] and "MAC ops only" in art.recipe["picked_by"]
    assert art.verification.cosine_min > 0.99
    graph = onnx.load(tmp_path / "out" / "offset" / art.path).graph
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    assert "y" in quantized and "shifted" not in quantized  # the conv output is int8, the element-wise one float


def test_calibration_cosine_ignores_samples_without_signal(tmp_path: Path) -> None:
    """The trial score's worst cosine skips samples whose reference output is ~empty (a probability map of a photo
    without text): there a tiny offset decides the cosine, which would make every trial look equally bad."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeq.runtimes.onnx.onnx_qdq import calibration_cosine

    def model(path: Path, offset: float) -> Path:
        nodes = [helper.make_node("Add", ["x", "c"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                                  [numpy_helper.from_array(np.full((1, 64), offset, np.float32), "c")])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
        return path

    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 64)).astype(np.float32) * scale} for scale in (1.0, 1.0, 1.0, 1e-5)]
    worst, mean, pooled = calibration_cosine(model(tmp_path / "ref.onnx", 0.0), model(tmp_path / "q.onnx", 1e-3),
                                             samples, ["x"])
    assert worst > 0.999  # the three samples with signal
    assert mean < 0.8  # the ~empty one still counts in the mean (its cosine is ~0)
    assert pooled > 0.999


def test_best_trial_gives_way_to_pooled_cosine() -> None:
    from edgeq.runtimes.onnx.onnx_qdq import best_trial

    # (worst, mean, pooled): a 0.04-vs-0.00 worst-sample win that costs 0.5 pooled is not taken
    assert best_trial({"all-ops": (0.0, 0.5, 0.88), "mac": (0.04, 0.45, 0.30)}) == "all-ops"
    assert best_trial({"all-ops": (0.95, 0.99, 0.995), "mac": (0.98, 0.99, 0.997)}) == "mac"
    assert best_trial({"a": (0.9, 0.9, 0.9), "b": (0.9, 0.9, 0.9)}) == "a"


def _wide_conv_output_model(path: Path) -> Path:
    """Conv whose output carries one channel at ~400 beside three at ~1, read by a 1x1 Conv that ignores the wide
    channel: every placement quantizes that conv output with one u8 scale (~1.6), which erases the three small
    channels (PP-OCRv5 recognition's ``Conv.2``: -38…46 on one grid, 0.674 worst-sample cosine)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    first = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    bias = np.array([400.0, 0.0, 0.0, 0.0], np.float32)
    second = (rng.standard_normal((4, 4, 1, 1)) * 0.5).astype(np.float32)
    second[:, 0] = 0.0
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["wide"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["wide", "w2"], ["out"])]
    graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(bias, "b1"),
                               numpy_helper.from_array(second, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_fidelity_floor_raises_the_costly_activation_to_int16(tmp_path: Path) -> None:
    """Below the floor (0.99 held-back worst cosine) onnx-qdq ranks activations by the damage their Q/DQ pair alone
    does at the output and rebuilds with int16 on the top one: the wide conv output here."""
    import numpy as np
    import onnx

    model = _wide_conv_output_model(tmp_path / "wide.onnx")
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((40, 3, 8, 8)).astype(np.float32))
    assert _export([str(model), "--calib", str(calib), "-b", "onnx-qdq", "--out", str(tmp_path / "out")]) == 0
    art = Manifest.read(tmp_path / "out" / "wide" / "manifest.json").artifact("onnx-qdq")
    assert art.status == "ok", art.error
    assert art.recipe["int16_tensors"] == ["wide"], art.recipe
    assert "fidelity floor 0.99" in art.recipe["fidelity_floor"]
    assert art.verification.cosine_min > 0.99
    graph = onnx.load(tmp_path / "out" / "wide" / art.path).graph
    zero_points = {init.name: init.data_type for init in graph.initializer}
    wide_q = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "wide"]
    assert wide_q and zero_points[wide_q[0].input[2]] == onnx.TensorProto.INT16
    assert _export([str(model), "--calib", str(calib), "-b", "onnx-qdq", "-O", "onnx-qdq.fidelity_floor=0",
                    "--out", str(tmp_path / "off")]) == 0
    off = Manifest.read(tmp_path / "off" / "wide" / "manifest.json").artifact("onnx-qdq")
    assert "int16_tensors" not in off.recipe and off.verification.cosine_min < 0.95  # without it: the loss


def test_without_pairs_removes_activation_quantization(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgeq.runtimes.onnx._qdq_floor import activation_pairs, without_pairs

    model = _wide_conv_output_model(tmp_path / "wide.onnx")
    samples = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(4)]

    class Reader:
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {"x": item}

    quantize_static(str(model), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    quantized = onnx.load(tmp_path / "q.onnx")
    assert activation_pairs(quantized) == ["x", "wide"]  # the graph output's pair is not a candidate
    edited = without_pairs(quantized, {"wide"})
    count = sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)
    assert sum(n.op_type == "QuantizeLinear" for n in edited.graph.node) == count - 1
    assert count == sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node)  # the input is left unchanged
    run = {name: ort.InferenceSession(m, providers=["CPUExecutionProvider"])
           for name, m in (("fp32", str(model)), ("q", str(tmp_path / "q.onnx")), ("edited", edited.SerializeToString()))}
    outs = {name: s.run(None, {"x": samples[0]})[0] for name, s in run.items()}
    assert np.abs(outs["edited"] - outs["fp32"]).max() < 0.2 * np.abs(outs["q"] - outs["fp32"]).max()
