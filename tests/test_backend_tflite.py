"""TFLite backends from a PyTorch model (litert-torch PT2E, ai-edge-quantizer), and precise refusals elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from models import RESIDUAL_STEM, TRANSFORMERS, write_model

from edgeq.cli import main
from edgeq.manifest import Manifest

pytest.importorskip("litert_torch")

TFLITE = ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"]


@pytest.fixture(scope="module")
def exported(tiny_model_file: Path, tiny_calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tflite")
    args = ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "32", "--out", str(out)]
    for name in ["onnx-fp32", *TFLITE]:
        args += ["-b", name]
    assert main(args) == 0
    return out / "tinycnn"


def test_all_tflite_backends_verify_against_fp32(exported: Path) -> None:
    manifest = Manifest.read(exported / "manifest.json")
    arts = {a.backend: a for a in manifest.artifacts}
    for name in TFLITE:
        assert arts[name].status == "ok", arts[name].error
        assert (exported / arts[name].path).suffix == ".tflite"
    assert arts["tflite-fp32"].verification.max_abs_error < 1e-4
    assert arts["tflite-fp16"].verification.cosine_min > 0.999
    assert arts["tflite-dynamic"].verification.cosine_min > 0.98
    assert arts["tflite-int8"].verification.cosine_min > 0.98
    fp32 = arts["tflite-fp32"].size_bytes
    assert 0.4 < arts["tflite-fp16"].size_bytes / fp32 < 0.65
    assert arts["tflite-int8"].size_bytes / fp32 < 0.45
    assert arts["tflite-int8"].layout == "NCHW"
    assert arts["tflite-int8"].recipe["per_channel"] is True  # a CNN: per-channel weights


def test_int8_is_full_integer_with_io_quantization_in_manifest(exported: Path) -> None:
    from edgeq.explain import explain

    art = Manifest.read(exported / "manifest.json").artifact("tflite-int8")
    assert art.inputs[0].dtype == "int8" and art.inputs[0].quantization is not None
    assert art.outputs[0].dtype == "int8" and art.outputs[0].quantization.scale > 0
    heavy = explain(exported / art.path).heavy_ops
    assert heavy and all(op.precision == "int8" for op in heavy)


def test_dynamic_keeps_float_activations(exported: Path) -> None:
    from edgeq.explain import explain

    art = Manifest.read(exported / "manifest.json").artifact("tflite-dynamic")
    assert art.inputs[0].dtype == "float32"
    assert any(op.precision != "int8" for op in explain(exported / art.path).heavy_ops)


def test_onnx_source_reaches_every_tflite_backend(exported: Path, tiny_calib: Path, tmp_path: Path) -> None:
    onnx_model = exported / "onnx-fp32" / "model.onnx"
    args = ["export", str(onnx_model), "--calib", str(tiny_calib), "--calib-samples", "16", "--out", str(tmp_path)]
    for name in TFLITE:
        args += ["-b", name]
    assert main(args) == 0
    arts = {a.backend: a for a in Manifest.read(tmp_path / "model" / "manifest.json").artifacts}
    for name in TFLITE:
        assert arts[name].status == "ok", arts[name].error
    assert arts["tflite-fp32"].verification.max_abs_error < 1e-4
    assert arts["tflite-int8"].verification.cosine_min > 0.98
    assert arts["tflite-int8"].inputs[0].dtype == "int8"


def test_op_without_tflite_lowering_refused_naming_it(tiny_calib: Path, tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Det", ["m"], ["d"]),
         helper.make_node("Identity", ["r"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16]),
              helper.make_tensor_value_info("m", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16]),
         helper.make_tensor_value_info("d", TensorProto.FLOAT, [])])
    path = tmp_path / "det.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    calib = tmp_path / "calib.npz"
    import numpy as np

    np.savez(calib, x=np.random.rand(4, 1, 3, 16, 16).astype("float32"), m=np.random.rand(4, 3, 3).astype("float32"))
    main(["export", str(path), "--calib", str(calib), "-b", "tflite-fp32", "--out", str(tmp_path / "out")])
    art = Manifest.read(tmp_path / "out" / "det" / "manifest.json").artifact("tflite-fp32")
    assert art.status == "failed" and art.error.startswith(
        "tflite-fp32: litert-torch has no TFLite lowering for aten._linalg_det.default (details: ")
    assert art.error.endswith(f"{Path('logs') / 'tflite-fp32.log'})")


def test_value_read_at_run_time_refused_naming_the_op(tiny_calib: Path, tmp_path: Path) -> None:
    """``.item()`` in the graph: litert-torch's JAX lowering cannot trace it (seen on MiniLM-L6's ONNX export)."""
    (tmp_path / "scalar.py").write_text(
        "import torch\n\n\nclass ReadsScalar(torch.nn.Module):\n    input_shape = (1, 3, 16, 16)\n\n"
        "    def forward(self, x):\n        return x * x.amax().item()\n")
    main(["export", f"{tmp_path / 'scalar.py'}:ReadsScalar", "--calib", str(tiny_calib), "--calib-samples", "4",
          "-b", "tflite-fp32", "--out", str(tmp_path / "out")])
    art = Manifest.read(tmp_path / "out" / "readsscalar" / "manifest.json").artifact("tflite-fp32")
    assert art.status == "failed"
    assert art.error.startswith("tflite-fp32: litert-torch cannot lower aten._local_scalar_dense.default: it needs a "
                                "value only known at run time"), art.error


def test_other_calibration_methods_refused(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    base = ["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8", "-b", "tflite-int8"]
    assert main([*base, "--calib-method", "entropy", "--out", str(tmp_path / "b")]) == 1
    assert "not supported by tflite-int8" in Manifest.read(tmp_path / "b" / "tinycnn" / "manifest.json").artifact("tflite-int8").error


def _ops(path: Path) -> list[tuple[str, list[str]]]:
    """(op name, input dtypes) for every op of a .tflite, in graph order."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    return [(op["op_name"], [dtypes[i] for i in op["inputs"] if i >= 0]) for op in interp._get_ops_details()]


