"""Inputs as users have them (issue 16): .hdf5 Keras files, SavedModels saved with their optimizer, NHWC .npy for
NCHW models, token-id inputs, wrapped .pt checkpoints, invalid QDQ graphs caught before writing, and the label-free
``--min-fidelity`` floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models import TOKEN_MODEL, write_model

from edgeq.calibration.datasets import fit_sample
from edgeq.cli import main
from edgeq.errors import CalibrationError, EdgeqError
from edgeq.manifest import Manifest
from edgeq.metrics import match_outputs, worst_fidelity_per_output
from edgeq.types import TensorSpec

SAVED_WITH_OPTIMIZER = '''
import tensorflow as tf


class Regressor(tf.Module):
    def __init__(self):
        self.w = tf.Variable(tf.random.stateless_normal([4, 3], seed=[1, 2]), name="w")
        self.b = tf.Variable(tf.zeros([3]), name="b")
        self.optimizer = tf.compat.v1.train.AdamOptimizer(0.01)  # its slot variables go into the SavedModel

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")], autograph=False)
    def serve(self, x):
        return {"y": tf.nn.relu(tf.matmul(x, self.w) + self.b), "z": tf.reduce_sum(x, axis=1, keepdims=True)}


def save(path):
    model = Regressor()
    model.optimizer.minimize(lambda: tf.reduce_sum(model.serve(tf.ones([2, 4]))["y"] ** 2), var_list=[model.w])
    tf.saved_model.save(model, path, signatures={"serving_default": model.serve})
'''


@pytest.fixture(scope="module")
def saved_with_optimizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    import importlib.util

    root = tmp_path_factory.mktemp("sm")
    (root / "make.py").write_text(SAVED_WITH_OPTIMIZER)
    spec = importlib.util.spec_from_file_location("make_sm", root / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.save(str(root / "model"))
    return root / "model"


def test_savedmodel_saved_with_optimizer_loads_its_serving_signature(saved_with_optimizer: Path) -> None:
    import tensorflow as tf

    with pytest.raises(AttributeError, match="add_slot"):  # what TF's own loader (and TFLiteConverter) do with it
        tf.saved_model.load(str(saved_with_optimizer))
    from edgeq.models import load_model

    source = load_model(saved_with_optimizer, None, ["x=1x4"])
    x = np.arange(4, dtype=np.float32)[None] / 4
    outputs = dict(zip(source.output_names, source.reference({"x": x})))
    assert sorted(outputs) == ["y", "z"]
    np.testing.assert_allclose(outputs["z"], [[1.5]], rtol=1e-6)
    source.close()


def test_savedmodel_with_optimizer_exports_int8_without_extra_inputs(saved_with_optimizer: Path,
                                                                     tmp_path: Path) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).normal(size=(48, 4)).astype(np.float32))
    out = tmp_path / "out"
    assert main(["export", str(saved_with_optimizer), "--calib", str(calib), "--input-shape", "x=1x4",
                 "-b", "onnx-qdq", "-b", "openvino-int8", "--out", str(out)]) == 0
    manifest = Manifest.read(out / "model" / "manifest.json")
    for artifact in manifest.artifacts:
        assert artifact.status == "ok", artifact.error
        assert [t.name for t in artifact.inputs] == ["x"]  # no variable handle became an input
        assert artifact.verification.cosine_min > 0.99


def test_hdf5_keras_file_is_a_keras_model(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from edgeq.models import load_model

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    model = keras.Model(image, [keras.layers.Dense(2, name="box")(features),
                                keras.layers.Dense(3, activation="softmax", name="cls")(features)])
    model.save(str(tmp_path / "emotion_model.h5"))
    path = (tmp_path / "emotion_model.h5").rename(tmp_path / "emotion_model.hdf5")
    source = load_model(path)
    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    got = source.reference({source.inputs[0].name: x})
    for expected, actual in zip(model(x), got):
        np.testing.assert_allclose(np.asarray(expected), actual, rtol=1e-5, atol=1e-6)
    assert source.layout == "NHWC" and len(got) == 2


def test_npy_images_in_the_other_layout_are_transposed() -> None:
    nchw = TensorSpec("x", (1, 3, 16, 8))
    nhwc_sample = np.random.default_rng(0).random((16, 8, 3)).astype(np.float32)
    got = fit_sample(nhwc_sample, nchw, "calib.npy sample 0")
    assert got.shape == (1, 3, 16, 8)
    np.testing.assert_array_equal(got[0], nhwc_sample.transpose(2, 0, 1))
    nhwc = TensorSpec("image", (1, 16, 8, 3))
    assert fit_sample(np.zeros((1, 3, 16, 8), np.float64), nhwc, "s").shape == (1, 16, 8, 3)


def test_npy_shapes_that_fit_no_layout_and_integer_pixels_fail_in_one_line() -> None:
    with pytest.raises(CalibrationError, match=r"expects shape \[1, 3, 16, 16\]"):
        fit_sample(np.zeros((3, 8, 8), np.float32), TensorSpec("x", (1, 3, 16, 16)), "s")
    with pytest.raises(CalibrationError, match=r"expects dtype float32, got uint8 \(convert and scale"):
        fit_sample(np.zeros((3, 16, 16), np.uint8), TensorSpec("x", (1, 3, 16, 16)), "s")


def test_token_id_inputs_are_int64_and_wrapped_checkpoints_load(tmp_path: Path) -> None:
    import torch

    from edgeq.models import load_model

    write_model(tmp_path, TOKEN_MODEL, "encoder.py")
    spec = f"{tmp_path / 'encoder.py'}:Encoder"
    fresh = load_model(spec, None, ["input_ids=1x6", "attention_mask=1x6"])
    assert [s.dtype for s in fresh.inputs] == ["int64", "int64"]  # float zeros cannot index the embedding
    assert fresh.output_names == ["output_0", "output_1"]
    state = {f"module.{k}": v for k, v in fresh.module.state_dict().items()}  # saved from DataParallel, wrapped
    torch.save({"model": state, "epoch": 3}, tmp_path / "ckpt.pt")
    loaded = load_model(spec, tmp_path / "ckpt.pt", ["input_ids=1x6", "attention_mask=1x6"])
    feeds = {"input_ids": np.arange(6, dtype=np.int64)[None], "attention_mask": np.ones((1, 6), np.int64)}
    for a, b in zip(fresh.reference(feeds), loaded.reference(feeds)):
        np.testing.assert_array_equal(a, b)


def test_invalid_qdq_graph_is_named_before_writing() -> None:
    import onnx
    from onnx import TensorProto, helper

    from edgeq.runtimes.onnx.onnx_qdq import invalid_graph

    graph = helper.make_graph(
        [helper.make_node("Concat", ["a", "b"], ["c"], axis=0, name="concat_bad")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 2, 2, 1])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    problem, culprits = invalid_graph(model)
    assert problem is not None and "rank" in problem.lower()
    assert culprits == ["concat_bad"]
    ok = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["a"], ["c"], name="r")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])]), opset_imports=[helper.make_opsetid("", 17)])
    ok.ir_version = 8
    onnx.checker.check_model(ok)
    assert invalid_graph(ok) == (None, [])


def test_worst_fidelity_matches_reordered_outputs() -> None:
    ref = [[np.ones((1, 4)), np.arange(10.0).reshape(1, 10)], [np.full((1, 4), 2.0), np.ones((1, 10))]]
    got = [[np.arange(10.0).reshape(10), np.ones(4)], [np.ones(10), -np.full(4, 2.0)]]  # reordered, flattened
    assert match_outputs(ref[0], got[0])[1].shape == (1, 10)
    worst = worst_fidelity_per_output(ref, got)
    assert worst[0] < -0.98 and worst[1] == pytest.approx(1.0)  # floored cosine: -(16 - δ²)/(16 + δ²), δ² = 0.1


def test_min_fidelity_floor_drives_the_layer_fallback(tiny_model_file: Path, tiny_calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["export", f"{tiny_model_file}:TinyCNN", "--calib", str(tiny_calib), "--calib-samples", "32",
                 "--holdout-samples", "16", "-b", "onnx-qdq", "--min-fidelity", "0.99999", "--out", str(out)])
    manifest = Manifest.read(out / "tinycnn" / "manifest.json")
    assert manifest.evaluation is not None and manifest.evaluation.metric == "fidelity"
    control = manifest.artifacts[0].accuracy_control
    assert control is not None and control.budget == pytest.approx(1e-5)
    assert control.drop_before > control.budget  # plain PTQ is below a 0.99999 floor on this model
    assert control.attempts and control.drop_after <= control.drop_before
    assert code == (0 if control.met else 3)


def test_min_fidelity_options_are_checked_in_one_line(tiny_model_file: Path, tiny_calib: Path,
                                                      tmp_path: Path) -> None:
    from edgeq.export.context import ExportRequest
    from edgeq.export.control import check_eval_request

    with pytest.raises(EdgeqError, match=r"--min-fidelity must be in \(0, 1\]"):
        check_eval_request(ExportRequest(model="m", calib="c", backends=["onnx-qdq"], out=tmp_path, min_fidelity=1.5))
    with pytest.raises(EdgeqError, match="give one budget"):
        check_eval_request(ExportRequest(model="m", calib="c", backends=["onnx-qdq"], out=tmp_path, min_fidelity=0.99,
                                         max_drop=0.01, eval_spec="e.npz"))
    with pytest.raises(EdgeqError, match="without --eval"):  # a floor silently ignored next to --eval: refused
        check_eval_request(ExportRequest(model="m", calib="c", backends=["onnx-qdq"], out=tmp_path, min_fidelity=0.99,
                                         eval_spec="e.npz"))
