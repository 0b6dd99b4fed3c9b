"""TensorFlow / Keras input (.keras, .h5, SavedModel) to every backend: ONNX (tf2onnx), OpenVINO, TFLite
(tf.lite.TFLiteConverter) — and the Keras digits twin of the bundled example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.cli import main
from edgeq.manifest import Manifest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

REPO = Path(__file__).resolve().parents[1]
ALL = ["onnx-fp32", "onnx-fp16", "onnx-qdq", "openvino-fp32", "openvino-fp16", "openvino-int8",
       "tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8"]
INT8 = ["onnx-qdq", "openvino-int8", "tflite-int8"]


def tiny_keras(dynamic: bool = False):  # -> keras.Model
    """Conv+BN+ReLU ×2, global pool, dense: the Keras (NHWC) counterpart of conftest's TinyCNN."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 3) if dynamic else (16, 16, 3), name="image")
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(image)))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(32, 3, strides=2, padding="same")(x)))
    return keras.Model(image, layers.Dense(10, name="scores")(layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_keras().save(str(path))
    return path


@pytest.fixture(scope="module")
def nhwc_calib(tiny_calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's 64 smooth images, channels-last (N, 16, 16, 3)."""
    path = tmp_path_factory.mktemp("calib") / "tiny_nhwc.npy"
    np.save(path, np.load(tiny_calib).transpose(0, 2, 3, 1).copy())
    return path


@pytest.fixture(scope="module")
def exported(keras_file: Path, nhwc_calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out")
    args = ["export", str(keras_file), "--calib", str(nhwc_calib), "--calib-samples", "32", "--out", str(out)]
    for name in ALL:
        args += ["-b", name]
    assert main(args) == 0
    return out / "tiny"


def test_every_backend_exports_and_verifies(exported: Path) -> None:
    manifest = Manifest.read(exported / "manifest.json")
    assert manifest.model.framework == "keras" and manifest.model.layout == "NHWC"
    assert manifest.model.inputs[0].shape == [1, 16, 16, 3]
    assert manifest.model.outputs[0].name == "scores"
    arts = {a.backend: a for a in manifest.artifacts}
    for name in ALL:
        assert arts[name].status == "ok", f"{name}: {arts[name].error}"
        assert arts[name].layout == "NHWC"
        assert arts[name].inputs[0].shape == [1, 16, 16, 3]
    for name in ("onnx-fp32", "openvino-fp32", "tflite-fp32"):
        assert arts[name].verification.max_abs_error < 1e-4, name
    for name in ("onnx-fp16", "openvino-fp16", "tflite-fp16"):
        assert arts[name].verification.cosine_min > 0.999, name
    for name in [*INT8, "tflite-dynamic"]:
        assert arts[name].verification.cosine_min > 0.98, name
    assert arts["tflite-fp32"].recipe["route"] == "tf.lite.TFLiteConverter"
    assert arts["openvino-int8"].recipe["route"] == "keras"
    assert arts["openvino-fp32"].outputs[0].name == "scores"
    fp32 = arts["tflite-fp32"].size_bytes
    assert 0.4 < arts["tflite-fp16"].size_bytes / fp32 < 0.7
    assert arts["tflite-int8"].size_bytes / fp32 < 0.5


def test_tflite_int8_is_full_integer_with_int8_io_recorded(exported: Path) -> None:
    from edgeq.explain import explain

    art = Manifest.read(exported / "manifest.json").artifact("tflite-int8")
    assert art.recipe["io"] == "int8"
    assert art.inputs[0].dtype == "int8" and art.inputs[0].quantization.scale > 0
    assert art.outputs[0].dtype == "int8" and art.outputs[0].quantization.scale > 0
    heavy = explain(exported / art.path).heavy_ops
    assert heavy and all(op.precision == "int8" for op in heavy)


def test_tflite_int8_with_float_io(keras_file: Path, nhwc_calib: Path, tmp_path: Path) -> None:
    from edgeq.explain import explain

    assert main(["export", str(keras_file), "--calib", str(nhwc_calib), "--calib-samples", "32", "-b", "tflite-int8",
                 "--tflite-io", "float", "--out", str(tmp_path)]) == 0
    art = Manifest.read(tmp_path / "tiny" / "manifest.json").artifact("tflite-int8")
    assert art.status == "ok", art.error
    assert art.recipe["io"] == "float"
    assert art.inputs[0].dtype == "float32" and art.outputs[0].dtype == "float32"
    assert art.verification.cosine_min > 0.98
    heavy = explain(tmp_path / "tiny" / art.path).heavy_ops
    assert heavy and all(op.precision == "int8" for op in heavy)


def test_saved_model_and_h5_inputs(keras_file: Path, nhwc_calib: Path, tmp_path: Path) -> None:
    """A SavedModel with a dynamic batch (Keras ``model.export``) reaches all three runtimes; a legacy .h5 loads."""
    import keras

    model = keras.saving.load_model(str(keras_file))
    saved = tmp_path / "tiny_saved"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    h5 = tmp_path / "tiny_h5.h5"
    model.save(str(h5))
    runs = ((saved, "tiny_saved", ["onnx-fp32", "openvino-fp32", "tflite-int8"]), (h5, "tiny_h5", ["onnx-fp32"]))
    for path, name, backends in runs:
        args = ["export", str(path), "--calib", str(nhwc_calib), "--calib-samples", "16", "--out", str(tmp_path / "out")]
        assert main(args + [f"--backend={b}" for b in backends]) == 0
        manifest = Manifest.read(tmp_path / "out" / name / "manifest.json")
        assert manifest.model.layout == "NHWC" and manifest.model.inputs[0].shape == [1, 16, 16, 3]
        assert sorted(a.backend for a in manifest.artifacts) == sorted(backends)
        for art in manifest.artifacts:
            assert art.status == "ok", f"{name} {art.backend}: {art.error}"
            assert art.verification.cosine_min > (0.98 if art.precision == "int8" else 0.9999)


def test_two_head_model_keeps_output_order(nhwc_calib: Path, tmp_path: Path) -> None:
    """TFLiteConverter orders outputs by tensor index (this model came out swapped); every artifact must list
    them as the Keras model returns them."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 3), name="image")
    features = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, padding="same", activation="relu")(image))
    path = tmp_path / "twohead.keras"
    keras.Model(image, [layers.Dense(4, name="zbox")(features), layers.Dense(10, name="acls")(features)]).save(str(path))
    backends = ["onnx-fp32", "openvino-fp32", "tflite-fp32", "tflite-int8"]
    assert main(["export", str(path), "--calib", str(nhwc_calib), "--calib-samples", "16", "--out", str(tmp_path),
                 *[f"--backend={b}" for b in backends]]) == 0
    manifest = Manifest.read(tmp_path / "twohead" / "manifest.json")
    assert [(o.name, o.shape) for o in manifest.model.outputs] == [("zbox", [1, 4]), ("acls", [1, 10])]
    for art in manifest.artifacts:
        assert art.status == "ok", f"{art.backend}: {art.error}"
        assert [o.shape for o in art.outputs] == [[1, 4], [1, 10]], art.backend


def test_dynamic_dims_need_input_shape(nhwc_calib: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "dyn.keras"
    tiny_keras(dynamic=True).save(str(path))
    capsys.readouterr()
    assert main(["export", str(path), "--calib", str(nhwc_calib), "-b", "onnx-fp32", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--input-shape image=" in err, err
    assert main(["export", str(path), "--calib", str(nhwc_calib), "--calib-samples", "16", "-b", "onnx-fp32",
                 "--input-shape", "image=1x16x16x3", "--out", str(tmp_path)]) == 0
    art = Manifest.read(tmp_path / "dyn" / "manifest.json").artifact("onnx-fp32")
    assert art.status == "ok" and art.inputs[0].shape == [1, 16, 16, 3]


@pytest.mark.parametrize(("suffix", "content"), [(".keras", b"not a zip"), (".keras", b"PK\x03\x04 truncated zip"),
                                               (".h5", b"not HDF5")])
def test_corrupt_keras_file_is_one_line(suffix: str, content: bytes, nhwc_calib: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(content)
    capsys.readouterr()
    assert main(["export", str(bad), "--calib", str(nhwc_calib), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "not a readable" in err and bad.name in err, err
    assert not (tmp_path / "o" / "broken").exists()


def test_digits_twin_matches_the_pytorch_example() -> None:
    torch = pytest.importorskip("torch")
    from edgeq.examples import digits, digits_keras

    x, labels = digits.load_digits_split("eval")
    with torch.no_grad():
        reference = digits.load_pretrained()(torch.from_numpy(x)).numpy()
    twin = digits_keras.load_pretrained()(x.transpose(0, 2, 3, 1), training=False).numpy()
    assert np.abs(twin - reference).max() < 1e-4
    assert (twin.argmax(1) == reference.argmax(1)).all()
    assert (twin.argmax(1) == labels).mean() > 0.97


@pytest.mark.slow
def test_digits_twin_every_backend_int8_agrees_with_fp32(tmp_path: Path) -> None:
    """Acceptance: the Keras digits twin → all 10 backends; every INT8 artifact agrees with FP32 top-1 on ≥ 99 %
    of the held-out digits (the whole eval split, 300 samples)."""
    from edgeq.examples.digits_keras import save

    model = save(tmp_path / "digits_keras.keras")
    assert main(["export", str(model), "--calib", f"{REPO}/calibration/digits.yaml", "--holdout-samples", "300",
                 "-b", "all", "--out", str(tmp_path / "out")]) == 0
    manifest = Manifest.read(tmp_path / "out" / "digits_keras" / "manifest.json")
    assert manifest.model.layout == "NHWC" and manifest.calibration.holdout_source == "sklearn-digits:eval"
    arts = {a.backend: a for a in manifest.artifacts}
    assert set(ALL) <= set(arts)
    for name in ALL:
        assert arts[name].status == "ok", f"{name}: {arts[name].error}"
        assert arts[name].verification.samples == 300
    for name in INT8:
        assert arts[name].verification.top1_agreement >= 0.99, name


def test_tflite_int8_recipe_search_floats_the_wide_tensor(tmp_path: Path) -> None:
    """Keras sources get the onnx2tf route's recipe search: a conv output with one channel at ~400 beside three at
    ~1 (read by a 1x1 conv that ignores the wide one) loses the three under one int8 scale; the search leaves the
    worst-ranked ops float and the artifact holds."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 3), name="image")
    wide = layers.Conv2D(4, 3, padding="same", name="wide")
    narrow = layers.Conv2D(4, 1, use_bias=False, name="narrow")
    model = keras.Model(image, narrow(wide(image)))
    kernel, bias = wide.get_weights()
    wide.set_weights([kernel, np.array([400.0, 0.0, 0.0, 0.0], np.float32)])
    weights = narrow.get_weights()[0]
    weights[:, :, 0, :] = 0.0
    narrow.set_weights([weights])
    path = tmp_path / "wide.keras"
    model.save(str(path))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((32, 8, 8, 3)).astype(np.float32))
    assert main(["export", str(path), "--calib", str(calib), "-b", "tflite-int8", "--out", str(tmp_path / "out")]) == 0
    art = Manifest.read(tmp_path / "out" / "wide" / "manifest.json").artifact("tflite-int8")
    assert art.status == "ok", art.error
    search = art.recipe["recipe_search"]
    assert search["tried"][0]["worst_cosine"] < 0.95 and search["chosen_float_tensors"], search
    assert art.verification.cosine_min > 0.99