def test_float_io_from_pytorch_keeps_int8_inside(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    from edgeq.explain import explain

    assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "16",
                 "-b", "tflite-int8", "--tflite-io", "float", "--out", str(tmp_path)]) == 0
    art = Manifest.read(tmp_path / "tinycnn" / "manifest.json").artifact("tflite-int8")
    assert art.status == "ok", art.error
    assert art.inputs[0].dtype == "float32" and art.inputs[0].quantization is None
    assert art.outputs[0].dtype == "float32" and art.outputs[0].quantization is None
    assert art.recipe["io"] == "float" and art.verification.cosine_min > 0.98
    ops = _ops(tmp_path / "tinycnn" / art.path)
    assert ops[0][0] == "QUANTIZE" and ops[-1][0] == "DEQUANTIZE"
    assert [op for op in ops if op[0] in ("QUANTIZE", "DEQUANTIZE")] == [ops[0], ops[-1]]
    heavy = explain(tmp_path / "tinycnn" / art.path).heavy_ops
    assert heavy and all(op.precision == "int8" for op in heavy)


def test_residual_add_int8_full_integer_default_and_opt_in_float_stem(tmp_path: Path) -> None:
    import numpy as np

    write_model(tmp_path, RESIDUAL_STEM, "residual.py")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((12, 3, 96, 96)).astype(np.float32))
    assert main(["export", f"{tmp_path / 'residual.py'}:ResidualStem", "--calib", str(tmp_path / "calib.npy"),
                 "--calib-samples", "8", "--holdout-samples", "4", "-b", "tflite-int8", "--tflite-narrow-convs", "float",
                 "--out", str(tmp_path / "out")]) == 0
    art = Manifest.read(tmp_path / "out" / "residualstem" / "manifest.json").artifact("tflite-int8")
    assert art.status == "ok", art.error
    ops = _ops(tmp_path / "out" / "residualstem" / art.path)
    convs = [dtypes[0] for name, dtypes in ops if name == "CONV_2D"]
    assert convs == ["float32", "int8"]  # the stem reads 3 channels: float; the block convolution: int8
    assert [dtypes for name, dtypes in ops if name == "ADD"] == [["int8", "int8"]]  # strict export annotates the add
    names = [name for name, _ in ops]
    assert names.count("DEQUANTIZE") == 1 and names[names.index("DEQUANTIZE") + 1] == "CONV_2D"  # int8 input → stem
    assert art.inputs[0].dtype == "int8" and art.outputs[0].dtype == "int8"  # int8 model I/O all the same
    assert art.verification.cosine_min > 0.98

    # the default stays full integer (what NPUs / Edge TPUs need): the stem too
    assert main(["export", f"{tmp_path / 'residual.py'}:ResidualStem", "--calib", str(tmp_path / "calib.npy"),
                 "--calib-samples", "8", "--holdout-samples", "4", "-b", "tflite-int8", "--out", str(tmp_path / "full")]) == 0
    full = Manifest.read(tmp_path / "full" / "residualstem" / "manifest.json").artifact("tflite-int8")
    full_ops = _ops(tmp_path / "full" / "residualstem" / full.path)
    assert [dtypes[0] for name, dtypes in full_ops if name == "CONV_2D"] == ["int8", "int8"]
    assert "DEQUANTIZE" not in [name for name, _ in full_ops] and full.recipe["narrow_convs"] == "int8"


def test_converter_chatter_goes_to_the_backend_log_not_the_terminal(tiny_model_file: Path, tiny_calib: Path,
                                                                     tmp_path: Path, capfd) -> None:
    assert main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "8",
                 "-b", "tflite-fp32", "--out", str(tmp_path)]) == 0
    shown = capfd.readouterr()
    assert "LiteRT-Torch Convert" not in shown.out + shown.err
    assert "tflite-fp32" in shown.out  # the export table still reaches the terminal
    assert "LiteRT-Torch Convert" in (tmp_path / "tinycnn" / "logs" / "tflite-fp32.log").read_text()


def test_transformer_encoder_layer_reaches_tflite_int8(tmp_path: Path) -> None:
    import numpy as np

    write_model(tmp_path, TRANSFORMERS, "encoder.py")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((12, 1, 8, 16)).astype(np.float32))
    assert main(["export", f"{tmp_path / 'encoder.py'}:TinyEncoder", "--calib", str(tmp_path / "calib.npy"),
                 "--calib-samples", "8", "--holdout-samples", "4", "-b", "tflite-int8", "--out", str(tmp_path)]) == 0
    art = Manifest.read(tmp_path / "tinyencoder" / "manifest.json").artifact("tflite-int8")
    assert art.status == "ok", art.error  # was: no TFLite lowering for aten._transformer_encoder_layer_fwd
    assert art.verification.cosine_min > 0.95
    assert art.recipe["per_channel"] is False  # attention graph: per-tensor weights (measured more faithful)
